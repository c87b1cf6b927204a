//! Typed decoding through a `serde_json::Value`, with the path of the field at fault.
//!
//! The kubelet decodes Kubernetes objects from API responses, watch events, manifests and
//! its configuration file. serde compiles a type's decoder once per input format, and the
//! decoders of `Pod` and its parts alone are hundreds of KiB of code, which the kernel keeps
//! resident once touched. So every format is first read into a `Value` (syntax errors keep
//! their line and column), and typed decoding happens from that one deserializer.
//!
//! serde's errors from a `Value` carry no position. On failure, [`from_value`] finds the
//! field at fault after the fact: it walks down the document, at each level looking for the
//! one child whose removal changes the error, and reports the path to it
//! (`spec.containers[0].ports[0].containerPort: invalid type: ...`), like upstream's
//! `json: cannot unmarshal ... into Go struct field ...`.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Trial decodes the search for the field at fault may make; past it, the path found so far
/// is reported. A pod's own fields are located well within it, though a fault behind
/// hundreds of labels is reported at the labels.
const MAX_TRIALS: usize = 512;

/// Values all the trials together may decode: each trial decodes the whole document, so a
/// large one (a manifest is up to 10 MiB, and is read again every 20 s) gets fewer trials.
const MAX_TRIAL_VALUES: usize = 1 << 20;

/// A typed decode that failed: serde's message and, when found, the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Field path, e.g. `spec.containers[0].image`; empty for the document itself.
    pub path: String,
    /// serde's message.
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes JSON text as `T`: syntax errors with serde's line and column, type errors with
/// the path of the field (see the module documentation).
pub fn from_slice<T: DeserializeOwned>(json: &[u8]) -> Result<T, DecodeError> {
    let value: Value = serde_json::from_slice(json).map_err(|err| DecodeError {
        path: String::new(),
        message: err.to_string(),
    })?;
    // Decoding consumes the value: to locate a failure the text is read again.
    from_value(value, || {
        serde_json::from_slice(json).unwrap_or(Value::Null)
    })
}

/// Decodes `value` as `T`. `again` gives the same document once more, and is called only
/// when the decode fails, to locate the field at fault.
pub fn from_value<T: DeserializeOwned>(
    value: Value,
    again: impl FnOnce() -> Value,
) -> Result<T, DecodeError> {
    match serde_json::from_value(value) {
        Ok(decoded) => Ok(decoded),
        Err(err) => {
            let message = err.to_string();
            let path = locate::<T>(again(), &message);
            Err(DecodeError { path, message })
        }
    }
}

/// One step of a field path.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// The path to the field `T`'s decode fails at (`first` is its message). Descends into the
/// child whose removal makes the decode succeed or fail differently. A required child, whose
/// removal only reports it missing, is emptied instead (`[]`, `{}`, `""`) to tell.
fn locate<T: DeserializeOwned>(document: Value, first: &str) -> String {
    let mut path: Vec<Step> = Vec::new();
    let budget = MAX_TRIALS.min(MAX_TRIAL_VALUES / count_values(&document).max(1));
    let mut trials = 0;
    'descend: loop {
        let children: Vec<Step> = match node(&document, &path) {
            Some(Value::Object(map)) => map.keys().cloned().map(Step::Key).collect(),
            Some(Value::Array(items)) => (0..items.len()).map(Step::Index).collect(),
            _ => break,
        };
        for child in children {
            if trials >= budget {
                break 'descend;
            }
            trials += 1;
            let mut trial = document.clone();
            if let Some(parent) = node_mut(&mut trial, &path) {
                remove(parent, &child);
            }
            let changed = match serde_json::from_value::<T>(trial) {
                Ok(_) => true,
                Err(err) => {
                    let message = err.to_string();
                    if reports_missing(&message, &child) {
                        // A required field: try it emptied instead of removed.
                        trials += 1;
                        let mut trial = document.clone();
                        if let Some(value) =
                            node_mut(&mut trial, &path).and_then(|p| child_mut(p, &child))
                        {
                            empty(value);
                        }
                        match serde_json::from_value::<T>(trial) {
                            Ok(_) => true,
                            Err(err) => {
                                let message = err.to_string();
                                message != first && !message.starts_with("missing field")
                            }
                        }
                    } else {
                        message != first
                    }
                }
            };
            if changed {
                path.push(child);
                continue 'descend;
            }
        }
        break;
    }
    // An unknown field is named by the message: the path is that of its object, as
    // `authentication.x509: unknown field `clientCAFil``.
    if let Some(Step::Key(key)) = path.last() {
        if first.starts_with(&format!("unknown field `{key}`")) {
            path.pop();
        }
    }
    render(&path)
}

/// The number of values in `value`, itself included.
fn count_values(value: &Value) -> usize {
    1 + match value {
        Value::Object(map) => map.values().map(count_values).sum(),
        Value::Array(items) => items.iter().map(count_values).sum(),
        _ => 0,
    }
}

/// Whether `message` is serde's "missing field" error for the field `step` names.
fn reports_missing(message: &str, step: &Step) -> bool {
    match step {
        Step::Key(key) => message == format!("missing field `{key}`"),
        Step::Index(_) => false,
    }
}

