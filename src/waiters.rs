//! Waiters: where pod work that waits goes, so it never holds a pod worker (threads
//! `pod-waiter-N`). A pod worker hands a job over (stop a pod's containers within their
//! grace period, pull an image, run a postStart hook) and returns at once; the job calls
//! back when it is done and the pod workers take the pod up again.
//!
//! ```text
//!   pod-worker ── submit(job) ──▶ queue ──▶ pod-waiter-N runs the job (blocks on CRI)
//!       │ returns at once                         │ done: PodWorkers::resume(pod)
//!       ▼                                         ▼
//!   next pod                          the pod is queued for its next step
//! ```
//!
//! Threads are started as jobs wait, up to `max_threads`, and end after 30 s idle, so an
//! idle kubelet has none. Jobs beyond `max_threads` wait in the queue, in order. Pulls wait
//! in a queue of their own until a pull slot is free (upstream `serializeImagePulls` and
//! `maxParallelImagePulls`): a pull waiting for its slot holds no thread.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// A job: runs once on a waiter thread.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle waiter thread lives.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Stack of a waiter thread: jobs are CRI calls and small closures.
const STACK_SIZE: usize = 256 * 1024;

/// Which queue a job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Any wait (grace periods, hooks).
    Wait,
    /// An image pull: started only while a pull slot is free.
    Pull,
}

struct State {
    jobs: VecDeque<Job>,
    pulls: VecDeque<Job>,
    /// Pulls running now.
    pulling: usize,
    /// Threads alive.
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
    stopping: bool,
    handles: Vec<JoinHandle<()>>,
    /// Started threads, for their names.
    started: usize,
}

/// The waiter pool; see the module docs.
pub struct Waiters {
    state: Mutex<State>,
    wake: Condvar,
    /// At most this many threads.
    max_threads: usize,
    /// At most this many pulls at once (`None`: unlimited).
    pull_limit: Option<usize>,
    /// Thread name prefix (`pod-waiter`).
    name: &'static str,
    /// How long a thread lives without a job.
    idle_timeout: Duration,
}

