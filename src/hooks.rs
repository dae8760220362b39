//! Test hooks: a pinned clock (`HOLDFAST_NOW`), crash points (`HOLDFAST_FAILPOINT`), pause
//! points (`HOLDFAST_PAUSE`), an I/O log (`HOLDFAST_TEST_IO_LOG`), a stand-in
//! operating-system user (`HOLDFAST_TEST_OS_USER`, so that one test can play two people) and
//! data files of the old formats 1 and 2 (`HOLDFAST_TEST_DATAFILE_VERSION`).
//!
//! They exist only in builds with the `test-hooks` cargo feature, which `tests/run.sh` turns
//! on and a release build does not have: a plain binary reads none of these variables, so
//! nobody can move its clock, stop it half-way or claim another identity from the outside (a
//! test runs a plain build to show it).

// the hooks read the environment, in test builds only
#![allow(clippy::disallowed_methods)]

use crate::clock::Clock;
use std::sync::Arc;

/// Named points where a test build aborts the process (`HOLDFAST_FAILPOINT=<name>`), to
/// show that a rerun recovers. In a plain build, [`Failpoints::hit`] does nothing.
#[derive(Debug, Clone, Default)]
pub struct Failpoints {
    #[cfg(feature = "test-hooks")]
    armed: Option<Arc<str>>,
    /// `HOLDFAST_PAUSE=<point>:<file>`: at `point`, create `<file>.reached` and wait while
    /// `<file>` exists (a test interleaves two processes with it).
    #[cfg(feature = "test-hooks")]
    pause: Option<(Arc<str>, std::path::PathBuf)>,
}

impl Failpoints {
    /// No failpoint armed.
    pub fn none() -> Self {
        Failpoints::default()
    }

    /// The failpoint named by `HOLDFAST_FAILPOINT` (test builds); none otherwise.
    pub fn from_env() -> Self {
        #[cfg(feature = "test-hooks")]
        {
            let armed = std::env::var("HOLDFAST_FAILPOINT")
                .ok()
                .filter(|s| !s.is_empty())
                .map(Arc::from);
            let pause = std::env::var("HOLDFAST_PAUSE").ok().and_then(|v| {
                let (point, file) = v.split_once(':')?;
                Some((Arc::from(point), std::path::PathBuf::from(file)))
            });
            Failpoints { armed, pause }
        }
        #[cfg(not(feature = "test-hooks"))]
        Failpoints::default()
    }

    /// Aborts the process when `point` is the armed failpoint (test builds only).
    pub fn hit(&self, point: &str) {
        #[cfg(feature = "test-hooks")]
        if self.armed.as_deref() == Some(point) {
            eprintln!("failpoint {point}: aborting");
            std::process::abort();
        }
        #[cfg(feature = "test-hooks")]
        if let Some((at, file)) = &self.pause
            && at.as_ref() == point
        {
            let mut reached = file.clone().into_os_string();
            reached.push(".reached");
            let _ = std::fs::write(reached, point);
            while file.exists() {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        #[cfg(not(feature = "test-hooks"))]
        let _ = point;
    }
}

/// The clock of a command: the system clock, or in test builds the time `HOLDFAST_NOW` pins.
pub fn clock_from_env() -> Result<Arc<dyn Clock>, String> {
    #[cfg(feature = "test-hooks")]
    if let Ok(s) = std::env::var("HOLDFAST_NOW") {
        let t =
            chrono::DateTime::parse_from_rfc3339(&s).map_err(|e| format!("HOLDFAST_NOW: {e}"))?;
        return Ok(Arc::new(crate::clock::FakeClock::new(t.to_utc())));
    }
    Ok(Arc::new(crate::clock::SystemClock))
}

/// Test builds: `HOLDFAST_TEST_DATAFILE_VERSION=1` or `2` makes a batch write data files of
/// format 1 (each record sealed alone, one record dictionary for every tenant of a file) or 2
/// (one dictionary per tenant), as holdfast wrote them before format 3, so that tests show
/// every reader still reads them. Always 3 in a plain build.
pub fn data_file_version() -> u8 {
    #[cfg(feature = "test-hooks")]
    if let Ok(v) = std::env::var("HOLDFAST_TEST_DATAFILE_VERSION") {
        return v.parse().unwrap_or(3);
    }
    3
}

/// The operating-system user a test build pretends to run as (`HOLDFAST_TEST_OS_USER`);
/// always `None` in a plain build, whose identity is the kernel's (see [`crate::access`]).
pub fn os_user_override() -> Option<String> {
    #[cfg(feature = "test-hooks")]
    if let Ok(u) = std::env::var("HOLDFAST_TEST_OS_USER")
        && !u.is_empty()
    {
        return Some(u);
    }
    None
}
