//! The operations the REST client offers (`Op`) and its request counters: calls per verb
//! and resource plus retries, kept in plain atomics so any thread can count without a lock.
//! The benchmark reads them (writes per pod) through `RestClient::stats`.

use std::sync::atomic::{AtomicU64, Ordering};

/// One API operation of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    ListPods,
    WatchPods,
    GetPod,
    CreatePod,
    DeletePod,
    PatchPodStatus,
    GetNode,
    CreateNode,
    PatchNode,
    PatchNodeStatus,
    GetLease,
    CreateLease,
    UpdateLease,
    CreateEvent,
    PatchEvent,
    GetConfigMap,
    GetSecret,
    CreateToken,
    ListServices,
    ListAllServices,
    WatchServices,
    GetRuntimeClass,
    GetPersistentVolumeClaim,
    GetPersistentVolume,
    CreateTokenReview,
    CreateSubjectAccessReview,
    CreateCsr,
    GetCsr,
    WatchCsrs,
    GetCsiDriver,
    GetCsiNode,
    CreateCsiNode,
    UpdateCsiNode,
    GetVolumeAttachment,
}

/// (verb, resource) of each [`Op`], indexed by `Op as usize`. Verbs are named as the API
/// server's metrics name them (`LIST` and `WATCH` are GETs on the wire).
const OPS: [(&str, &str); 34] = [
    ("LIST", "pods"),
    ("WATCH", "pods"),
    ("GET", "pods"),
    ("POST", "pods"),
    ("DELETE", "pods"),
    ("PATCH", "pods/status"),
    ("GET", "nodes"),
    ("POST", "nodes"),
    ("PATCH", "nodes"),
    ("PATCH", "nodes/status"),
    ("GET", "leases"),
    ("POST", "leases"),
    ("PUT", "leases"),
    ("POST", "events"),
    ("PATCH", "events"),
    ("GET", "configmaps"),
    ("GET", "secrets"),
    ("POST", "serviceaccounts/token"),
    ("LIST", "services"),
    ("LIST", "services"),
    ("WATCH", "services"),
    ("GET", "runtimeclasses"),
    ("GET", "persistentvolumeclaims"),
    ("GET", "persistentvolumes"),
    ("POST", "tokenreviews"),
    ("POST", "subjectaccessreviews"),
    ("POST", "certificatesigningrequests"),
    ("GET", "certificatesigningrequests"),
    ("WATCH", "certificatesigningrequests"),
    ("GET", "csidrivers"),
    ("GET", "csinodes"),
    ("POST", "csinodes"),
    ("PUT", "csinodes"),
    ("GET", "volumeattachments"),
];

const WRITE_VERBS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

impl Op {
    /// The verb for the counters: `LIST`, `WATCH`, `GET`, `POST`, `PUT`, `PATCH`, `DELETE`.
    pub(crate) fn verb(self) -> &'static str {
        OPS[self as usize].0
    }

    /// The HTTP method as sent.
    pub(crate) fn http_verb(self) -> &'static str {
        match self.verb() {
            "LIST" | "WATCH" => "GET",
            verb => verb,
        }
    }
}

/// Requests sent, per verb and resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestCount {
    /// `LIST`, `WATCH`, `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub verb: &'static str,
    /// `pods`, `pods/status`, `nodes`, `nodes/status`, `leases`, `events`, `configmaps`,
    /// `secrets` or `serviceaccounts/token`.
    pub resource: &'static str,
    /// Calls made (a call tried three times counts once here and twice in `retries`).
    pub count: u64,
}

/// A snapshot of a client's request counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestStats {
    /// One entry per operation the client offers, zero counts included.
    pub requests: Vec<RequestCount>,
    /// Retries sent after a failed try, over all operations.
    pub retries: u64,
}

impl RequestStats {
    /// Calls of `verb` on `resource`.
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.requests
            .iter()
            .filter(|r| r.verb == verb && r.resource == resource)
            .map(|r| r.count)
            .sum()
    }

    /// Calls that write: POST, PUT, PATCH and DELETE.
    pub fn writes(&self) -> u64 {
        self.requests
            .iter()
            .filter(|r| WRITE_VERBS.contains(&r.verb))
            .map(|r| r.count)
            .sum()
    }

    /// All calls.
    pub fn total(&self) -> u64 {
        self.requests.iter().map(|r| r.count).sum()
    }
}

/// The live counters behind [`RequestStats`].
#[derive(Debug)]
pub(crate) struct Counters {
    /// One counter per entry of `OPS`.
    calls: [AtomicU64; OPS.len()],
    retries: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            calls: std::array::from_fn(|_| AtomicU64::new(0)),
            retries: AtomicU64::new(0),
        }
    }
}

impl Counters {
    /// Counts one call of `op`.
    pub(crate) fn call(&self, op: Op) {
        self.calls[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one retry.
    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot of all counters.
    pub(crate) fn snapshot(&self) -> RequestStats {
        RequestStats {
            requests: OPS
                .iter()
                .zip(&self.calls)
                .map(|(&(verb, resource), count)| RequestCount {
                    verb,
                    resource,
                    count: count.load(Ordering::Relaxed),
                })
                .collect(),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_map_to_verbs_and_resources() {
        assert_eq!(
            (Op::ListPods.verb(), Op::ListPods.http_verb()),
            ("LIST", "GET")
        );
        assert_eq!(
            (Op::WatchPods.verb(), Op::WatchPods.http_verb()),
            ("WATCH", "GET")
        );
        assert_eq!(OPS[Op::PatchPodStatus as usize], ("PATCH", "pods/status"));
        assert_eq!(OPS[Op::UpdateLease as usize], ("PUT", "leases"));
        assert_eq!(OPS[Op::PatchEvent as usize], ("PATCH", "events"));
        assert_eq!(Op::DeletePod.http_verb(), "DELETE");
    }

    #[test]
    fn counters_snapshot() {
        let c = Counters::default();
        c.call(Op::CreatePod);
        c.call(Op::PatchPodStatus);
        c.call(Op::PatchPodStatus);
        c.call(Op::GetPod);
        c.retry();
        let s = c.snapshot();
        assert_eq!(s.requests.len(), 34);
        assert_eq!(
            s.requests[Op::GetVolumeAttachment as usize].resource,
            "volumeattachments"
        );
        assert_eq!(s.count("PATCH", "pods/status"), 2);
        assert_eq!((s.writes(), s.total(), s.retries), (3, 4, 1));
    }
}
