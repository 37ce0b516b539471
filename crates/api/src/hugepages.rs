//! Transparent huge pages off for the length of a full compile.
//!
//! A full compile allocates a few hundred megabytes in one burst (at
//! 100,000 ports, about 270 MB of items and tables). mimalloc asks for huge
//! pages, and where the kernel leaves them to the program (`madvise` mode,
//! as here) each first touch of a 2 MB region may compact memory to find
//! one, synchronously: measured on a machine whose memory was fragmented by
//! a build, a full compile took 0.9-2.0 s with huge pages and 1.0-1.2 s
//! without (see docs/benchmarks.md). The API's steady work is the other way
//! round (about 9% faster with them), so they are off only while a compile
//! runs. The switch is process-wide: requests served meanwhile get small
//! pages too, which costs them little.

use std::sync::{Mutex, PoisonError};

/// How many guards are alive, and whether the first one turned huge pages
/// off (so the last one turns them back on).
static HOLDERS: Mutex<(usize, bool)> = Mutex::new((0, false));

/// Keeps huge pages off while it lives (and any other guard does); puts
/// back what the first guard found.
#[derive(Debug)]
pub struct Off(());

impl Off {
    pub fn new() -> Self {
        let mut h = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
        if h.0 == 0 {
            // Already off (the operator's choice): leave it so.
            h.1 = thp_was_on_and_is_now_off();
        }
        h.0 += 1;
        Off(())
    }
}

impl Default for Off {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Off {
    fn drop(&mut self) {
        let mut h = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
        h.0 = h.0.saturating_sub(1);
        if h.0 == 0 && std::mem::take(&mut h.1) {
            turn_thp_back_on();
        }
    }
}

#[cfg(target_os = "linux")]
fn thp_was_on_and_is_now_off() -> bool {
    use nix::sys::prctl::{get_thp_disable, set_thp_disable};
    matches!(get_thp_disable(), Ok(false)) && set_thp_disable(true).is_ok()
}

#[cfg(target_os = "linux")]
fn turn_thp_back_on() {
    if let Err(e) = nix::sys::prctl::set_thp_disable(false) {
        tracing::warn!(error = %e, "transparent huge pages stay off");
    }
}

#[cfg(not(target_os = "linux"))]
fn thp_was_on_and_is_now_off() -> bool {
    false
}

#[cfg(not(target_os = "linux"))]
fn turn_thp_back_on() {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Other tests in this binary start compiles (and guards) at any
    /// time, so what is checked is what holds whatever they do.
    #[test]
    fn huge_pages_are_off_while_any_guard_lives_and_back_after_the_last() {
        let Ok(before) = nix::sys::prctl::get_thp_disable() else {
            return;
        };
        let a = Off::new();
        let b = Off::new();
        assert_eq!(nix::sys::prctl::get_thp_disable(), Ok(true));
        drop(a);
        assert_eq!(nix::sys::prctl::get_thp_disable(), Ok(true));
        drop(b);
        let h = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
        if h.0 == 0 && !before {
            assert_eq!(nix::sys::prctl::get_thp_disable(), Ok(false));
        }
    }
}