impl Waiters {
    /// A pool of at most `max_threads` threads running at most `pull_limit` pulls at once.
    pub fn new(name: &'static str, max_threads: usize, pull_limit: Option<usize>) -> Arc<Waiters> {
        Arc::new(Waiters {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                pulls: VecDeque::new(),
                pulling: 0,
                threads: 0,
                idle: 0,
                stopping: false,
                handles: Vec::new(),
                started: 0,
            }),
            wake: Condvar::new(),
            max_threads: max_threads.max(1),
            pull_limit: pull_limit.map(|l| l.max(1)),
            name,
            idle_timeout: IDLE_TIMEOUT,
        })
    }

    /// Like [`Waiters::new`] with idle threads ending after `idle_timeout`.
    pub fn with_idle_timeout(
        name: &'static str,
        max_threads: usize,
        pull_limit: Option<usize>,
        idle_timeout: Duration,
    ) -> Arc<Waiters> {
        let mut waiters = Self::new(name, max_threads, pull_limit);
        if let Some(w) = Arc::get_mut(&mut waiters) {
            w.idle_timeout = idle_timeout;
        }
        waiters
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job; it runs as soon as a thread (and for a pull, a pull slot) is free.
    /// After [`Waiters::stop`] the job is dropped unrun.
    pub fn submit(self: &Arc<Self>, kind: JobKind, job: Job) {
        let mut state = self.lock();
        if state.stopping {
            return;
        }
        match kind {
            JobKind::Wait => state.jobs.push_back(job),
            JobKind::Pull => state.pulls.push_back(job),
        }
        self.dispatch(state);
    }

    /// How many queued jobs could start now.
    fn runnable_count(&self, state: &State) -> usize {
        let pull_slots = self
            .pull_limit
            .map_or(usize::MAX, |l| l.saturating_sub(state.pulling));
        state.jobs.len() + state.pulls.len().min(pull_slots)
    }

    /// Whether a job can be taken now.
    fn runnable(&self, state: &State) -> bool {
        self.runnable_count(state) > 0
    }

    /// Wakes an idle thread for runnable work, and starts one more while the idle ones are
    /// fewer than the runnable jobs and the bound allows.
    fn dispatch(self: &Arc<Self>, mut state: MutexGuard<'_, State>) {
        let runnable = self.runnable_count(&state);
        if runnable == 0 {
            return;
        }
        if state.idle > 0 {
            self.wake.notify_one();
        }
        if state.idle >= runnable || state.threads >= self.max_threads {
            return;
        }
        let index = state.started;
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("{}-{index}", self.name))
            .stack_size(STACK_SIZE)
            .spawn(move || me.thread_loop());
        match spawned {
            Ok(handle) => {
                state.started += 1;
                state.threads += 1;
                state.handles.retain(|h| !h.is_finished());
                state.handles.push(handle);
            }
            // The jobs wait for a thread that exists (or the next submit).
            Err(e) => log::error!("starting a {} thread: {e}", self.name),
        }
    }

    /// Takes the next runnable job: waits first, then pulls that have a slot.
    fn take(&self, state: &mut State) -> Option<(Job, bool)> {
        if let Some(job) = state.jobs.pop_front() {
            return Some((job, false));
        }
        if self.pull_limit.is_none_or(|l| state.pulling < l) {
            if let Some(job) = state.pulls.pop_front() {
                state.pulling += 1;
                return Some((job, true));
            }
        }
        None
    }

    fn thread_loop(self: Arc<Self>) {
        let mut state = self.lock();
        // Idle since this instant: wake-ups that find no job (another thread took it, or
        // one ended) do not start the idle time again.
        let mut idle_since = std::time::Instant::now();
        loop {
            if state.stopping {
                break;
            }
            if let Some((job, pull)) = self.take(&mut state) {
                drop(state);
                // A panicking job must not take the thread's count with it.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    log::error!("a {} job panicked", self.name);
                }
                state = self.lock();
                idle_since = std::time::Instant::now();
                if pull {
                    state.pulling = state.pulling.saturating_sub(1);
                    // A slot is free: another thread may take a waiting pull.
                    if self.runnable(&state) {
                        self.wake.notify_one();
                    }
                }
                continue;
            }
            let left = self.idle_timeout.saturating_sub(idle_since.elapsed());
            if left.is_zero() {
                break;
            }
            state.idle += 1;
            let (next, _) = self
                .wake
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            state.idle -= 1;
        }
        state.threads -= 1;
        drop(state);
        // stop() waits for the count to reach zero.
        self.wake.notify_all();
    }

    /// Jobs queued and not started (waits, pulls).
    pub fn queued(&self) -> (usize, usize) {
        let state = self.lock();
        (state.jobs.len(), state.pulls.len())
    }

    /// Threads alive now.
    pub fn threads(&self) -> usize {
        self.lock().threads
    }

    /// Drops queued jobs and joins every thread whose job ends within `grace`. A job still
    /// running then (a container stop in its grace period) is left to finish on its own:
    /// the runtime carries the stop out, and a restarted kubelet takes the pod up again.
    pub fn stop(&self, grace: Duration) {
        let deadline = std::time::Instant::now() + grace;
        let mut state = self.lock();
        state.stopping = true;
        state.jobs.clear();
        state.pulls.clear();
        self.wake.notify_all();
        while state.threads > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .wake
                .wait_timeout(state, left.min(Duration::from_millis(50)))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let busy = state.threads;
        let handles = std::mem::take(&mut state.handles);
        drop(state);
        for handle in handles.into_iter().filter(JoinHandle::is_finished) {
            if handle.join().is_err() {
                log::error!("a {} thread panicked", self.name);
            }
        }
        if busy > 0 {
            log::warn!(
                "{busy} {} job(s) still running at shutdown, left to finish",
                self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn jobs_run_on_at_most_max_threads_and_all_finish() {
        let w = Waiters::new("test-waiter", 4, None);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..20 {
            let (running, peak, done) = (running.clone(), peak.clone(), done.clone());
            w.submit(
                JobKind::Wait,
                Box::new(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                }),
            );
        }
        wait_until("all jobs", || done.load(Ordering::SeqCst) == 20);
        assert!(peak.load(Ordering::SeqCst) <= 4);
        assert!(w.threads() <= 4);
        w.stop(Duration::from_secs(5));
    }

    #[test]
    fn pulls_respect_their_limit_without_blocking_other_waits() {
        let w = Waiters::new("test-waiter", 8, Some(1));
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        let pulls_running = Arc::new(AtomicUsize::new(0));
        let pulls_peak = Arc::new(AtomicUsize::new(0));
        let pulls_done = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let (rx, running, peak, done) = (
                release_rx.clone(),
                pulls_running.clone(),
                pulls_peak.clone(),
                pulls_done.clone(),
            );
            w.submit(
                JobKind::Pull,
                Box::new(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let _ = rx.recv_timeout(Duration::from_secs(10));
                    running.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                }),
            );
        }
        // A plain wait runs at once although two pulls are queued behind the running one.
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        w.submit(
            JobKind::Wait,
            Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }),
        );
        wait_until("the wait", || ran.load(Ordering::SeqCst) == 1);
        assert_eq!(w.queued().1, 2, "two pulls wait for the slot");
        for _ in 0..3 {
            release_tx.send(()).unwrap();
        }
        wait_until("the pulls", || pulls_done.load(Ordering::SeqCst) == 3);
        assert_eq!(pulls_peak.load(Ordering::SeqCst), 1);
        w.stop(Duration::from_secs(5));
    }

    #[test]
    fn a_panicking_job_leaves_the_pool_working() {
        let w = Waiters::new("test-waiter", 1, None);
        w.submit(JobKind::Wait, Box::new(|| panic!("job failed")));
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        w.submit(
            JobKind::Wait,
            Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }),
        );
        wait_until("the second job", || ran.load(Ordering::SeqCst) == 1);
        w.stop(Duration::from_secs(5));
    }

    #[test]
    fn idle_threads_end_after_the_idle_time_even_when_woken_in_between() {
        let idle = Duration::from_millis(300);
        let w = Waiters::with_idle_timeout("test-waiter", 6, None, idle);
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        for _ in 0..6 {
            let rx = release_rx.clone();
            w.submit(
                JobKind::Wait,
                Box::new(move || {
                    let _ = rx.recv();
                }),
            );
        }
        wait_until("six threads", || w.threads() == 6);
        drop(release_tx);
        let released = Instant::now();
        // Each ending thread wakes the others; none may take that as a new start of its
        // idle time.
        wait_until("every thread ended", || w.threads() == 0);
        assert!(
            released.elapsed() < idle * 3,
            "idle threads lived {:?} past their jobs (idle time {idle:?})",
            released.elapsed()
        );
        w.stop(Duration::from_secs(1));
    }
}
