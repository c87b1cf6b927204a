//! Decoding pod manifests (upstream `config/common.go`: the decode half of
//! `tryDecodeSinglePod` and `tryDecodePodList`), and the errors every manifest step reports.
//!
//! Pure functions, run on the `source-file` and `source-http` threads. Bytes in YAML or JSON
//! become a [`Manifest`]: one `Pod`, or a `PodList`/`List` of pods. Like upstream the decode is
//! not strict (unknown fields are ignored), but `kind` and `apiVersion: v1` are required, and
//! every error names its origin (the file path or URL) and serde's reason: with line and
//! column for malformed YAML or JSON, with the field's path for a field of the wrong type.

use std::fmt;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::util::decode::{self, DecodeError};

/// Largest manifest read from a file or a URL (upstream `maxConfigLength`, 10 MiB).
pub const MAX_MANIFEST_BYTES: usize = 10 << 20;

/// Where a manifest came from. Part of a static pod's UID, and of every error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestSource {
    /// A file under `--pod-manifest-path` (or that path itself).
    File(PathBuf),
    /// The `--manifest-url`.
    Url(String),
}

impl ManifestSource {
    /// The value of the `kubernetes.io/config.source` annotation: `file` or `http`.
    pub fn config_source(&self) -> &'static str {
        match self {
            ManifestSource::File(_) => crate::config::update::FILE_SOURCE,
            ManifestSource::Url(_) => crate::config::update::HTTP_SOURCE,
        }
    }
}

impl fmt::Display for ManifestSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestSource::File(path) => write!(f, "{}", path.display()),
            ManifestSource::Url(url) => f.write_str(url),
        }
    }
}

/// Why a manifest yields no pod. Each variant names the file or URL it came from.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// More than [`MAX_MANIFEST_BYTES`].
    #[error("{origin}: manifest is larger than {limit} bytes")]
    TooLarge {
        /// File or URL.
        origin: ManifestSource,
        /// The limit in bytes.
        limit: usize,
    },
    /// No document at all (empty, or only whitespace and comments).
    #[error("{origin}: manifest is empty")]
    Empty {
        /// File or URL.
        origin: ManifestSource,
    },
    /// Malformed YAML.
    #[error("{origin}: couldn't parse as pod: {source}")]
    Yaml {
        /// File or URL.
        origin: ManifestSource,
        /// serde's message, with line and column.
        source: serde_yaml_ng::Error,
    },
    /// Malformed JSON (a document starting with `{`).
    #[error("{origin}: couldn't parse as pod: {source}")]
    Json {
        /// File or URL.
        origin: ManifestSource,
        /// serde's message, with line and column.
        source: serde_json::Error,
    },
    /// A well-formed document with a field of the wrong type, or a required field missing.
    #[error("{origin}: couldn't parse as pod: {source}")]
    Decode {
        /// File or URL.
        origin: ManifestSource,
        /// serde's message and the path of the field.
        source: DecodeError,
    },
    /// `kind` is missing.
    #[error("{origin}: Object 'Kind' is missing")]
    MissingKind {
        /// File or URL.
        origin: ManifestSource,
    },
    /// `kind` is not one this source accepts.
    #[error("{origin}: kind {kind:?} is not supported here, expected {expected}")]
    WrongKind {
        /// File or URL.
        origin: ManifestSource,
        /// The kind found.
        kind: String,
        /// What the source accepts.
        expected: &'static str,
    },
    /// `apiVersion` is not `v1`.
    #[error("{origin}: apiVersion {api_version:?} is not supported, expected \"v1\"")]
    WrongApiVersion {
        /// File or URL.
        origin: ManifestSource,
        /// The apiVersion found (empty when missing).
        api_version: String,
    },
    /// `metadata.name` is empty (checked before the node name is appended).
    #[error("{origin}: invalid pod: name is needed for the pod")]
    MissingName {
        /// File or URL.
        origin: ManifestSource,
    },
    /// The pod could not be serialised to compute its UID (not expected to happen).
    #[error("{origin}: pod {pod:?}: cannot serialise to compute its UID: {source}")]
    Hash {
        /// File or URL.
        origin: ManifestSource,
        /// The pod name from the manifest.
        pod: String,
        /// serde_json's message.
        source: serde_json::Error,
    },
    /// Validation failed; every problem is listed with its field path.
    #[error("{origin}: invalid pod {pod:?}: {errors}")]
    Invalid {
        /// File or URL.
        origin: ManifestSource,
        /// The pod name after defaulting (`<name>-<node>`).
        pod: String,
        /// The problems, in upstream's order.
        errors: FieldErrors,
    },
}

