//! Time as a seam: every timer, back-off and deadline in the kubelet reads a [`Clock`], so
//! tests drive time with [`FakeClock::step`] instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

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
    fn unix_nanos_round_trips() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        assert_eq!(from_unix_nanos(unix_nanos(t)), t);
        assert_eq!(from_unix_nanos(-5), SystemTime::UNIX_EPOCH);
    }
}
