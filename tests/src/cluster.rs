//! A PostgreSQL cluster of a test's own, on a free port, for what the
//! shared server must not be changed for (TLS settings, `pg_hba.conf`).
//! Stopped and removed on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use postgres::{Client, NoTls};

/// A scratch cluster: its directory, port and binaries.
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

/// Whether commands must run as `postgres` (initdb refuses root).
fn as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn command(program: &Path, args: &[&str]) -> Command {
    let mut command = if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.args(args);
    command
}

fn run(program: &Path, args: &[&str]) {
    let output = command(program, args).output().unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    assert!(output.status.success(), "{} {args:?}: {}", program.display(), String::from_utf8_lossy(&output.stderr));
}

impl Cluster {
    /// initdb, then `files` (name, contents) written into the data directory,
    /// `conf` appended to postgresql.conf and `hba` as pg_hba.conf, started.
    /// Local socket connections are trusted, for the test's own setup.
    pub fn start(label: &str, files: &[(&str, &[u8])], conf: &str, hba: &str) -> Cluster {
        let output = Command::new("pg_config").arg("--bindir").output().expect("pg_config (PostgreSQL's server development files)");
        let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let dir = std::env::temp_dir().join(format!("tandem-cluster-{label}-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cluster directory");
        if as_root() {
            let status = Command::new("chown").args(["postgres:postgres"]).arg(&dir).status().expect("chown");
            assert!(status.success(), "chown the cluster directory to postgres");
        }
        let cluster = Cluster { dir, port, bin };
        let data = cluster.dir.join("data");
        run(&cluster.bin.join("initdb"), &["-D", &data.to_string_lossy(), "-U", "postgres", "-A", "trust", "--no-sync"]);
        for (name, contents) in files {
            let path = data.join(name);
            std::fs::write(&path, contents).expect("write a cluster file");
            if as_root() {
                Command::new("chown").args(["postgres:postgres"]).arg(&path).status().expect("chown");
            }
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
        }
        let settings = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n{conf}\n",
            cluster.dir.display()
        );
        let append = |name: &str, text: &str| {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().append(true).open(data.join(name)).expect("open a cluster file");
            file.write_all(text.as_bytes()).expect("write a cluster file");
        };
        append("postgresql.conf", &settings);
        std::fs::write(data.join("pg_hba.conf"), format!("local all all trust\n{hba}\n")).expect("pg_hba.conf");
        let log = cluster.dir.join("log");
        run(&cluster.bin.join("pg_ctl"), &["-D", &data.to_string_lossy(), "-l", &log.to_string_lossy(), "-w", "start"]);
        cluster
    }

    /// As [`Cluster::start`] (trusting TCP from this machine), with the
    /// next transaction id `before` ids short of 2^32: transactions then
    /// cross the 32-bit boundary into epoch 1, as a long-lived server's
    /// do. Every row initdb made is frozen first (rows of an older id than
    /// the oldest the reset declares would look like the future), and the
    /// commit log segment of the new id is made (pg_resetwal's own advice).
    pub fn start_near_wraparound(label: &str, before: u64) -> Cluster {
        let cluster = Cluster::start(label, &[], "", "host all all 127.0.0.1/32 trust");
        let mut admin = cluster.admin();
        admin.batch_execute("UPDATE pg_database SET datallowconn = true WHERE datname = 'template0'").expect("open template0");
        drop(admin);
        let socket = cluster.dir.to_string_lossy().into_owned();
        let port = cluster.port.to_string();
        run(&cluster.bin.join("vacuumdb"), &["-h", &socket, "-p", &port, "-U", "postgres", "--all", "--freeze", "-q"]);
        let data = cluster.dir.join("data");
        let data_dir = data.to_string_lossy().into_owned();
        run(&cluster.bin.join("pg_ctl"), &["-D", &data_dir, "-w", "stop"]);
        let next = (1u64 << 32) - before;
        let segment = data.join("pg_xact").join(format!("{:04X}", next / 1_048_576));
        std::fs::write(&segment, vec![0u8; 32 * 8192]).expect("a commit log segment");
        if as_root() {
            Command::new("chown").args(["postgres:postgres"]).arg(&segment).status().expect("chown");
        }
        let xid = next.to_string();
        run(&cluster.bin.join("pg_resetwal"), &["-x", &xid, "-u", &xid, "-D", &data_dir]);
        let log = cluster.dir.join("log").to_string_lossy().into_owned();
        run(&cluster.bin.join("pg_ctl"), &["-D", &data_dir, "-l", &log, "-w", "start"]);
        cluster
    }

    /// Crashes the server (`pg_ctl stop -m immediate`: no checkpoint, as
    /// a power cut or a killed postmaster) and starts it again.
    pub fn crash_and_restart(&self) {
        let data = self.dir.join("data").to_string_lossy().into_owned();
        run(&self.bin.join("pg_ctl"), &["-D", &data, "-m", "immediate", "-w", "stop"]);
        let log = self.dir.join("log").to_string_lossy().into_owned();
        run(&self.bin.join("pg_ctl"), &["-D", &data, "-l", &log, "-w", "start"]);
    }

    /// The URL of database `name` over TCP, as `postgres`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A superuser connection over the cluster's socket.
    pub fn admin(&self) -> Client {
        let dsn = format!("host={} port={} user=postgres dbname=postgres", self.dir.display(), self.port);
        Client::connect(&dsn, NoTls).unwrap_or_else(|e| panic!("connect to the scratch cluster: {e}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = command(&self.bin.join("pg_ctl"), &["-D", &data.to_string_lossy(), "-m", "immediate", "stop"]).output();
        // A failed test leaves the cluster (its log included) for a
        // post-mortem.
        if std::thread::panicking() {
            eprintln!("the scratch cluster is kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
