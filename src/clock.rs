//! Time as a seam: every timer, back-off and deadline in the kubelet reads a [`Clock`], so
//! tests drive time with [`FakeClock::step`] instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of monotonic and wall-clock time.
pub trait Clock: Send + Sync {
    /// Monotonic time, for deadlines and back-off.
    fn now(&self) -> Instant;
    /// Wall-clock time, for timestamps shown to users.
    fn wall(&self) -> SystemTime;
}

/// The machine's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when a test steps it.
#[derive(Debug)]
pub struct FakeClock {
    /// Both clocks are derived from fixed origins plus this offset, so `step` moves them together.
    offset_nanos: AtomicU64,
    origin: Instant,
    wall_origin: SystemTime,
}

impl FakeClock {
    /// A fake clock frozen at the current instant.
    pub fn new() -> Self {
        FakeClock {
            offset_nanos: AtomicU64::new(0),
            origin: Instant::now(),
            wall_origin: SystemTime::now(),
        }
    }

    /// Moves time forward by `d`.
    pub fn step(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
    }

    fn offset(&self) -> Duration {
        Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.origin + self.offset()
    }
    fn wall(&self) -> SystemTime {
        self.wall_origin + self.offset()
    }
}

/// Nanoseconds since the Unix epoch for a wall-clock time (CRI timestamps use this unit).
pub fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The wall-clock time for nanoseconds since the Unix epoch (0 or negative → the epoch).
pub fn from_unix_nanos(nanos: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `t` in UTC as `YYYY-MM-DD-HH-MM-SS`, the stamp in the names of rotated certificate files.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}-{:02}-{:02}-{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_stepped() {
        let clock = FakeClock::new();
        let (a, w) = (clock.now(), clock.wall());
        assert_eq!(clock.now(), a);
        clock.step(Duration::from_secs(3));
        assert_eq!(clock.now() - a, Duration::from_secs(3));
        assert_eq!(
            clock.wall().duration_since(w).ok(),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn civil_dates_round_trip_and_stamp() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        for days in [-800_000, -1, 0, 59, 19_782, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
        }
        let t = UNIX_EPOCH + Duration::from_secs(1_764_817_445);
        assert_eq!(utc_stamp(t), "2025-12-04-03-04-05");
    }

    #[test]
    fn unix_nanos_round_trips() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        assert_eq!(from_unix_nanos(unix_nanos(t)), t);
        assert_eq!(from_unix_nanos(-5), SystemTime::UNIX_EPOCH);
    }
}
