//! What `/proc/<pid>/stat` says of a process: its parent and the CPU time
//! it used, for the benchmarks that charge CPU to the server and the
//! gateway.

/// The fields of a process's stat line after its command name.
pub struct ProcessStat {
    fields: Vec<String>,
}

impl ProcessStat {
    /// `None` when the process cannot be read (gone, another host's).
    pub fn read(pid: u32) -> Option<ProcessStat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name is in parentheses and may hold spaces.
        let fields = stat.rsplit_once(')')?.1.split_whitespace().map(str::to_string).collect();
        Some(ProcessStat { fields })
    }

    /// Field `n` of the line as proc(5) numbers them (1 is the pid).
    fn field(&self, n: usize) -> Option<f64> {
        self.fields.get(n.checked_sub(3)?).and_then(|f| f.parse().ok())
    }

    pub fn parent(&self) -> Option<u32> {
        self.fields.get(1).and_then(|f| f.parse().ok())
    }

    /// User and system CPU seconds, with those of its children that ended
    /// when `children`.
    pub fn cpu_seconds(&self, children: bool) -> Option<f64> {
        let mut ticks = self.field(14)? + self.field(15)?;
        if children {
            ticks += self.field(16)? + self.field(17)?;
        }
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Some(ticks / per_second)
    }
}

/// A process's CPU seconds so far (see [`ProcessStat::cpu_seconds`]).
pub fn cpu_seconds(pid: u32, children: bool) -> Option<f64> {
    ProcessStat::read(pid)?.cpu_seconds(children)
}
