//! Client-side rate limiting of API requests: a token bucket holding up to `burst` tokens,
//! refilled at `qps` tokens a second (kubelet flags `--kube-api-qps` / `--kube-api-burst`,
//! defaults 50 and 100). Every thread that sends a request calls [`RateLimiter::acquire`]
//! first; it blocks that thread, never the others.
//!
//! A waiter reserves its token up front (the bucket may go negative) and then sleeps without
//! holding the lock, so waiters are served in arrival order and no lock is held while asleep.
//! Time comes from a [`Clock`] and sleeping goes through a [`Sleeper`], so tests step a
//! `FakeClock` instead of sleeping.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::{Clock, RealClock};

/// Default `kubeAPIQPS` of the kubelet.
pub const DEFAULT_QPS: f32 = 50.0;
/// Default `kubeAPIBurst` of the kubelet.
pub const DEFAULT_BURST: u32 = 100;

/// How a waiting thread passes time. The real one calls `std::thread::sleep`; a test one steps
/// a fake clock.
pub trait Sleeper: Send + Sync {
    /// Blocks the calling thread for `d`.
    fn sleep(&self, d: Duration);
}

/// Sleeps with `std::thread::sleep`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadSleeper;

impl Sleeper for ThreadSleeper {
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A token bucket shared by all threads of one API client.
pub struct RateLimiter {
    /// Tokens added per second; `None` when limiting is off (qps ≤ 0 or not finite).
    qps: Option<f64>,
    /// Bucket size: how many requests may go out at once after a quiet spell.
    burst: f64,
    clock: Arc<dyn Clock>,
    sleeper: Arc<dyn Sleeper>,
    bucket: Mutex<Bucket>,
}

/// The mutable part, behind the mutex.
struct Bucket {
    /// Tokens available; negative while threads wait on reserved tokens.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("qps", &self.qps)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter on the real clock. `qps` ≤ 0 turns limiting off; `burst` 0 counts as 1.
    /// The bucket starts full.
    pub fn new(qps: f32, burst: u32) -> Self {
        Self::with_clock(qps, burst, Arc::new(RealClock), Arc::new(ThreadSleeper))
    }

    /// A limiter on the given clock and sleeper (tests pass a `FakeClock` and a sleeper that
    /// steps it).
    pub fn with_clock(
        qps: f32,
        burst: u32,
        clock: Arc<dyn Clock>,
        sleeper: Arc<dyn Sleeper>,
    ) -> Self {
        let qps = (qps.is_finite() && qps > 0.0).then_some(f64::from(qps));
        let burst = f64::from(burst.max(1));
        let now = clock.now();
        RateLimiter {
            qps,
            burst,
            clock,
            sleeper,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                updated: now,
            }),
        }
    }

    /// Takes one token, blocking the calling thread until one is available. Returns how long
    /// it waited (zero when a token was at hand).
    pub fn acquire(&self) -> Duration {
        let wait = self.reserve();
        if !wait.is_zero() {
            log::trace!("rate limiter: waiting {wait:?} for a token");
            self.sleeper.sleep(wait);
        }
        wait
    }

    /// Takes a token only if one is available now.
    pub fn try_acquire(&self) -> bool {
        let Some(qps) = self.qps else {
            return true;
        };
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        self.refill(&mut bucket, qps);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Reserves a token and returns how long the caller must wait before using it.
    fn reserve(&self) -> Duration {
        let Some(qps) = self.qps else {
            return Duration::ZERO;
        };
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        self.refill(&mut bucket, qps);
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / qps)
        }
    }

    /// Adds the tokens earned since the last update, up to `burst`.
    fn refill(&self, bucket: &mut Bucket, qps: f64) {
        let now = self.clock.now();
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * qps).min(self.burst);
        bucket.updated = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    /// Steps the fake clock instead of sleeping, and records each wait.
    struct StepSleeper {
        clock: Arc<FakeClock>,
        waits: Mutex<Vec<Duration>>,
    }

    impl Sleeper for StepSleeper {
        fn sleep(&self, d: Duration) {
            self.waits.lock().unwrap().push(d);
            self.clock.step(d);
        }
    }

    fn limiter(qps: f32, burst: u32) -> (RateLimiter, Arc<FakeClock>, Arc<StepSleeper>) {
        let clock = Arc::new(FakeClock::new());
        let sleeper = Arc::new(StepSleeper {
            clock: clock.clone(),
            waits: Mutex::new(Vec::new()),
        });
        let l = RateLimiter::with_clock(qps, burst, clock.clone(), sleeper.clone());
        (l, clock, sleeper)
    }

    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < Duration::from_micros(10)
    }

    #[test]
    fn burst_goes_out_at_once_then_paced_at_qps() {
        let (l, _clock, sleeper) = limiter(10.0, 3);
        for _ in 0..3 {
            assert_eq!(l.acquire(), Duration::ZERO);
        }
        // The fourth waits one token interval; the fifth another (the clock moved on).
        assert!(close(l.acquire(), Duration::from_millis(100)));
        assert!(close(l.acquire(), Duration::from_millis(100)));
        assert_eq!(sleeper.waits.lock().unwrap().len(), 2);
    }

    #[test]
    fn bucket_refills_up_to_burst_only() {
        let (l, clock, _) = limiter(2.0, 2);
        assert!(l.try_acquire());
        assert!(l.try_acquire());
        assert!(!l.try_acquire());
        clock.step(Duration::from_millis(500));
        assert!(l.try_acquire());
        assert!(!l.try_acquire());
        clock.step(Duration::from_secs(60));
        assert!(l.try_acquire());
        assert!(l.try_acquire());
        assert!(!l.try_acquire());
    }

    #[test]
    fn concurrent_waiters_reserve_in_turn() {
        // Without a sleeper that steps time, reservations stack up: the n-th waiter past the
        // burst is told to wait n intervals.
        struct NoSleep;
        impl Sleeper for NoSleep {
            fn sleep(&self, _d: Duration) {}
        }
        let clock = Arc::new(FakeClock::new());
        let l = RateLimiter::with_clock(4.0, 1, clock, Arc::new(NoSleep));
        let waits: Vec<Duration> = (0..4).map(|_| l.acquire()).collect();
        assert_eq!(waits[0], Duration::ZERO);
        for (n, w) in waits.iter().enumerate().skip(1) {
            assert!(
                close(*w, Duration::from_millis(250) * n as u32),
                "{n}: {w:?}"
            );
        }
    }

    #[test]
    fn zero_qps_disables_limiting_and_zero_burst_counts_as_one() {
        let (l, _, sleeper) = limiter(0.0, 0);
        for _ in 0..1000 {
            assert_eq!(l.acquire(), Duration::ZERO);
        }
        assert!(sleeper.waits.lock().unwrap().is_empty());
        let (l, _, _) = limiter(1.0, 0);
        assert!(l.try_acquire());
        assert!(!l.try_acquire());
    }

    #[test]
    fn shared_between_threads() {
        let l = Arc::new(RateLimiter::new(DEFAULT_QPS, DEFAULT_BURST));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        l.acquire();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // 40 of a burst of 100: no one waited, and 60 tokens (give or take refill) remain.
        assert!(l.try_acquire());
    }
}
