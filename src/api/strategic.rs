//! Strategic merge patch (`application/strategic-merge-patch+json`, upstream
//! `apimachinery/pkg/util/strategicpatch`), for the objects the kubelet patches: pods (status)
//! and nodes (status). Lists declared with a patch merge key (pod and node `conditions` by
//! `type`, `podIPs` by `ip`, ...) are merged element by element, so a condition another
//! component writes between the kubelet's read and its write survives the kubelet's patch.
//!
//! Two pure functions over `serde_json::Value`, both driven by a [`Schema`] that names each
//! list's strategy:
//! - [`two_way`]: the patch that turns one object into another (upstream
//!   `CreateTwoWayMergePatch`), with `$setElementOrder/<list>`, `{"$patch": "delete"}` list
//!   elements, `$deleteFromPrimitiveList/<list>` and `null` for removed map keys;
//! - [`apply`]: what the API server does with such a patch (used by the fake client and the
//!   API server test double), including `{"$patch": "replace"}`, `$retainKeys` and the checks
//!   the server makes on `$setElementOrder`.

use serde_json::{Map, Value};

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// Replaced whole (no patch strategy, or `listType=atomic`).
    Atomic,
    /// A list of objects merged by the value of this key (`patchMergeKey`).
    MergeKey(&'static str),
    /// A list of scalars merged as a set (`patchStrategy=merge` without a key, e.g.
    /// `finalizers`).
    MergePrimitive,
}

/// The strategy of the list at a path of field names from the object's root (list
/// elements add no segment: `["spec", "containers", "env"]`).
pub type Schema = fn(&[&str]) -> ListStrategy;

/// Patch strategies of `metadata`, shared by every kind.
fn metadata_lists(path: &[&str]) -> Option<ListStrategy> {
    match path {
        ["metadata", "ownerReferences"] => Some(ListStrategy::MergeKey("uid")),
        ["metadata", "finalizers"] => Some(ListStrategy::MergePrimitive),
        _ => None,
    }
}

/// The `core/v1` Pod's patch strategies (the list fields that declare a patch merge key).
pub fn pod_schema(path: &[&str]) -> ListStrategy {
    if let Some(s) = metadata_lists(path) {
        return s;
    }
    let containers = |c: &str| matches!(c, "containers" | "initContainers" | "ephemeralContainers");
    match path {
        ["spec", c] if containers(c) => ListStrategy::MergeKey("name"),
        ["spec", c, "ports"] if containers(c) => ListStrategy::MergeKey("containerPort"),
        ["spec", c, "env"] if containers(c) => ListStrategy::MergeKey("name"),
        ["spec", c, "volumeMounts"] if containers(c) => ListStrategy::MergeKey("mountPath"),
        ["spec", c, "volumeDevices"] if containers(c) => ListStrategy::MergeKey("devicePath"),
        ["spec", "volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims"] => {
            ListStrategy::MergeKey("name")
        }
        ["spec", "hostAliases"] => ListStrategy::MergeKey("ip"),
        ["status", "conditions"] => ListStrategy::MergeKey("type"),
        ["status", "podIPs" | "hostIPs"] => ListStrategy::MergeKey("ip"),
        ["status", "resourceClaimStatuses"] => ListStrategy::MergeKey("name"),
        _ => ListStrategy::Atomic,
    }
}

/// The `core/v1` Node's patch strategies.
pub fn node_schema(path: &[&str]) -> ListStrategy {
    if let Some(s) = metadata_lists(path) {
        return s;
    }
    match path {
        ["spec", "podCIDRs"] => ListStrategy::MergePrimitive,
        ["status", "conditions" | "addresses"] => ListStrategy::MergeKey("type"),
        _ => ListStrategy::Atomic,
    }
}

/// Kinds without list strategies of their own beyond `metadata` (events, leases, ...).
pub fn generic_schema(path: &[&str]) -> ListStrategy {
    metadata_lists(path).unwrap_or(ListStrategy::Atomic)
}

