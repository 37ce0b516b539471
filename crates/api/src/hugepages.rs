//! Transparent huge pages off for the length of a full compile.
//!
//! A full compile allocates a few hundred megabytes in one burst (at
//! 100,000 ports, about 270 MB of items and tables). mimalloc asks for huge
//! pages, and where the kernel leaves them to the program (`madvise` mode,
//! as here) each first touch of a 2 MB region may compact memory to find
//! one, synchronously: measured on a machine whose memory was fragmented by
//! a build, a full compile took 1.7-1.8 s with huge pages and 1.0-1.3 s
//! without, and held 20 MB more (see docs/benchmarks.md). The API's
//! steady work is the other way round (about 9% faster with them), so they
//! are off only while a compile runs. The switch is process-wide: requests
//! served meanwhile get small pages too, which costs them little.

/// Keeps huge pages off while it lives; puts back what it found.
#[derive(Debug)]
pub struct Off {
    restore: bool,
}

impl Off {
    pub fn new() -> Self {
        #[cfg(target_os = "linux")]
        {
            use nix::sys::prctl::{get_thp_disable, set_thp_disable};
            // Already off (another compile, or the operator): leave it so.
            let restore = matches!(get_thp_disable(), Ok(false)) && set_thp_disable(true).is_ok();
            Off { restore }
        }
        #[cfg(not(target_os = "linux"))]
        Off { restore: false }
    }
}

impl Default for Off {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Off {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if self.restore
            && let Err(e) = nix::sys::prctl::set_thp_disable(false)
        {
            tracing::debug!(error = %e, "transparent huge pages stay off");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_are_off_while_the_guard_lives_and_back_after() {
        let Ok(before) = nix::sys::prctl::get_thp_disable() else {
            return;
        };
        {
            let _off = Off::new();
            assert_eq!(nix::sys::prctl::get_thp_disable(), Ok(true));
        }
        assert_eq!(nix::sys::prctl::get_thp_disable(), Ok(before));
    }
}
