//! The state of one probe of one container (upstream `prober/worker.go`), without a thread:
//! the scheduler asks it when to run next and hands it each outcome. Pure and clock-driven,
//! so thresholds, delays, holds and resets are unit-tested with a fake clock.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Probe;

use super::{ProbeKind, ProbeResult};

/// What the worker knows of its container right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    /// Runtime id of the container's current attempt, if any.
    pub id: Option<String>,
    /// Whether that attempt runs.
    pub running: bool,
    /// When it started (wall clock, from the runtime).
    pub started_at: Option<SystemTime>,
    /// Whether the startup probe (if any) has succeeded for this attempt.
    pub started: bool,
}

/// Timing and thresholds with the API's defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSpec {
    /// `initialDelaySeconds` (0).
    pub initial_delay: Duration,
    /// `periodSeconds` (10).
    pub period: Duration,
    /// `timeoutSeconds` (1).
    pub timeout: Duration,
    /// `successThreshold` (1).
    pub success_threshold: u32,
    /// `failureThreshold` (3).
    pub failure_threshold: u32,
}

impl ProbeSpec {
    /// Reads a probe, applying defaults (and the API's minimums of 1).
    pub fn from_probe(p: &Probe) -> Self {
        let secs = |v: Option<i32>, default: u64, min: u64| {
            Duration::from_secs(
                v.and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(default)
                    .max(min),
            )
        };
        let count = |v: Option<i32>, default: u32| {
            v.and_then(|n| u32::try_from(n).ok())
                .unwrap_or(default)
                .max(1)
        };
        ProbeSpec {
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold: count(p.success_threshold, 1),
            failure_threshold: count(p.failure_threshold, 3),
        }
    }
}

/// What the worker decided about a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to run now.
    Skip,
    /// Run the probe against this container id.
    Run(String),
}

/// One probe's state.
#[derive(Debug, Clone)]
pub struct ProbeWorker {
    /// Which probe.
    pub kind: ProbeKind,
    /// Its timing.
    pub spec: ProbeSpec,
    /// The container attempt the state belongs to.
    container_id: Option<String>,
    /// The published result.
    last: ProbeResult,
    /// The result of the latest run and how many runs in a row gave it.
    last_run: Option<ProbeResult>,
    run_count: u32,
    /// After a liveness or startup failure, nothing runs until the container is replaced.
    on_hold: bool,
}

impl ProbeWorker {
    /// A worker for a new probe.
    pub fn new(kind: ProbeKind, spec: ProbeSpec) -> Self {
        ProbeWorker {
            kind,
            spec,
            container_id: None,
            last: kind.initial_result(),
            last_run: None,
            run_count: 0,
            on_hold: false,
        }
    }

    /// The published result.
    pub fn result(&self) -> ProbeResult {
        self.last
    }

    /// Whether to probe `c` at `now` (wall clock `wall`); resets the state when the
    /// container was replaced. A published result that changed because of a reset is
    /// returned beside the step.
    pub fn step(&mut self, c: &ContainerView, wall: SystemTime) -> (Step, Option<ProbeResult>) {
        let mut changed = None;
        if c.id != self.container_id {
            self.container_id = c.id.clone();
            self.on_hold = false;
            self.last_run = None;
            self.run_count = 0;
            if self.last != self.kind.initial_result() {
                self.last = self.kind.initial_result();
                changed = Some(self.last);
            }
        }
        let Some(id) = c.id.clone().filter(|_| c.running) else {
            // A stopped container is not ready; liveness and startup keep their value.
            if self.kind == ProbeKind::Readiness && self.last != ProbeResult::Failure {
                self.last = ProbeResult::Failure;
                changed = Some(self.last);
            }
            return (Step::Skip, changed);
        };
        if self.on_hold {
            return (Step::Skip, changed);
        }
        match self.kind {
            // The startup probe is done once it succeeded.
            ProbeKind::Startup if c.started => return (Step::Skip, changed),
            // Liveness and readiness wait for the startup probe.
            ProbeKind::Liveness | ProbeKind::Readiness if !c.started => {
                return (Step::Skip, changed)
            }
            _ => {}
        }
        if let Some(started) = c.started_at {
            if wall < started + self.spec.initial_delay {
                return (Step::Skip, changed);
            }
        }
        (Step::Run(id), changed)
    }

    /// Takes the outcome of a run against `container_id`; returns the newly published
    /// result when it changed.
    pub fn record(&mut self, container_id: &str, result: ProbeResult) -> Option<ProbeResult> {
        if self.container_id.as_deref() != Some(container_id) {
            // The container was replaced while the probe ran.
            return None;
        }
        if self.last_run == Some(result) {
            self.run_count = self.run_count.saturating_add(1);
        } else {
            self.last_run = Some(result);
            self.run_count = 1;
        }
        let needed = match result {
            ProbeResult::Success => self.spec.success_threshold,
            ProbeResult::Failure => self.spec.failure_threshold,
            ProbeResult::Unknown => 1,
        };
        if self.run_count < needed {
            return None;
        }
        let changed = (self.last != result).then_some(result);
        self.last = result;
        if result == ProbeResult::Failure && self.kind != ProbeKind::Readiness {
            // The container gets restarted; wait for the new one.
            self.on_hold = true;
            self.run_count = 0;
        }
        changed
    }

