//! Exponential back-off, the one rule every retry in the kubelet follows: a first delay,
//! doubling after each further failure, capped. [`Exponential`] is one sequence (a retry
//! loop: registration, lease renewal, the pod and service watches, waiting for the runtime);
//! [`Backoff`] keeps one per key (upstream `flowcontrol.Backoff`: container restarts and
//! image pulls). The keyed one takes the current time from the caller, a
//! [`Clock`](crate::clock::Clock) reading, so tests step time instead of sleeping; its times
//! are wall-clock because the events they are measured from (a container's `finishedAt`) are.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, SystemTime};

/// One back-off sequence: [`next_delay`](Exponential::next_delay) gives `initial` after the first
/// failure, then twice the previous delay, never more than `max`; [`reset`](Exponential::reset)
/// after a success starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exponential {
    initial: Duration,
    max: Duration,
    /// The delay after the last failure; zero before the first.
    current: Duration,
}

impl Exponential {
    /// A sequence starting at `initial` and doubling up to `max`.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Exponential {
            initial,
            max,
            current: Duration::ZERO,
        }
    }

    /// Records a failure and returns the delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.current = if self.current.is_zero() {
            self.initial
        } else {
            self.current.saturating_mul(2).min(self.max)
        };
        self.current
    }

    /// The delay after the last failure (zero when there was none since the last reset).
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.current = Duration::ZERO;
    }
}

fn since(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The delay that applies after the last failure.
    delay: Exponential,
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
        let (initial, max) = (self.initial, self.max);
        let entry = self.entries.entry(key.clone()).or_insert(Entry {
            delay: Exponential::new(initial, max),
            last_update: event,
        });
        if since(event, entry.last_update) > 2 * max {
            entry.delay.reset();
        }
        entry.delay.next_delay();
        entry.last_update = event;
    }

    /// True while `key` must wait: less than its delay has passed since `event` (upstream
    /// `IsInBackOffSince`). An entry idle for longer than `2 * max` no longer holds anything back.
    pub fn is_in_backoff_since(&self, key: &K, event: SystemTime, now: SystemTime) -> bool {
        self.entries.get(key).is_some_and(|e| {
            since(now, e.last_update) <= 2 * self.max && since(now, event) < e.delay.current()
        })
    }

    /// True while less than `key`'s delay has passed since its last failure (upstream
    /// `IsInBackOffSinceUpdate`, the image pull back-off). An entry idle for longer than
    /// `2 * max` no longer holds anything back.
    pub fn is_in_backoff_since_update(&self, key: &K, now: SystemTime) -> bool {
        self.entries.get(key).is_some_and(|e| {
            let idle = since(now, e.last_update);
            idle <= 2 * self.max && idle < e.delay.current()
        })
    }

    /// The current delay for `key` (zero when it has none).
    pub fn delay(&self, key: &K) -> Duration {
        self.entries
            .get(key)
            .map_or(Duration::ZERO, |e| e.delay.current())
    }

    /// How many keys have an entry.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key has an entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
    fn a_sequence_doubles_to_its_cap_and_starts_over_after_a_reset() {
        let mut b = Exponential::new(Duration::from_millis(200), Duration::from_secs(7));
        assert_eq!(b.current(), Duration::ZERO);
        let waits: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 6400, 7000, 7000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(200));
        let mut huge = Exponential::new(Duration::MAX - Duration::from_secs(1), Duration::MAX);
        huge.next_delay();
        assert_eq!(
            huge.next_delay(),
            Duration::MAX,
            "saturates instead of overflowing"
        );
    }

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
