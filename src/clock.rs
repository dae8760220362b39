//! Time. Every module takes a [`Clock`]; only [`SystemClock`] reads the system time.

use chrono::{DateTime, Utc};
#[cfg(any(test, feature = "test-hooks"))]
use std::sync::Mutex;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the system time
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until told to move; for tests and for `HOLDFAST_NOW` (test
/// builds only: see [`crate::hooks`]).
#[cfg(any(test, feature = "test-hooks"))]
#[derive(Debug)]
pub struct FakeClock(Mutex<DateTime<Utc>>);

#[cfg(any(test, feature = "test-hooks"))]
impl FakeClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        FakeClock(Mutex::new(at))
    }
    pub fn advance(&self, by: chrono::Duration) {
        let mut t = self.0.lock().unwrap();
        *t += by;
    }
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap() = at;
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// Microseconds since the Unix epoch, the unit of every stored timestamp.
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default()
}

/// RFC 3339 with microseconds and `Z`, the one format holdfast writes.
pub fn fmt_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn fake_clock_moves_only_when_told() {
        let t0 = DateTime::parse_from_rfc3339("2024-05-14T09:23:11Z")
            .unwrap()
            .to_utc();
        let c = FakeClock::new(t0);
        assert_eq!(c.now(), t0);
        c.advance(chrono::Duration::days(1));
        assert_eq!(c.now(), t0 + chrono::Duration::days(1));
        assert_eq!(from_micros(micros(t0)), t0);
    }
}
