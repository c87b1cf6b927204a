//! Deletion, after kube-apiserver's `BeforeDelete` and the pod strategy's
//! `CheckGracefulDelete`: preconditions, graceful pod deletion (deletionTimestamp first, the
//! object removed by a later delete with grace 0) and immediate removal of everything else.
//! Runs on the calling thread, inside [`Store::write`].

use serde_json::{json, Value};

use super::meta::{format_time, metadata_mut, parse_time, str_at, unix_now};
use super::registry::{key, Admit, Operation};
use super::resources::Resource;
use super::status::ApiError;
use super::store::{Store, Write, Written};

/// The fields of `meta/v1 DeleteOptions` the double honours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds` (body or query).
    pub grace_period_seconds: Option<i64>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

impl DeleteOptions {
    /// Reads a `DeleteOptions` body (may be empty) and the `gracePeriodSeconds` query
    /// parameter; the body wins when both are given, as upstream.
    pub fn parse(body: &[u8], query_grace: Option<&str>) -> Result<DeleteOptions, ApiError> {
        let mut options = DeleteOptions::default();
        if let Some(grace) = query_grace {
            let grace = grace.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid gracePeriodSeconds {grace:?}"))
            })?;
            options.grace_period_seconds = Some(grace);
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(options);
        }
        let body: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        if let Some(grace) = body.get("gracePeriodSeconds").and_then(Value::as_i64) {
            options.grace_period_seconds = Some(grace);
        }
        let precondition = |field: &str| {
            body.pointer(&format!("/preconditions/{field}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        options.uid = precondition("uid");
        options.resource_version = precondition("resourceVersion");
        Ok(options)
    }
}

/// `DELETE`. Pods on a node are deleted gracefully: the first delete sets
/// `deletionTimestamp` (now + grace) and `deletionGracePeriodSeconds` and keeps the pod; a
/// later delete may only shorten the grace; grace 0 (or an unscheduled or finished pod)
/// removes it. Everything else is removed at once.
pub fn delete(
    store: &Store,
    resource: Resource,
    namespace: &str,
    name: &str,
    options: &DeleteOptions,
    admit: &Admit<'_>,
) -> Result<Written, ApiError> {
    let written = store.write(key(resource, namespace, name), |current| {
        let current = current.ok_or_else(|| ApiError::not_found(resource, name))?;
        check_delete_preconditions(resource, current, options)?;
        admit(Operation::Delete, Some(current), None)?;
        if resource != Resource::Pods {
            return Ok(remove_unless_finalized(current));
        }
        let grace = options
            .grace_period_seconds
            .map(|g| if g < 0 { 1 } else { g });
        let pending = current["metadata"]["deletionGracePeriodSeconds"].as_i64();
        let deletion_time = parse_time(str_at(current, "/metadata/deletionTimestamp"));
        let (deadline, period) = match (deletion_time, pending) {
            // Already terminating: only a shorter grace period changes anything.
            (Some(at), Some(pending)) if pending > 0 => match grace {
                Some(g) if g < pending => (at - pending + g, g),
                _ => return Ok(Write::Keep),
            },
            (Some(_), _) => return Ok(remove_unless_finalized(current)),
            (None, _) => {
                let period = pod_grace_period(current, grace);
                (unix_now() + period, period)
            }
        };
        let mut next = current.clone();
        let meta = metadata_mut(&mut next);
        meta.insert("deletionTimestamp".into(), json!(format_time(deadline)));
        meta.insert("deletionGracePeriodSeconds".into(), json!(period));
        Ok(Write::Put(next))
    })?;
    // As kube-apiserver: a pod whose grace period became 0 is first updated to say so (the
    // kubelet sees that and stops its containers at once), then removed, unless finalizers
    // hold it.
    let forced = resource == Resource::Pods
        && written.change.is_some()
        && written.object["metadata"]["deletionGracePeriodSeconds"].as_i64() == Some(0)
        && !finalized(&written.object);
    if !forced {
        return Ok(written);
    }
    store.write(key(resource, namespace, name), |current| {
        let current = current.ok_or_else(|| ApiError::not_found(resource, name))?;
        Ok(remove_unless_finalized(current))
    })
}

/// Whether finalizers hold the object.
fn finalized(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// Removes the object, unless finalizers hold it: then it stays, marked for deletion
/// (`deletionTimestamp` now, grace 0), until an update removes the last finalizer.
fn remove_unless_finalized(current: &Value) -> Write {
    if !finalized(current) {
        return Write::Remove;
    }
    let mut next = current.clone();
    let meta = metadata_mut(&mut next);
    if !meta.contains_key("deletionTimestamp") {
        meta.insert("deletionTimestamp".into(), json!(format_time(unix_now())));
    }
    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
    if next == *current {
        Write::Keep
    } else {
        Write::Put(next)
    }
}

/// The pod strategy's `CheckGracefulDelete`: the requested grace, else the pod's
/// `terminationGracePeriodSeconds`; 0 for unscheduled and finished pods.
fn pod_grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let period = requested
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(0);
    let phase = str_at(pod, "/status/phase");
    if str_at(pod, "/spec/nodeName").is_empty() || phase == "Succeeded" || phase == "Failed" {
        return 0;
    }
    period.max(0)
}

fn check_delete_preconditions(
    resource: Resource,
    current: &Value,
    options: &DeleteOptions,
) -> Result<(), ApiError> {
    let name = str_at(current, "/metadata/name");
    let checks = [
        ("UID", "uid", &options.uid),
        (
            "ResourceVersion",
            "resourceVersion",
            &options.resource_version,
        ),
    ];
    for (label, field, wanted) in checks {
        let actual = str_at(current, &format!("/metadata/{field}"));
        if let Some(wanted) = wanted.as_deref().filter(|w| *w != actual) {
            return Err(ApiError::conflict(
                resource,
                name,
                &format!("Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {actual}"),
            ));
        }
    }
    Ok(())
}