/// One validation problem, printed like upstream's `field.Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldError {
    /// A required field is empty: `spec.containers: Required value`.
    Required {
        /// Field path, e.g. `spec.containers[0].image`.
        field: String,
    },
    /// A malformed value: `metadata.name: Invalid value: "A": <detail>`.
    Invalid {
        /// Field path.
        field: String,
        /// The value as printed (strings quoted, numbers bare).
        value: String,
        /// What is wrong.
        detail: String,
    },
    /// A value that must be unique: `spec.containers[1].name: Duplicate value: "app"`.
    Duplicate {
        /// Field path.
        field: String,
        /// The repeated value, quoted.
        value: String,
    },
    /// A field that may not be set here: `spec.ephemeralContainers: Forbidden: <detail>`.
    Forbidden {
        /// Field path.
        field: String,
        /// Why.
        detail: &'static str,
    },
    /// A value outside an enumeration.
    NotSupported {
        /// Field path.
        field: String,
        /// The value, quoted.
        value: String,
        /// The accepted values.
        supported: &'static [&'static str],
    },
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::Required { field } => write!(f, "{field}: Required value"),
            FieldError::Invalid {
                field,
                value,
                detail,
            } => write!(f, "{field}: Invalid value: {value}: {detail}"),
            FieldError::Duplicate { field, value } => {
                write!(f, "{field}: Duplicate value: {value}")
            }
            FieldError::Forbidden { field, detail } => write!(f, "{field}: Forbidden: {detail}"),
            FieldError::NotSupported {
                field,
                value,
                supported,
            } => {
                let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
                write!(
                    f,
                    "{field}: Unsupported value: {value}: supported values: {}",
                    quoted.join(", ")
                )
            }
        }
    }
}

/// A list of [`FieldError`]s, printed like upstream's aggregate: one alone, several in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        match parts.as_slice() {
            [one] => f.write_str(one),
            _ => write!(f, "[{}]", parts.join(", ")),
        }
    }
}

/// A decoded manifest, before any defaulting.
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    /// `kind: Pod`.
    Pod(Box<Pod>),
    /// `kind: PodList`, or `kind: List` whose items are all pods.
    List(Vec<Pod>),
}

/// Just enough of a document to choose what to decode it as.
#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
}

/// `PodList` and `List`: only the items matter to a kubelet.
#[derive(Deserialize)]
struct ListDoc {
    #[serde(default)]
    items: Vec<Pod>,
}

