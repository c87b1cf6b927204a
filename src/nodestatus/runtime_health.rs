//! How healthy the container runtime looks from its CRI `Status` calls, as upstream's
//! `runtimeState` keeps it: a failed call changes nothing by itself (the conditions last seen
//! stay), and the runtime counts as down only once its last good `Status` (one with
//! `RuntimeReady` true) is older than [`RUNTIME_SYNC_THRESHOLD`]. A node does not go NotReady
//! over one slow or refused call.

use std::time::{Duration, Instant};

use super::{RuntimeCondition, RuntimeSync};

/// Upstream's `maxWaitForContainerRuntime`.
pub const RUNTIME_SYNC_THRESHOLD: Duration = Duration::from_secs(30);

/// The last good `Status` and the conditions last reported.
#[derive(Debug, Default)]
pub struct RuntimeHealth {
    last_ready: Option<Instant>,
    conditions: Option<Vec<RuntimeCondition>>,
}

impl RuntimeHealth {
    /// Takes the outcome of a `Status` call made at `now` (`None`: it failed) and returns how
    /// recent the last good one is, with the conditions to report.
    pub fn observe(
        &mut self,
        now: Instant,
        status: Option<Vec<RuntimeCondition>>,
    ) -> (RuntimeSync, Option<Vec<RuntimeCondition>>) {
        if let Some(conditions) = status {
            if conditions
                .iter()
                .any(|c| c.type_ == "RuntimeReady" && c.status)
            {
                self.last_ready = Some(now);
            }
            self.conditions = Some(conditions);
        }
        let sync = match self.last_ready {
            None => RuntimeSync::NotYet,
            Some(t) if now.saturating_duration_since(t) < RUNTIME_SYNC_THRESHOLD => {
                RuntimeSync::Recent
            }
            Some(_) => RuntimeSync::Stale,
        };
        (sync, self.conditions.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(type_: &str, status: bool) -> RuntimeCondition {
        RuntimeCondition {
            type_: type_.into(),
            status,
            reason: String::new(),
            message: String::new(),
        }
    }

    fn ready() -> Vec<RuntimeCondition> {
        vec![cond("RuntimeReady", true), cond("NetworkReady", true)]
    }

    #[test]
    fn failed_calls_keep_the_last_conditions_until_the_threshold_passes() {
        let start = Instant::now();
        let mut h = RuntimeHealth::default();
        assert_eq!(h.observe(start, None), (RuntimeSync::NotYet, None));
        assert_eq!(
            h.observe(start, Some(ready())),
            (RuntimeSync::Recent, Some(ready()))
        );
        let within = start + RUNTIME_SYNC_THRESHOLD - Duration::from_secs(1);
        assert_eq!(
            h.observe(within, None),
            (RuntimeSync::Recent, Some(ready()))
        );
        let after = start + RUNTIME_SYNC_THRESHOLD;
        assert_eq!(h.observe(after, None), (RuntimeSync::Stale, Some(ready())));
        let back = after + Duration::from_secs(5);
        assert_eq!(h.observe(back, Some(ready())).0, RuntimeSync::Recent);
    }

    #[test]
    fn a_runtime_that_answers_not_ready_is_not_a_good_sync() {
        let start = Instant::now();
        let mut h = RuntimeHealth::default();
        let not_ready = vec![cond("RuntimeReady", false), cond("NetworkReady", true)];
        assert_eq!(
            h.observe(start, Some(not_ready.clone())),
            (RuntimeSync::NotYet, Some(not_ready.clone()))
        );
        h.observe(start, Some(ready()));
        let later = start + RUNTIME_SYNC_THRESHOLD + Duration::from_secs(1);
        assert_eq!(
            h.observe(later, Some(not_ready.clone())),
            (RuntimeSync::Stale, Some(not_ready))
        );
    }
}
