//! JSON merge patch (RFC 7386): applying a patch to a document, and computing the patch that
//! turns one document into another. Pure functions on `serde_json::Value`, used by the fake API
//! client, the API server test double and the status manager (which sends the diff of two pod
//! statuses as `application/merge-patch+json`).

use serde_json::{Map, Value};

/// Applies `patch` to `target` in place, as RFC 7386 §2 describes: an object patch merges key
/// by key (a `null` value removes the key), anything else replaces the target whole. Arrays are
/// replaced, never merged.
pub fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(patch_fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target_fields) = target {
        for (key, value) in patch_fields {
            if value.is_null() {
                target_fields.remove(key);
            } else {
                apply(
                    target_fields.entry(key.clone()).or_insert(Value::Null),
                    value,
                );
            }
        }
    }
}

/// Returns `target` with `patch` applied, leaving both inputs untouched.
pub fn merged(target: &Value, patch: &Value) -> Value {
    let mut out = target.clone();
    apply(&mut out, patch);
    out
}

/// Computes a merge patch that turns `original` into `modified`: changed and new keys carry
/// their new values, removed keys are `null`, unchanged keys are left out. `None` when the
/// two are equal. When `modified` is not an object (or `original` is not), the patch is
/// `modified` itself.
///
/// A merge patch cannot set a value to `null`; a `null` in `modified` is sent as a removal,
/// which is what the API server does with it anyway.
pub fn diff(original: &Value, modified: &Value) -> Option<Value> {
    if original == modified {
        return None;
    }
    let (Value::Object(old), Value::Object(new)) = (original, modified) else {
        return Some(modified.clone());
    };
    let mut patch = Map::new();
    for (key, old_value) in old {
        match new.get(key) {
            None => {
                patch.insert(key.clone(), Value::Null);
            }
            Some(new_value) => {
                if let Some(sub) = diff(old_value, new_value) {
                    patch.insert(key.clone(), sub);
                }
            }
        }
    }
    for (key, new_value) in new {
        if !old.contains_key(key) {
            patch.insert(key.clone(), strip_nulls(new_value));
        }
    }
    if patch.is_empty() {
        None
    } else {
        Some(Value::Object(patch))
    }
}

/// A new value placed under a key that did not exist: its `null` members mean nothing (there
/// is nothing to remove) and would read as removals, so they are dropped.
fn strip_nulls(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The examples of RFC 7386 appendix A: (original, patch, result).
    #[test]
    fn rfc7386_appendix_a() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (i, (original, patch, want)) in cases.iter().enumerate() {
            assert_eq!(&merged(original, patch), want, "case {i}");
        }
    }

    #[test]
    fn diff_then_apply_round_trips() {
        let cases = [
            (json!({"a":1,"b":{"c":2,"d":3}}), json!({"a":1,"b":{"c":5}})),
            (json!({"a":[1,2]}), json!({"a":[2],"x":{"y":true}})),
            (
                json!({"status":{"phase":"Pending"}}),
                json!({"status":{"phase":"Running","podIP":"10.0.0.1"}}),
            ),
            (json!("s"), json!({"a":1})),
            (json!({"a":1}), json!({})),
        ];
        for (i, (original, modified)) in cases.iter().enumerate() {
            let patch = diff(original, modified).unwrap_or(Value::Null);
            assert_eq!(
                &merged(original, &patch),
                modified,
                "case {i}: patch {patch}"
            );
        }
    }

    #[test]
    fn diff_is_minimal() {
        let original =
            json!({"metadata":{"name":"p"},"status":{"phase":"Pending","conditions":[1]}});
        let modified =
            json!({"metadata":{"name":"p"},"status":{"phase":"Running","conditions":[1]}});
        assert_eq!(
            diff(&original, &modified),
            Some(json!({"status":{"phase":"Running"}}))
        );
        assert_eq!(diff(&original, &original), None);
        assert_eq!(
            diff(&json!({"a":1,"b":2}), &json!({"b":2})),
            Some(json!({"a":null}))
        );
    }

    #[test]
    fn new_keys_drop_null_members() {
        let patch = diff(&json!({}), &json!({"a":{"b":null,"c":1}}));
        assert_eq!(patch, Some(json!({"a":{"c":1}})));
    }
}