/// Decodes one manifest document (YAML, or JSON when it starts with `{`).
pub fn decode_manifest(data: &[u8], origin: &ManifestSource) -> Result<Manifest, ManifestError> {
    if data.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge {
            origin: origin.clone(),
            limit: MAX_MANIFEST_BYTES,
        });
    }
    let Some(mut document) = read_document(data, origin)? else {
        return Err(ManifestError::Empty {
            origin: origin.clone(),
        });
    };
    // Only the two fields, so that a `kind` or `apiVersion` of the wrong type is named.
    let head = match &document {
        Value::Object(map) => Value::Object(
            ["kind", "apiVersion"]
                .into_iter()
                .filter_map(|key| Some((key.to_string(), map.get(key)?.clone())))
                .collect(),
        ),
        other => other.clone(),
    };
    let meta: TypeMeta =
        decode::from_value(head.clone(), || head).map_err(|source| ManifestError::Decode {
            origin: origin.clone(),
            source,
        })?;
    let Some(kind) = meta.kind.filter(|k| !k.is_empty()) else {
        return Err(ManifestError::MissingKind {
            origin: origin.clone(),
        });
    };
    let api_version = meta.api_version.unwrap_or_default();
    if api_version != "v1" {
        return Err(ManifestError::WrongApiVersion {
            origin: origin.clone(),
            api_version,
        });
    }
    // Numbers in quantities (`cpu: 1`, `memory: 1e3`) become the strings upstream's
    // `Quantity` reads them as.
    quantities_to_strings(&mut document);
    // Decoding consumes the document: to locate a failure, it is read again.
    let again = || {
        let mut document = read_document(data, origin)
            .ok()
            .flatten()
            .unwrap_or_default();
        quantities_to_strings(&mut document);
        document
    };
    match kind.as_str() {
        "Pod" => Ok(Manifest::Pod(Box::new(decode_typed(
            document, again, origin,
        )?))),
        "PodList" | "List" => {
            let list: ListDoc = decode_typed(document, again, origin)?;
            Ok(Manifest::List(list.items))
        }
        _ => Err(ManifestError::WrongKind {
            origin: origin.clone(),
            kind,
            expected: "Pod, PodList or List",
        }),
    }
}

/// Reads `data` into a document: JSON when its first non-blank byte is `{`, YAML otherwise
/// (as upstream, which turns YAML into JSON before decoding). Syntax errors keep serde's line
/// and column. `None` when there is no document (empty, or only comments).
fn read_document(data: &[u8], origin: &ManifestSource) -> Result<Option<Value>, ManifestError> {
    let is_json = data
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if is_json {
        serde_json::from_slice(data).map_err(|source| ManifestError::Json {
            origin: origin.clone(),
            source,
        })
    } else {
        serde_yaml_ng::from_slice(data).map_err(|source| ManifestError::Yaml {
            origin: origin.clone(),
            source,
        })
    }
}

/// Decodes the document as `T`; a field of the wrong type is reported with its path.
fn decode_typed<T: DeserializeOwned>(
    document: Value,
    again: impl FnOnce() -> Value,
    origin: &ManifestSource,
) -> Result<T, ManifestError> {
    decode::from_value(document, again).map_err(|source| ManifestError::Decode {
        origin: origin.clone(),
        source,
    })
}

