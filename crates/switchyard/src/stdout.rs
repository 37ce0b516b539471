//! Writing to standard output without panicking when the reader goes away.
//!
//! `println!` panics when stdout is a closed pipe (`switchyard node list |
//! head`), because Rust ignores SIGPIPE and the write fails with `EPIPE`.
//! Restoring SIGPIPE would need `unsafe` in this crate; instead every line
//! goes through [`write`], which ends the process quietly, as a killed
//! pipeline member would, when the reader has gone, and reports any other
//! write error. Long-running commands (the server, an agent, `lab up`) call
//! [`daemon`] first: their output is informational, and a reader going away
//! must neither stop them nor skip their orderly shutdown.

use std::fmt;
use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static DAEMON: AtomicBool = AtomicBool::new(false);

/// From now on, output that cannot be written is dropped, not fatal.
pub fn daemon() {
    DAEMON.store(true, Ordering::Relaxed);
}

/// Writes `args` to stdout; a command exits when stdout is a closed pipe.
pub fn write(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if DAEMON.load(Ordering::Relaxed) {
            return;
        }
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("switchyard: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// `print!` that ends the process quietly on a closed pipe.
macro_rules! out {
    ($($t:tt)*) => { $crate::stdout::write(format_args!($($t)*)) };
}

/// `println!` that ends the process quietly on a closed pipe.
macro_rules! outln {
    () => { $crate::stdout::write(format_args!("\n")) };
    ($($t:tt)*) => { $crate::stdout::write(format_args!("{}\n", format_args!($($t)*))) };
}

pub(crate) use {out, outln};