/// The schema of a resource by its plural name (`pods`, `nodes`; every other resource has
/// [`generic_schema`]), as both fakes pick it for a patch.
pub fn schema_of(resource: &str) -> Schema {
    match resource {
        "pods" => pod_schema,
        "nodes" => node_schema,
        _ => generic_schema,
    }
}

const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const RETAIN_KEYS: &str = "$retainKeys";
const PATCH: &str = "$patch";

/// Why a patch could not be applied (the API server answers 400 / 422 with this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);

// ---------------------------------------------------------------------------------------
// Creating a patch

/// The strategic merge patch that turns `original` into `modified` (both JSON objects), or
/// `None` when they are equal. Removed map keys are `null`; lists follow `schema`.
pub fn two_way(original: &Value, modified: &Value, schema: Schema) -> Option<Value> {
    match (original, modified) {
        (Value::Object(old), Value::Object(new)) => {
            let patch = diff_maps(old, new, &mut Vec::new(), schema);
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        _ if original == modified => None,
        _ => Some(modified.clone()),
    }
}

fn diff_maps<'a>(
    old: &Map<String, Value>,
    new: &'a Map<String, Value>,
    path: &mut Vec<&'a str>,
    schema: Schema,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, new_value) in new {
        let old_value = old.get(key);
        if old_value == Some(new_value) {
            continue;
        }
        path.push(key);
        match (old_value, new_value) {
            (_, Value::Null) => {
                if old_value.is_some() {
                    out.insert(key.clone(), Value::Null);
                }
            }
            (Some(Value::Object(o)), Value::Object(n)) => {
                let sub = diff_maps(o, n, path, schema);
                if !sub.is_empty() {
                    out.insert(key.clone(), Value::Object(sub));
                }
            }
            (None, Value::Object(n)) => {
                let sub = diff_maps(&Map::new(), n, path, schema);
                out.insert(key.clone(), Value::Object(sub));
            }
            (Some(Value::Array(o)), Value::Array(n)) => {
                diff_lists(key, o, n, path, schema, &mut out)
            }
            (None, Value::Array(n)) => diff_lists(key, &[], n, path, schema, &mut out),
            _ => {
                out.insert(key.clone(), new_value.clone());
            }
        }
        path.pop();
    }
    for key in old.keys() {
        if !new.contains_key(key) {
            out.insert(key.clone(), Value::Null);
        }
    }
    out
}

/// The merge key's value of a list element, when it is an object that has one.
fn key_of<'v>(element: &'v Value, merge_key: &str) -> Option<&'v Value> {
    element.as_object()?.get(merge_key).filter(|v| !v.is_null())
}

