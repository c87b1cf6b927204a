//! Containers that exit by themselves: a pod's `rkubelet.io/fake-exit-after` and
//! `rkubelet.io/fake-exit-code` annotations (or their `.<container>` forms) plan an exit when
//! a container starts; every call first exits the containers whose time has come.

use std::cmp::Reverse;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{exit, State, EXIT_AFTER_ANNOTATION, EXIT_CODE_ANNOTATION, IGNORE_SIGTERM_ANNOTATION};
use crate::cri::api::ContainerState;

impl State {
    /// Plans the exit of a container just started, from its pod's annotations.
    pub(super) fn plan_exit(&mut self, container_id: &str, now: i64) {
        let Some(c) = self.containers.get(container_id) else {
            return;
        };
        let Some(sandbox) = self.sandboxes.get(&c.sandbox_id) else {
            return;
        };
        let name = c.status.get_metadata().name.clone();
        let pick = |key: &str| {
            let annotations = &sandbox.status.annotations;
            annotations
                .get(&format!("{key}.{name}"))
                .or_else(|| annotations.get(key))
                .cloned()
        };
        let Some(after) = pick(EXIT_AFTER_ANNOTATION).and_then(|v| parse_after(&v)) else {
            return;
        };
        let code = pick(EXIT_CODE_ANNOTATION)
            .and_then(|v| v.trim().parse::<i32>().ok())
            .unwrap_or(0);
        let at = now.saturating_add(i64::try_from(after.as_nanos()).unwrap_or(i64::MAX));
        if let Some(c) = self.containers.get_mut(container_id) {
            c.planned_exit = Some((at, code));
        }
        self.exits.push(Reverse((at, container_id.to_string())));
    }

    /// Whether the container's pod ignores SIGTERM (its
    /// `rkubelet.io/fake-ignore-sigterm` annotation).
    pub(super) fn ignores_sigterm(&self, container_id: &str) -> bool {
        let Some(c) = self.containers.get(container_id) else {
            return false;
        };
        self.sandboxes.get(&c.sandbox_id).is_some_and(|s| {
            s.status
                .annotations
                .get(IGNORE_SIGTERM_ANNOTATION)
                .is_some_and(|v| v == "true")
        })
    }

    /// Exits the running containers whose planned exit time has come.
    pub(super) fn run_planned_exits(&mut self) {
        // Plans of containers stopped or removed early stay in the heap until due; drop them
        // when they outnumber the containers, so churn cannot grow it.
        if self.exits.len() > 2 * self.containers.len() + 64 {
            let containers = &self.containers;
            let kept: Vec<_> = std::mem::take(&mut self.exits)
                .into_iter()
                .filter(|Reverse((at, id))| {
                    containers.get(id).is_some_and(|c| {
                        c.planned_exit.is_some_and(|(p, _)| p == *at)
                            && c.status.state == ContainerState::CONTAINER_RUNNING
                    })
                })
                .collect();
            self.exits = kept.into_iter().collect();
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        while let Some(Reverse((at, _))) = self.exits.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, id))) = self.exits.pop() else {
                break;
            };
            if let Some(c) = self.containers.get_mut(&id) {
                match c.planned_exit {
                    Some((planned, code))
                        if planned == at && c.status.state == ContainerState::CONTAINER_RUNNING =>
                    {
                        let reason = if code == 0 { "Completed" } else { "Error" };
                        exit(&mut c.status, at, code, reason);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// `30s`, `1m30s` or plain seconds.
fn parse_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    crate::util::duration::parse_duration(value)
        .ok()
        .and_then(|d| d.to_std())
}