fn node<'a>(value: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, step| match step {
        Step::Key(key) => v.get(key.as_str()),
        Step::Index(i) => v.get(*i),
    })
}

fn node_mut<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, step| match step {
        Step::Key(key) => v.get_mut(key.as_str()),
        Step::Index(i) => v.get_mut(*i),
    })
}

fn child_mut<'a>(parent: &'a mut Value, child: &Step) -> Option<&'a mut Value> {
    match child {
        Step::Key(key) => parent.get_mut(key.as_str()),
        Step::Index(i) => parent.get_mut(*i),
    }
}

/// Makes `value` an empty one of its kind: `[]`, `{}` or `""` (other scalars stay).
fn empty(value: &mut Value) {
    match value {
        Value::Array(items) => items.clear(),
        Value::Object(map) => map.clear(),
        Value::String(text) => text.clear(),
        _ => {}
    }
}

fn remove(parent: &mut Value, child: &Step) {
    match (parent, child) {
        (Value::Object(map), Step::Key(key)) => {
            map.remove(key);
        }
        (Value::Array(items), Step::Index(i)) if *i < items.len() => {
            items.remove(*i);
        }
        _ => {}
    }
}

/// `spec.containers[0].image`; keys that are not plain names are quoted
/// (`metadata.labels["app.kubernetes.io/name"]`).
fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Index(i) => out.push_str(&format!("[{i}]")),
            Step::Key(key) if is_plain(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Step::Key(key) => out.push_str(&format!("[{key:?}]")),
        }
    }
    out
}

fn is_plain(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde::Deserialize;
    use serde_json::json;

    fn pod_error(doc: Value) -> String {
        from_value::<Pod>(doc.clone(), || doc)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn decodes_a_valid_document() {
        let pod: Pod = from_slice(br#"{"metadata":{"name":"web"}}"#).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web"));
    }

    #[test]
    fn syntax_errors_keep_their_position() {
        let err = from_slice::<Pod>(b"{\"metadata\":\n{\"name\": }").unwrap_err();
        assert_eq!(err.path, "");
        assert!(err.message.contains("line 2 column"), "{err}");
    }

    #[test]
    fn a_wrong_type_is_reported_with_its_path() {
        let err = pod_error(json!({
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"containers": [
                {"name": "a", "image": "i"},
                {"name": "b", "image": "i", "ports": [{"containerPort": 80}, {"containerPort": "x"}]},
            ]},
        }));
        assert_eq!(
            err,
            "spec.containers[1].ports[1].containerPort: invalid type: string \"x\", expected i32"
        );
    }

    #[test]
    fn a_missing_required_field_points_at_its_object() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Item {
            name: String,
            size: Option<u32>,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct List {
            items: Vec<Item>,
        }
        let doc = json!({"items": [{"name": "a"}, {"size": 3}]});
        let err = from_value::<List>(doc.clone(), || doc).unwrap_err();
        assert_eq!(err.to_string(), "items[1]: missing field `name`");
    }

    #[test]
    fn keys_that_are_not_names_are_quoted() {
        let err = pod_error(json!({"metadata": {"labels": {"app.kubernetes.io/name": 3}}}));
        assert_eq!(
            err,
            "metadata.labels[\"app.kubernetes.io/name\"]: invalid type: integer `3`, expected a string"
        );
    }

    #[test]
    fn unknown_fields_of_a_strict_type_are_named() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            enabled: Option<bool>,
        }
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Outer {
            inner: Option<Inner>,
            count: Option<u32>,
        }
        let doc = json!({"count": 1, "inner": {"enabled": true, "enabld": true}});
        let err = from_value::<Outer>(doc.clone(), || doc).unwrap_err();
        assert_eq!(err.path, "inner");
        assert!(
            err.message.starts_with("unknown field `enabld`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn the_search_stops_after_its_trial_budget() {
        // The label at fault sorts after more labels than there are trials: the search ends
        // at the labels, with serde's message.
        let mut labels = serde_json::Map::new();
        for i in 0..(MAX_TRIALS + 10) {
            labels.insert(format!("l{i:05}"), json!("v"));
        }
        labels.insert("zz".to_string(), json!(3));
        let doc = json!({"metadata": {"labels": labels}});
        let err = from_value::<Pod>(doc.clone(), || doc).unwrap_err();
        assert_eq!(err.path, "metadata.labels");
        assert!(
            err.message.starts_with("invalid type: integer `3`"),
            "{err}"
        );
    }

    #[test]
    fn a_large_document_gets_fewer_trials() {
        // About 400,000 values: two trials, which find `spec` but not `spec.hostNetwork`.
        let containers = vec![json!({"name": "a", "image": "i"}); 1 << 17];
        let doc = json!({"spec": {"containers": containers, "hostNetwork": "yes"}});
        assert_eq!(MAX_TRIAL_VALUES / count_values(&doc), 2);
        let err = from_value::<Pod>(doc.clone(), || doc).unwrap_err();
        assert_eq!(err.path, "spec");
        assert!(err.message.contains("expected a boolean"), "{err}");
    }
}
