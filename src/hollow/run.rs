//! The `rkubelet hollow` command: starts the nodes, prints progress until `--duration` or a
//! signal, then a summary.

use std::time::{Duration, Instant};

use super::{Hollow, HollowArgs, HollowError};

/// `rkubelet hollow`: runs until `--duration` passes or SIGTERM/SIGINT, printing a progress
/// line every `--progress-interval` and a summary at the end.
pub fn run(args: &HollowArgs) -> Result<(), HollowError> {
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|source| HollowError::Thread {
        name: "signals",
        source,
    })?;
    let (signal_tx, signal_rx) = crossbeam_channel::bounded::<()>(1);
    let handle = signals.handle();
    let waiter = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signals = signals;
            if signals.forever().next().is_some() {
                let _ = signal_tx.send(());
            }
        })
        .map_err(|source| HollowError::Thread {
            name: "signals",
            source,
        })?;
    let hollow = Hollow::start(args)?;
    let interval = args
        .progress_interval
        .to_std()
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(5));
    let deadline = args
        .duration
        .and_then(|d| d.to_std())
        .map(|d| Instant::now() + d);
    let mut last_requests = 0u64;
    let mut last_at = Instant::now();
    loop {
        let wait = deadline.map_or(interval, |d| {
            interval.min(d.saturating_duration_since(Instant::now()))
        });
        let stop = !matches!(
            signal_rx.recv_timeout(wait),
            Err(crossbeam_channel::RecvTimeoutError::Timeout)
        );
        let p = hollow.progress();
        let secs = last_at.elapsed().as_secs_f64().max(0.001);
        println!(
            "hollow: {}/{} nodes registered, {} pods running, {} finished, {:.1} API requests/s, {} errors",
            p.registered,
            p.nodes,
            p.running,
            p.finished,
            (p.requests - last_requests) as f64 / secs,
            p.errors
        );
        last_requests = p.requests;
        last_at = Instant::now();
        if stop || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    let stats = hollow.request_stats();
    let skipped = hollow.skipped_steps();
    let started = hollow.started;
    let p = hollow.stop();
    handle.close();
    let _ = waiter.join();
    println!(
        "hollow summary: {} nodes ({} registered), {} pods running, {} finished, {} API requests in {:.0} s ({} retries), {} errors, {} skipped steps",
        p.nodes,
        p.registered,
        p.running,
        p.finished,
        p.requests,
        started.elapsed().as_secs_f64(),
        stats.retries,
        p.errors,
        skipped
    );
    for r in stats.requests.iter().filter(|r| r.count > 0) {
        println!("  {} {}: {}", r.verb, r.resource, r.count);
    }
    Ok(())
}
