//! Per-key exponential back-off (upstream `flowcontrol.Backoff`): used for container restarts
//! and image pulls. Owned by whoever calls it; every method takes the current time from a
//! [`Clock`](crate::clock::Clock) so tests step time instead of sleeping. Times are wall-clock
//! because the events they are measured from (a container's `finishedAt`) are.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, SystemTime};

fn since(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The delay that applies after the last failure.
    delay: Duration,
    /// When the last failure was recorded.
    last_update: SystemTime,
}

/// Exponential back-off per key: `initial`, doubling, capped at `max`; an entry idle for
/// `2 * max` is forgotten (upstream resets after that long without a failure).
#[derive(Debug)]
pub struct Backoff<K> {
    initial: Duration,
    max: Duration,
    entries: HashMap<K, Entry>,
}

impl<K: Eq + Hash + Clone> Backoff<K> {
    /// A back-off starting at `initial` and doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    /// Records a failure that happened at `event`, growing the delay for `key`.
    pub fn next(&mut self, key: &K, event: SystemTime) {
        let now = event;
        let initial = self.initial;
        let max = self.max;
        let entry = self.entries.entry(key.clone()).or_insert(Entry {
            delay: Duration::ZERO,
            last_update: now,
        });
        if entry.delay.is_zero() || since(now, entry.last_update) > 2 * max {
            entry.delay = initial;
        } else {
            entry.delay = (entry.delay * 2).min(max);
        }
        entry.last_update = now;
    }

    /// True while `key` must wait: less than its delay has passed since `event` (upstream
    /// `IsInBackOffSince`). An entry idle for longer than `2 * max` no longer holds anything back.
    pub fn is_in_backoff_since(&self, key: &K, event: SystemTime, now: SystemTime) -> bool {
        self.entries.get(key).is_some_and(|e| {
            since(now, e.last_update) <= 2 * self.max && since(now, event) < e.delay
        })
    }

    /// True while less than `key`'s delay has passed since its last failure (upstream
    /// `IsInBackOffSinceUpdate`, the image pull back-off). An entry idle for longer than
    /// `2 * max` no longer holds anything back.
    pub fn is_in_backoff_since_update(&self, key: &K, now: SystemTime) -> bool {
        self.entries.get(key).is_some_and(|e| {
            let idle = since(now, e.last_update);
            idle <= 2 * self.max && idle < e.delay
        })
    }

    /// The current delay for `key` (zero when it has none).
    pub fn delay(&self, key: &K) -> Duration {
        self.entries.get(key).map_or(Duration::ZERO, |e| e.delay)
    }

    /// Forgets `key`.
    pub fn reset(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Drops entries idle for longer than `2 * max`.
    pub fn gc(&mut self, now: SystemTime) {
        let max = self.max;
        self.entries
            .retain(|_, e| since(now, e.last_update) <= 2 * max);
    }

    /// Drops every entry whose key fails `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.entries.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, FakeClock};

    #[test]
    fn doubles_caps_and_resets_after_idle() {
        let clock = FakeClock::new();
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(300));
        let k = "pod/app".to_string();
        assert!(!b.is_in_backoff_since(&k, clock.wall(), clock.wall()));
        for secs in [10, 20, 40, 80, 160, 300, 300] {
            let failed_at = clock.wall();
            b.next(&k, failed_at);
            assert_eq!(b.delay(&k), Duration::from_secs(secs));
            assert!(b.is_in_backoff_since(&k, failed_at, clock.wall()));
            clock.step(Duration::from_secs(secs) - Duration::from_millis(1));
            assert!(b.is_in_backoff_since(&k, failed_at, clock.wall()));
            clock.step(Duration::from_millis(1));
            assert!(!b.is_in_backoff_since(&k, failed_at, clock.wall()));
        }
        clock.step(Duration::from_secs(601));
        b.next(&k, clock.wall());
        assert_eq!(b.delay(&k), Duration::from_secs(10));
        clock.step(Duration::from_secs(601));
        b.gc(clock.wall());
        assert_eq!(b.delay(&k), Duration::ZERO);
    }

    #[test]
    fn back_off_since_update_ends_with_the_delay_after_the_last_failure() {
        let clock = FakeClock::new();
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(300));
        let k = "pod/image".to_string();
        assert!(!b.is_in_backoff_since_update(&k, clock.wall()));
        b.next(&k, clock.wall());
        clock.step(Duration::from_secs(9));
        assert!(b.is_in_backoff_since_update(&k, clock.wall()));
        clock.step(Duration::from_secs(1));
        assert!(
            !b.is_in_backoff_since_update(&k, clock.wall()),
            "retried 10 s after the failure"
        );
        b.next(&k, clock.wall());
        clock.step(Duration::from_secs(19));
        assert!(b.is_in_backoff_since_update(&k, clock.wall()));
        clock.step(Duration::from_secs(1));
        assert!(!b.is_in_backoff_since_update(&k, clock.wall()));
    }
}