fn diff_lists<'a>(
    field: &str,
    old: &[Value],
    new: &'a [Value],
    path: &mut Vec<&'a str>,
    schema: Schema,
    out: &mut Map<String, Value>,
) {
    match schema(path) {
        ListStrategy::Atomic => {
            out.insert(field.to_string(), Value::Array(new.to_vec()));
        }
        ListStrategy::MergePrimitive => {
            let added: Vec<Value> = new.iter().filter(|v| !old.contains(v)).cloned().collect();
            let removed: Vec<Value> = old.iter().filter(|v| !new.contains(v)).cloned().collect();
            if !added.is_empty() {
                out.insert(field.to_string(), Value::Array(added));
            }
            if !removed.is_empty() {
                out.insert(
                    format!("{DELETE_FROM_PRIMITIVE_LIST}{field}"),
                    Value::Array(removed),
                );
            }
            out.insert(
                format!("{SET_ELEMENT_ORDER}{field}"),
                Value::Array(new.to_vec()),
            );
        }
        ListStrategy::MergeKey(merge_key) => {
            let keyed = old
                .iter()
                .chain(new.iter())
                .all(|e| key_of(e, merge_key).is_some());
            if !keyed {
                // Elements without their merge key cannot be merged: the list is sent whole,
                // marked to replace the server's.
                let mut whole = new.to_vec();
                whole.push(serde_json::json!({ PATCH: "replace" }));
                out.insert(field.to_string(), Value::Array(whole));
                return;
            }
            let mut items = Vec::new();
            for element in new {
                let key = key_of(element, merge_key);
                match old.iter().find(|o| key_of(o, merge_key) == key) {
                    Some(o) if o == element => {}
                    Some(o) => {
                        let (Some(o), Some(n)) = (o.as_object(), element.as_object()) else {
                            continue;
                        };
                        let mut sub = diff_maps(o, n, path, schema);
                        sub.insert(merge_key.to_string(), key.cloned().unwrap_or(Value::Null));
                        items.push(Value::Object(sub));
                    }
                    None => items.push(element.clone()),
                }
            }
            for element in old {
                let key = key_of(element, merge_key);
                if !new.iter().any(|n| key_of(n, merge_key) == key) {
                    let mut delete = Map::new();
                    delete.insert(PATCH.into(), Value::String("delete".into()));
                    delete.insert(merge_key.to_string(), key.cloned().unwrap_or(Value::Null));
                    items.push(Value::Object(delete));
                }
            }
            let old_keys: Vec<&Value> = old.iter().filter_map(|o| key_of(o, merge_key)).collect();
            let new_order: Vec<&Value> = new.iter().filter_map(|n| key_of(n, merge_key)).collect();
            let kept_in_old: Vec<&&Value> =
                old_keys.iter().filter(|k| new_order.contains(k)).collect();
            let kept_in_new: Vec<&&Value> =
                new_order.iter().filter(|k| old_keys.contains(k)).collect();
            let reordered = kept_in_old != kept_in_new;
            if items.is_empty() && !reordered {
                return;
            }
            if !items.is_empty() {
                out.insert(field.to_string(), Value::Array(items));
            }
            let order = new_order
                .into_iter()
                .map(|k| {
                    let mut m = Map::new();
                    m.insert(merge_key.to_string(), k.clone());
                    Value::Object(m)
                })
                .collect();
            out.insert(format!("{SET_ELEMENT_ORDER}{field}"), Value::Array(order));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Applying a patch

/// `target` with `patch` applied as the API server applies a strategic merge patch.
pub fn apply(target: &Value, patch: &Value, schema: Schema) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    let base = match target {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut path = Vec::new();
    match apply_map(base, patch, &mut path, schema)? {
        Some(m) => Ok(Value::Object(m)),
        None => Ok(Value::Object(Map::new())),
    }
}

/// Applies a map patch; `None` when the patch deletes the map (`"$patch": "delete"`).
fn apply_map<'a>(
    mut target: Map<String, Value>,
    patch: &'a Map<String, Value>,
    path: &mut Vec<&'a str>,
    schema: Schema,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get(PATCH).map(|v| v.as_str()) {
        None => {}
        Some(Some("delete")) => return Ok(None),
        Some(Some("replace")) => return Ok(Some(without_directives(patch))),
        Some(Some("merge")) => {}
        Some(other) => {
            return Err(PatchError(format!(
                "Unknown patch type: {}",
                other.unwrap_or("<not a string>")
            )))
        }
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let Value::Array(keys) = retain else {
            return Err(PatchError(
                "$retainKeys must be a list of field names".into(),
            ));
        };
        let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        for key in patch.keys().filter(|k| !k.starts_with('$')) {
            if !keys.contains(&key.as_str()) {
                return Err(PatchError(format!(
                    "all fields of the patch must be in $retainKeys, {key:?} is not"
                )));
            }
        }
        target.retain(|k, _| keys.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            let known = key.starts_with(SET_ELEMENT_ORDER)
                || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
                || key == RETAIN_KEYS
                || key == PATCH;
            if !known {
                return Err(PatchError(format!("unknown patch directive {key:?}")));
            }
            continue;
        }
        path.push(key);
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(sub) => {
                let current = match target.remove(key) {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                if let Some(merged) = apply_map(current, sub, path, schema)? {
                    target.insert(key.clone(), Value::Object(merged));
                }
            }
            Value::Array(items) => {
                let current = match target.remove(key) {
                    Some(Value::Array(list)) => list,
                    _ => Vec::new(),
                };
                let merged = apply_list(current, items, path, schema)?;
                target.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                target.insert(key.clone(), scalar.clone());
            }
        }
        path.pop();
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let Value::Array(remove) = value else {
                return Err(PatchError(format!("{key} must be a list")));
            };
            if let Some(Value::Array(list)) = target.get_mut(field) {
                list.retain(|v| !remove.contains(v));
            }
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
            let Value::Array(order) = value else {
                return Err(PatchError(format!("{key} must be a list")));
            };
            path.push(field);
            let strategy = schema(path);
            path.pop();
            check_order(field, order, patch.get(field), strategy)?;
            if let Some(Value::Array(list)) = target.get_mut(field) {
                let merged = std::mem::take(list);
                *list = reorder(merged, order, strategy);
            }
        }
    }
    Ok(Some(target))
}

/// The server's checks of `$setElementOrder`: the patch list's elements (other than
/// deletions) are all named in the order list, in the same relative order.
fn check_order(
    field: &str,
    order: &[Value],
    patch_list: Option<&Value>,
    strategy: ListStrategy,
) -> Result<(), PatchError> {
    let key = |v: &Value| match strategy {
        ListStrategy::MergeKey(k) => key_of(v, k).cloned(),
        _ => Some(v.clone()),
    };
    let order_keys: Vec<Option<Value>> = order.iter().map(key).collect();
    if order_keys.iter().any(Option::is_none) {
        return Err(PatchError(format!(
            "$setElementOrder/{field}: every element must carry the merge key"
        )));
    }
    let Some(Value::Array(items)) = patch_list else {
        return Ok(());
    };
    let mut last = None;
    for item in items {
        if item.get(PATCH).and_then(Value::as_str) == Some("delete") {
            continue;
        }
        let k = key(item);
        let Some(pos) = order_keys.iter().position(|o| *o == k) else {
            return Err(PatchError(format!(
                "error when merging \"{field}\": the patch list has an element that $setElementOrder/{field} does not name"
            )));
        };
        if last.is_some_and(|l| pos < l) {
            return Err(PatchError(format!(
                "error when merging \"{field}\": the relative order of the patch list and $setElementOrder/{field} differ"
            )));
        }
        last = Some(pos);
    }
    Ok(())
}

/// The merged list in the order `$setElementOrder` gives; elements it does not name (the
/// server's own) keep their place relative to each other, after the ordered ones.
fn reorder(list: Vec<Value>, order: &[Value], strategy: ListStrategy) -> Vec<Value> {
    let key = |v: &Value| match strategy {
        ListStrategy::MergeKey(k) => key_of(v, k).cloned(),
        _ => Some(v.clone()),
    };
    let mut rest = list;
    let mut out = Vec::with_capacity(rest.len());
    for o in order {
        let k = key(o);
        if let Some(i) = rest.iter().position(|v| key(v) == k) {
            out.push(rest.remove(i));
        }
    }
    out.extend(rest);
    out
}

fn apply_list<'a>(
    mut current: Vec<Value>,
    items: &'a [Value],
    path: &mut Vec<&'a str>,
    schema: Schema,
) -> Result<Vec<Value>, PatchError> {
    let replace = items
        .iter()
        .any(|i| i.get(PATCH).and_then(Value::as_str) == Some("replace"));
    if replace {
        return Ok(items
            .iter()
            .filter(|i| i.get(PATCH).is_none())
            .cloned()
            .collect());
    }
    match schema(path) {
        ListStrategy::Atomic => Ok(items.to_vec()),
        ListStrategy::MergePrimitive => {
            for item in items {
                if item.is_object() || item.is_array() {
                    return Err(PatchError(format!(
                        "{}: a list of scalars cannot take {item}",
                        path.join(".")
                    )));
                }
                if !current.contains(item) {
                    current.push(item.clone());
                }
            }
            Ok(current)
        }
        ListStrategy::MergeKey(merge_key) => {
            for item in items {
                let Some(fields) = item.as_object() else {
                    return Err(PatchError(format!(
                        "{}: list elements must be objects",
                        path.join(".")
                    )));
                };
                let Some(key) = key_of(item, merge_key) else {
                    return Err(PatchError(format!(
                        "map: {item} does not contain declared merge key: {merge_key}"
                    )));
                };
                let at = current
                    .iter()
                    .position(|c| key_of(c, merge_key) == Some(key));
                match fields.get(PATCH).and_then(Value::as_str) {
                    Some("delete") => {
                        current.retain(|c| key_of(c, merge_key) != Some(key));
                        continue;
                    }
                    Some("replace") => {
                        let element = Value::Object(without_directives(fields));
                        match at {
                            Some(i) => current[i] = element,
                            None => current.push(element),
                        }
                        continue;
                    }
                    _ => {}
                }
                let base = match at {
                    Some(i) => match current[i].take() {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    },
                    None => Map::new(),
                };
                let merged = apply_map(base, fields, path, schema)?;
                match (at, merged) {
                    (Some(i), Some(m)) => current[i] = Value::Object(m),
                    (None, Some(m)) => current.push(Value::Object(m)),
                    (Some(i), None) => {
                        current.remove(i);
                    }
                    (None, None) => {}
                }
            }
            Ok(current)
        }
    }
}

