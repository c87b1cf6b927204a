//! Fault injection state, set from the test thread and read by request and watch threads:
//! stalled responses, the next N requests failing, watches closed or fed a malformed line.
//! (Going down and coming back is the acceptor's business, in `server.rs`.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How many injected raw lines to keep for watches that have not sent them yet.
const RAW_LINES_KEPT: usize = 100;

/// The fault controls.
#[derive(Default)]
pub struct Faults {
    /// How long every request waits before it is answered.
    stall: Mutex<Duration>,
    /// (requests left to fail, HTTP code to fail them with).
    failing: Mutex<(u32, u16)>,
    /// Bumped by `close_watches`: a watch that sees it change ends its stream.
    watch_generation: AtomicU64,
    /// Raw lines for open watches, each with a sequence number so every watch sends each line
    /// once.
    raw_lines: Mutex<RawLines>,
    /// Watches currently streaming, for tests that wait for a client to be watching.
    open_watches: AtomicUsize,
}

#[derive(Default)]
struct RawLines {
    /// The sequence number of the latest line (0 = none yet).
    last: u64,
    lines: VecDeque<(u64, Vec<u8>)>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Faults {
    /// Holds every later response for `stall` (zero to stop).
    pub fn set_stall(&self, stall: Duration) {
        *lock(&self.stall) = stall;
    }

    /// The current stall.
    pub fn stall(&self) -> Duration {
        *lock(&self.stall)
    }

    /// Fails the next `count` requests with `code`.
    pub fn fail_next(&self, count: u32, code: u16) {
        *lock(&self.failing) = (count, code);
    }

    /// The code this request must fail with, if it is one of the failing ones.
    pub fn take_failure(&self) -> Option<u16> {
        let mut failing = lock(&self.failing);
        if failing.0 == 0 {
            return None;
        }
        failing.0 -= 1;
        Some(failing.1)
    }

    /// Asks every open watch to end.
    pub fn close_watches(&self) {
        self.watch_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The close generation a watch starts in.
    pub fn watch_generation(&self) -> u64 {
        self.watch_generation.load(Ordering::SeqCst)
    }

    /// Queues `line` for every open watch.
    pub fn inject_raw_line(&self, line: &[u8]) {
        let mut raw = lock(&self.raw_lines);
        raw.last += 1;
        let seq = raw.last;
        raw.lines.push_back((seq, line.to_vec()));
        while raw.lines.len() > RAW_LINES_KEPT {
            raw.lines.pop_front();
        }
    }

    /// The sequence number a new watch starts after (it sends no older lines).
    pub fn raw_line_mark(&self) -> u64 {
        lock(&self.raw_lines).last
    }

    /// The lines after `mark`, and the new mark.
    pub fn raw_lines_after(&self, mark: u64) -> (Vec<Vec<u8>>, u64) {
        let raw = lock(&self.raw_lines);
        let lines = raw
            .lines
            .iter()
            .filter(|(seq, _)| *seq > mark)
            .map(|(_, line)| line.clone())
            .collect();
        (lines, raw.last)
    }

    /// Counts a watch as open until the returned guard drops.
    pub fn watch_opened(&self) -> OpenWatch<'_> {
        self.open_watches.fetch_add(1, Ordering::SeqCst);
        OpenWatch(self)
    }

    /// How many watches are streaming now.
    pub fn open_watches(&self) -> usize {
        self.open_watches.load(Ordering::SeqCst)
    }
}

/// Keeps a watch counted in [`Faults::open_watches`].
pub struct OpenWatch<'a>(&'a Faults);

impl Drop for OpenWatch<'_> {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}