    /// When to look at this probe again after a run or a skip at `now`.
    pub fn next_after(&self, now: Instant) -> Instant {
        now + self.spec.period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(success: u32, failure: u32, delay: u64) -> ProbeSpec {
        ProbeSpec {
            initial_delay: Duration::from_secs(delay),
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    fn view(id: &str, started_at: SystemTime, started: bool) -> ContainerView {
        ContainerView {
            id: Some(id.into()),
            running: true,
            started_at: Some(started_at),
            started,
        }
    }

    #[test]
    fn defaults_from_the_api() {
        let s = ProbeSpec::from_probe(&Probe::default());
        assert_eq!(s, spec(1, 3, 0));
        let p = Probe {
            period_seconds: Some(0),
            failure_threshold: Some(5),
            ..Default::default()
        };
        assert_eq!(ProbeSpec::from_probe(&p).period, Duration::from_secs(1));
        assert_eq!(ProbeSpec::from_probe(&p).failure_threshold, 5);
    }

    #[test]
    fn readiness_waits_for_the_initial_delay_and_needs_success_threshold_runs() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut w = ProbeWorker::new(ProbeKind::Readiness, spec(2, 3, 5));
        assert_eq!(w.result(), ProbeResult::Failure, "not ready until proven");
        let c = view("c1", t0, true);
        assert_eq!(w.step(&c, t0 + Duration::from_secs(4)).0, Step::Skip);
        assert_eq!(
            w.step(&c, t0 + Duration::from_secs(5)).0,
            Step::Run("c1".into())
        );
        assert_eq!(
            w.record("c1", ProbeResult::Success),
            None,
            "one success of two"
        );
        assert_eq!(
            w.record("c1", ProbeResult::Success),
            Some(ProbeResult::Success)
        );
        assert_eq!(w.record("c1", ProbeResult::Failure), None);
        assert_eq!(w.record("c1", ProbeResult::Failure), None);
        assert_eq!(
            w.record("c1", ProbeResult::Failure),
            Some(ProbeResult::Failure)
        );
        // Readiness keeps probing after failures.
        assert_eq!(
            w.step(&c, t0 + Duration::from_secs(60)).0,
            Step::Run("c1".into())
        );
    }

    #[test]
    fn liveness_failure_holds_until_the_container_is_replaced_and_then_resets() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut w = ProbeWorker::new(ProbeKind::Liveness, spec(1, 2, 0));
        assert_eq!(w.result(), ProbeResult::Success);
        let c1 = view("c1", t0, true);
        assert_eq!(w.step(&c1, t0).0, Step::Run("c1".into()));
        assert_eq!(w.record("c1", ProbeResult::Failure), None);
        assert_eq!(
            w.record("c1", ProbeResult::Failure),
            Some(ProbeResult::Failure)
        );
        assert_eq!(w.step(&c1, t0).0, Step::Skip, "on hold");
        let (step, changed) = w.step(&view("c2", t0, true), t0);
        assert_eq!(step, Step::Run("c2".into()));
        assert_eq!(
            changed,
            Some(ProbeResult::Success),
            "reset for the new container"
        );
        assert_eq!(
            w.record("c1", ProbeResult::Failure),
            None,
            "late result of the old one"
        );
    }

    #[test]
    fn startup_gates_liveness_and_stops_once_it_succeeded() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut live = ProbeWorker::new(ProbeKind::Liveness, spec(1, 1, 0));
        let mut startup = ProbeWorker::new(ProbeKind::Startup, spec(1, 3, 0));
        let not_started = view("c1", t0, false);
        assert_eq!(live.step(&not_started, t0).0, Step::Skip);
        assert_eq!(startup.step(&not_started, t0).0, Step::Run("c1".into()));
        assert_eq!(
            startup.record("c1", ProbeResult::Success),
            Some(ProbeResult::Success)
        );
        let started = view("c1", t0, true);
        assert_eq!(startup.step(&started, t0).0, Step::Skip);
        assert_eq!(live.step(&started, t0).0, Step::Run("c1".into()));
    }

    #[test]
    fn a_stopped_container_is_unready() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut w = ProbeWorker::new(ProbeKind::Readiness, spec(1, 1, 0));
        w.step(&view("c1", t0, true), t0);
        w.record("c1", ProbeResult::Success);
        let stopped = ContainerView {
            running: false,
            ..view("c1", t0, true)
        };
        assert_eq!(
            w.step(&stopped, t0),
            (Step::Skip, Some(ProbeResult::Failure))
        );
    }
}