/// A map without its `$` directives (what a `replace` puts in place).
fn without_directives(fields: &Map<String, Value>) -> Map<String, Value> {
    fields
        .iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(kind: &str, status: &str) -> Value {
        json!({"type": kind, "status": status})
    }

    #[test]
    fn condition_change_matches_upstreams_patch() {
        let old = json!({"status": {"conditions": [cond("Ready", "True"), cond("PodScheduled", "True")]}});
        let new = json!({"metadata": {"uid": "myuid"},
            "status": {"conditions": [cond("Ready", "False"), cond("PodScheduled", "True")]}});
        let patch = two_way(&old, &new, pod_schema).unwrap();
        assert_eq!(
            patch,
            json!({"metadata": {"uid": "myuid"}, "status": {
                "$setElementOrder/conditions": [{"type": "Ready"}, {"type": "PodScheduled"}],
                "conditions": [{"status": "False", "type": "Ready"}]}})
        );
    }

    #[test]
    fn unchanged_objects_give_no_patch_and_scalars_and_removals_are_plain() {
        let a = json!({"status": {"phase": "Running", "message": "x"}});
        assert_eq!(two_way(&a, &a, pod_schema), None);
        let b = json!({"status": {"phase": "Failed"}});
        assert_eq!(
            two_way(&a, &b, pod_schema).unwrap(),
            json!({"status": {"phase": "Failed", "message": null}})
        );
    }

    #[test]
    fn a_condition_written_by_someone_else_survives() {
        // The kubelet read the pod before the load balancer wrote its condition.
        let read = json!({"status": {"conditions": [cond("Ready", "False")]}});
        let ours = json!({"status": {"conditions": [cond("Ready", "True")]}});
        let patch = two_way(&read, &ours, pod_schema).unwrap();
        let server = json!({"status": {"conditions": [cond("Ready", "False"), cond("lb.example/ready", "True")]}});
        let after = apply(&server, &patch, pod_schema).unwrap();
        assert_eq!(
            after["status"]["conditions"],
            json!([cond("Ready", "True"), cond("lb.example/ready", "True")])
        );
    }

    #[test]
    fn removed_elements_are_deleted_by_key_and_new_ones_added() {
        let old = json!({"status": {"podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}});
        let new = json!({"status": {"podIPs": [{"ip": "10.0.0.2"}]}});
        let patch = two_way(&old, &new, pod_schema).unwrap();
        assert_eq!(
            patch["status"]["podIPs"],
            json!([{"ip": "10.0.0.2"}, {"$patch": "delete", "ip": "10.0.0.1"}, {"$patch": "delete", "ip": "fd00::1"}])
        );
        assert_eq!(apply(&old, &patch, pod_schema).unwrap(), new);
    }

    #[test]
    fn atomic_lists_are_replaced() {
        let old = json!({"status": {"containerStatuses": [{"name": "a", "ready": false}, {"name": "b"}]}});
        let new = json!({"status": {"containerStatuses": [{"name": "a", "ready": true}]}});
        let patch = two_way(&old, &new, pod_schema).unwrap();
        assert_eq!(patch, new);
        assert_eq!(apply(&old, &patch, pod_schema).unwrap(), new);
    }

    #[test]
    fn diff_then_apply_round_trips() {
        let cases = [
            (
                json!({}),
                json!({"status": {"conditions": [cond("A", "True")], "phase": "P"}}),
            ),
            (
                json!({"status": {"conditions": [cond("A", "True"), cond("B", "False")]}}),
                json!({"status": {"conditions": [cond("B", "True"), cond("A", "True")]}}),
            ),
            (
                json!({"metadata": {"finalizers": ["a", "b"]}, "status": {"x": {"y": 1}}}),
                json!({"metadata": {"finalizers": ["b", "c"]}, "status": {"x": {"z": 2}}}),
            ),
            (
                json!({"status": {"conditions": [cond("A", "True")]}}),
                json!({"status": {"conditions": []}}),
            ),
        ];
        for (old, new) in cases {
            let patch = two_way(&old, &new, pod_schema).unwrap();
            assert_eq!(apply(&old, &patch, pod_schema).unwrap(), new, "{patch}");
        }
    }

    #[test]
    fn lists_whose_elements_lack_their_merge_key_replace_the_servers() {
        let old = json!({"status": {"conditions": [{"status": "True"}]}});
        let new = json!({"status": {"conditions": [{"status": "False"}, {"status": "True"}]}});
        let patch = two_way(&old, &new, pod_schema).unwrap();
        assert_eq!(
            patch["status"]["conditions"].as_array().unwrap().last(),
            Some(&json!({"$patch": "replace"}))
        );
        assert_eq!(apply(&old, &patch, pod_schema).unwrap(), new);
    }

    #[test]
    fn node_addresses_can_be_replaced_whole() {
        let server = json!({"status": {"addresses": [
            {"type": "InternalIP", "address": "10.0.0.1"}, {"type": "InternalIP", "address": "10.0.0.2"}]}});
        let patch = json!({"status": {"addresses": [
            {"type": "InternalIP", "address": "10.0.0.3"}, {"type": "Hostname", "address": "n"},
            {"$patch": "replace"}]}});
        let after = apply(&server, &patch, node_schema).unwrap();
        assert_eq!(
            after["status"]["addresses"],
            json!([{"type": "InternalIP", "address": "10.0.0.3"}, {"type": "Hostname", "address": "n"}])
        );
    }

    #[test]
    fn the_server_rejects_what_upstream_rejects() {
        let server = json!({"status": {"conditions": [cond("A", "True")]}});
        for bad in [
            json!({"status": {"conditions": [{"status": "True"}]}}),
            json!({"status": {"$setElementOrder/conditions": [{"type": "A"}], "conditions": [cond("B", "True")]}}),
            json!({"status": {"$setElementOrder/conditions": [{"type": "A"}, {"type": "B"}],
                "conditions": [cond("B", "True"), cond("A", "False")]}}),
            json!({"status": {"$unknown": 1}}),
            json!({"status": {"$patch": "sideways"}}),
            json!([1]),
        ] {
            assert!(apply(&server, &bad, pod_schema).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_element_order_keeps_the_servers_own_elements() {
        let server = json!({"status": {"conditions": [cond("X", "True"), cond("A", "True"), cond("B", "True")]}});
        let patch =
            json!({"status": {"$setElementOrder/conditions": [{"type": "B"}, {"type": "A"}]}});
        let after = apply(&server, &patch, pod_schema).unwrap();
        assert_eq!(
            after["status"]["conditions"],
            json!([cond("B", "True"), cond("A", "True"), cond("X", "True")])
        );
    }
}
