//! Standard output for the one-shot commands. `println!` panics when stdout is a pipe
//! whose reader has gone (`smimegate rules list | head -1`: Rust ignores SIGPIPE, so
//! the write fails with EPIPE). The commands print through [`outln!`] and [`out!`]
//! instead: the first failed write is remembered and later output dropped, the
//! command itself runs to its end, and `main` reports the failure, except a reader
//! that closed the pipe, which is the reader's choice and exits quietly.

use std::io::{ErrorKind, Write};
use std::sync::OnceLock;

static FAILED: OnceLock<std::io::Error> = OnceLock::new();

/// Writes to stdout unless an earlier write failed.
pub(crate) fn write(args: std::fmt::Arguments<'_>) {
    if FAILED.get().is_some() {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args) {
        let _ = FAILED.set(e);
    }
}

/// The first failed write to stdout, unless it was a reader closing the pipe.
pub fn write_error() -> Option<&'static std::io::Error> {
    FAILED.get().filter(|e| e.kind() != ErrorKind::BrokenPipe)
}

/// True when `err` is, somewhere in its chain, a write to a pipe nobody reads any more.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == ErrorKind::BrokenPipe)
    })
}

/// `println!` that does not panic on a closed stdout.
macro_rules! outln {
    () => {
        $crate::cli::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that does not panic on a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_anywhere_in_the_chain_is_recognised() {
        let err = anyhow::Error::from(std::io::Error::from(ErrorKind::BrokenPipe))
            .context("writing the signed message");
        assert!(is_broken_pipe(&err));
        let other = anyhow::Error::from(std::io::Error::from(ErrorKind::StorageFull));
        assert!(!is_broken_pipe(&other));
    }
}