/// Turns numbers into strings in quantity maps (`limits`, `requests`, `overhead`) and in
/// `sizeLimit`, anywhere in the document.
fn quantities_to_strings(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match (key.as_str(), &mut *child) {
                    ("limits" | "requests" | "overhead", Value::Object(list)) => {
                        for quantity in list.values_mut() {
                            number_to_string(quantity);
                        }
                    }
                    ("sizeLimit", quantity) => number_to_string(quantity),
                    _ => quantities_to_strings(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(quantities_to_strings),
        _ => {}
    }
}

fn number_to_string(value: &mut serde_json::Value) {
    if let serde_json::Value::Number(n) = value {
        *value = serde_json::Value::String(n.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> ManifestSource {
        ManifestSource::File(PathBuf::from("/etc/kubernetes/manifests/web.yaml"))
    }

    const POD_YAML: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
  someFutureField: ignored
spec:
  containers:
  - name: app
    image: nginx:1.27
    resources:
      limits: {cpu: 1, memory: 128974848}
";

    #[test]
    fn decodes_a_yaml_pod_ignoring_unknown_fields_and_numeric_quantities() {
        let Manifest::Pod(pod) = decode_manifest(POD_YAML.as_bytes(), &origin()).unwrap() else {
            panic!("expected a pod");
        };
        assert_eq!(pod.metadata.name.as_deref(), Some("web"));
        let spec = pod.spec.unwrap();
        let limits = spec.containers[0]
            .resources
            .clone()
            .unwrap()
            .limits
            .unwrap();
        assert_eq!(limits["cpu"].0, "1");
        assert_eq!(limits["memory"].0, "128974848");
    }

    #[test]
    fn decodes_json_pod_list_and_list() {
        let json = r#"{"apiVersion":"v1","kind":"PodList","items":[
            {"metadata":{"name":"a"},"spec":{"containers":[{"name":"c","image":"i"}]}},
            {"metadata":{"name":"b"},"spec":{"containers":[{"name":"c","image":"i"}]}}]}"#;
        let Manifest::List(pods) = decode_manifest(json.as_bytes(), &origin()).unwrap() else {
            panic!("expected a list");
        };
        assert_eq!(pods.len(), 2);
        let yaml = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  \
                    metadata: {name: a}\n  spec: {containers: [{name: c, image: i}]}\n";
        let Manifest::List(pods) = decode_manifest(yaml.as_bytes(), &origin()).unwrap() else {
            panic!("expected a list");
        };
        assert_eq!(pods[0].metadata.name.as_deref(), Some("a"));
    }

    #[test]
    fn decode_errors_name_the_origin_and_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "manifest is empty"),
            ("# only a comment\n", "manifest is empty"),
            (
                "apiVersion: v1\nmetadata: {name: a}\n",
                "Object 'Kind' is missing",
            ),
            (
                "apiVersion: v2\nkind: Pod\n",
                "apiVersion \"v2\" is not supported",
            ),
            ("kind: Pod\n", "apiVersion \"\" is not supported"),
            (
                "apiVersion: v1\nkind: Service\n",
                "kind \"Service\" is not supported",
            ),
            ("apiVersion: v1\nkind: Pod\nspec: [\n", "at line 4 column 1"),
            (
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [a]\n",
                "couldn't parse as pod: metadata.name: invalid type: sequence, expected a string",
            ),
            (
                "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n    image: i\n    \
                 ports:\n    - containerPort: http\n",
                "spec.containers[0].ports[0].containerPort: invalid type: string \"http\", expected i32",
            ),
            (
                "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"spec\": {\"hostNetwork\": 1}}",
                "spec.hostNetwork: invalid type: integer `1`, expected a boolean",
            ),
            ("apiVersion: 1\nkind: Pod\n", "apiVersion: invalid type: integer `1`"),
            (
                "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {labels: {a: 1}}}\n",
                "items[0].metadata.labels.a: invalid type: integer `1`, expected a string",
            ),
            (
                "{\"apiVersion\": \"v1\", \"kind\": \"Pod\",}",
                "line 1 column",
            ),
            (
                "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service}\n",
                "expected Pod",
            ),
        ];
        for (input, want) in cases {
            let err = decode_manifest(input.as_bytes(), &origin())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("/etc/kubernetes/manifests/web.yaml: "),
                "{input:?}: {err}"
            );
            assert!(err.contains(want), "{input:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn too_large_is_rejected_before_parsing() {
        let data = vec![b' '; MAX_MANIFEST_BYTES + 1];
        let err = decode_manifest(&data, &origin()).unwrap_err();
        assert!(matches!(err, ManifestError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn field_errors_print_like_upstream() {
        let errors = FieldErrors(vec![
            FieldError::Required {
                field: "spec.containers".into(),
            },
            FieldError::Duplicate {
                field: "spec.containers[1].name".into(),
                value: "\"app\"".into(),
            },
            FieldError::NotSupported {
                field: "spec.restartPolicy".into(),
                value: "\"Sometimes\"".into(),
                supported: &["Always", "Never"],
            },
        ]);
        assert_eq!(
            errors.to_string(),
            "[spec.containers: Required value, spec.containers[1].name: Duplicate value: \
             \"app\", spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \
             \"Always\", \"Never\"]"
        );
        assert_eq!(
            FieldErrors(errors.0[..1].to_vec()).to_string(),
            "spec.containers: Required value"
        );
    }
}
