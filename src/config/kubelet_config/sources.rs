//! Where each value of the layered configuration came from: the `--config` file, a
//! `--config-dir` drop-in or a flag that sets a field. Each source is kept with the fields it
//! set, so an error about a value names the last source that set it, as if that source had
//! been checked alone.

use std::path::PathBuf;

use serde_json::Value;

use super::validate::Attribution;
use crate::config::error::Origin;

/// What set one layer of values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The `--config` file or a drop-in.
    File(PathBuf),
    /// A flag that sets a configuration field (`--eviction-hard`).
    Flag(&'static str),
}

impl Source {
    /// The origin of `field` when this source set it.
    fn origin(&self, field: &str) -> Origin {
        match self {
            Source::File(file) => Origin::File {
                file: file.clone(),
                field: field.to_string(),
            },
            Source::Flag(flag) => Origin::Flag(flag),
        }
    }
}

/// The layers of the configuration in the order they were applied, lowest precedence first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sources {
    /// Each source with the fields it set, as a JSON document (a field it left alone is
    /// absent).
    layers: Vec<(Source, Value)>,
}

impl Sources {
    /// Records that `source` set the fields of `doc`, over every earlier layer.
    pub fn push(&mut self, source: Source, doc: Value) {
        self.layers.push((source, doc));
    }

    /// The sources in the order they were applied.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.layers.iter().map(|(source, _)| source)
    }
}

impl Attribution for Sources {
    /// The last source that set `field` or one of `related`; a value no source set comes
    /// from the defaults, and is charged to the first source (the `--config` file when given).
    fn origin(&self, field: &str, related: &[&str]) -> Origin {
        let last = self
            .layers
            .iter()
            .rev()
            .find(|(_, doc)| std::iter::once(&field).chain(related).any(|f| sets(doc, f)))
            .map(|(source, _)| source);
        match last.or_else(|| self.sources().next()) {
            Some(source) => source.origin(field),
            None => Origin::File {
                file: PathBuf::new(),
                field: field.to_string(),
            },
        }
    }
}

/// Whether `doc` holds a value at `field`: a dotted path of keys, where a list index
/// (`clusterDNS[1]`) stands for the whole list, which a later source replaces as a whole.
fn sets(doc: &Value, field: &str) -> bool {
    let path = field.split('[').next().unwrap_or(field);
    let mut value = doc;
    for key in path.split('.') {
        match value.get(key) {
            Some(next) if !next.is_null() => value = next,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use serde_json::json;

    use super::*;

    fn file(name: &str, field: &str) -> Origin {
        Origin::File {
            file: PathBuf::from(name),
            field: field.to_string(),
        }
    }

    #[test]
    fn the_last_source_that_set_a_field_is_named() {
        let mut sources = Sources::default();
        sources.push(
            Source::File("/etc/k.yaml".into()),
            json!({"maxPods": 10, "authentication": {"x509": {}, "webhook": {"enabled": true}}}),
        );
        sources.push(
            Source::File("/etc/k.d/10.conf".into()),
            json!({"clusterDNS": ["10.0.0.10"], "authentication": {"webhook": {"cacheTTL": "1m"}}}),
        );
        sources.push(
            Source::Flag("--image-gc-high-threshold"),
            json!({"imageGCHighThresholdPercent": 50}),
        );
        let cases = [
            ("maxPods", file("/etc/k.yaml", "maxPods")),
            ("clusterDNS[1]", file("/etc/k.d/10.conf", "clusterDNS[1]")),
            (
                "authentication.webhook.enabled",
                file("/etc/k.yaml", "authentication.webhook.enabled"),
            ),
            (
                "authentication.webhook.cacheTTL",
                file("/etc/k.d/10.conf", "authentication.webhook.cacheTTL"),
            ),
            (
                "imageGCHighThresholdPercent",
                Origin::Flag("--image-gc-high-threshold"),
            ),
            // Set by no source: a default, charged to the --config file.
            (
                "authentication.x509.clientCAFile",
                file("/etc/k.yaml", "authentication.x509.clientCAFile"),
            ),
        ];
        for (field, want) in cases {
            assert_eq!(sources.origin(field, &[]), want, "{field}");
        }
        // A default made invalid by a related value is charged to that value's source.
        assert_eq!(
            sources.origin(
                "imageGCLowThresholdPercent",
                &["imageGCHighThresholdPercent"]
            ),
            Origin::Flag("--image-gc-high-threshold")
        );
        assert_eq!(
            Sources::default().origin("maxPods", &[]),
            file("", "maxPods")
        );
    }
}
