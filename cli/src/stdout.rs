//! What the command prints on stdout. A reader that stops reading (`tandem
//! sync --json | head -c 100`) is no error of the command's: the command
//! ends as it would have, with its own exit status, instead of panicking
//! the way `println!` does.

use std::fmt;
use std::io::{self, Write};

/// Prints one line, like `println!`.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::stdout::line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// Writes one line to stdout. A closed stdout is left alone: the command
/// goes on to its end and exit status, as `tandem sql` does with rows
/// (`Output` in `local_cmds`); any other failure ends the process with an
/// error on stderr.
pub fn line(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {}
        Err(error) => {
            eprintln!("tandem: cannot write to standard output: {error}");
            std::process::exit(1)
        }
    }
}
