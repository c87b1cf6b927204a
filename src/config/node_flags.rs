//! The flags that shape the Node the kubelet registers, parsed and checked as upstream:
//! `--node-labels` (a `k=v,...` map; keys under `kubernetes.io` and `k8s.io` only where a
//! kubelet may set them) and `--register-with-taints` (`key=value:Effect,...`).

use std::collections::BTreeMap;
use std::str::FromStr;

use super::kubelet_config::Taint;

/// Label keys in the `kubernetes.io`/`k8s.io` namespaces a kubelet may set on its own Node
/// (upstream `KubeletLabels`); the NodeRestriction admission plugin refuses the others.
pub const KUBELET_LABELS: &[&str] = &[
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "kubernetes.io/arch",
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

/// Label namespaces a kubelet may use freely (upstream `KubeletLabelNamespaces`).
pub const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// The taint an external cloud provider removes once it has initialised the node.
pub const TAINT_EXTERNAL_CLOUD_PROVIDER: &str = "node.cloudprovider.kubernetes.io/uninitialized";

/// One `--node-labels` value: comma-separated `key=value` items (a bare key has an empty
/// value), trimmed, empty items skipped. Repeated flags add to each other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelMap(pub BTreeMap<String, String>);

impl FromStr for LabelMap {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let labels = s
            .split(',')
            .filter(|item| !item.trim().is_empty())
            .map(|item| {
                let (key, value) = item.split_once('=').unwrap_or((item, ""));
                (key.trim().to_string(), value.trim().to_string())
            })
            .collect();
        Ok(LabelMap(labels))
    }
}

/// One `--register-with-taints` value: comma-separated `key=value:Effect`, `key:Effect`
/// items. A later flag replaces an earlier one, as upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaintList(pub Vec<Taint>);

impl FromStr for TaintList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut taints: Vec<Taint> = Vec::new();
        for spec in s.split(',').filter(|spec| !spec.is_empty()) {
            // A removal (`key-`, `key:Effect-`) means nothing at registration: dropped.
            if spec.ends_with('-') {
                continue;
            }
            let taint = parse_taint(spec)?;
            if taints
                .iter()
                .any(|t| t.key == taint.key && t.effect == taint.effect)
            {
                return Err(format!(
                    "duplicated taints with the same key and effect: {spec}"
                ));
            }
            taints.push(taint);
        }
        Ok(TaintList(taints))
    }
}

/// `key[=value]:Effect`.
fn parse_taint(spec: &str) -> Result<Taint, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (key_value, effect) = match parts.as_slice() {
        [_] => return Err(format!("invalid taint spec: {spec}")),
        [key_value, effect] => (*key_value, *effect),
        _ => return Err(format!("invalid taint spec: {spec}")),
    };
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return Err(format!(
            "invalid taint effect: {effect}, unsupported taint effect"
        ));
    }
    let pieces: Vec<&str> = key_value.split('=').collect();
    let (key, value) = match pieces.as_slice() {
        [key] => (*key, None),
        [key, value] => (*key, Some(*value)),
        _ => return Err(format!("invalid taint spec: {spec}")),
    };
    if let Some(value) = value {
        label_value_problem(value)
            .map_or(Ok(()), |e| Err(format!("invalid taint spec: {spec}, {e}")))?;
    }
    qualified_name_problem(key)
        .map_or(Ok(()), |e| Err(format!("invalid taint spec: {spec}, {e}")))?;
    Ok(Taint {
        key: key.to_string(),
        value: value.map(str::to_string),
        effect: effect.to_string(),
        time_added: None,
    })
}

/// Upstream's `ValidateKubeletFlags` check of `--node-labels`: first the keys a kubelet may
/// not set on itself, then the syntax of every key and value.
pub fn check_node_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    let unknown: Vec<&str> = labels
        .keys()
        .map(String::as_str)
        .filter(|key| is_kubernetes_label(key) && !is_kubelet_label(key))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: [{}]\n\
             --node-labels in the 'kubernetes.io' namespace must begin with an allowed prefix \
             ({}) or be in the specifically allowed set ({})",
            unknown.join(" "),
            KUBELET_LABEL_NAMESPACES.join(", "),
            KUBELET_LABELS.join(", ")
        ));
    }
    let mut invalid = Vec::new();
    for (key, value) in labels {
        if let Some(e) = qualified_name_problem(key) {
            invalid.push(format!("'{key}' - {e}"));
        }
        if let Some(e) = label_value_problem(value) {
            invalid.push(format!("'{value}' - {e}"));
        }
    }
    if invalid.is_empty() {
        Ok(())
    } else {
        Err(format!("invalid node labels: {}", invalid.join("; ")))
    }
}

fn prefix_of(key: &str) -> &str {
    key.split_once('/').map_or("", |(prefix, _)| prefix)
}

fn in_namespace(prefix: &str, namespace: &str) -> bool {
    prefix == namespace || prefix.ends_with(&format!(".{namespace}"))
}

fn is_kubernetes_label(key: &str) -> bool {
    let prefix = prefix_of(key);
    in_namespace(prefix, "kubernetes.io") || in_namespace(prefix, "k8s.io")
}

fn is_kubelet_label(key: &str) -> bool {
    KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|namespace| in_namespace(prefix_of(key), namespace))
}

/// Why `name` is not a qualified name (`[prefix/]name`: a DNS subdomain prefix, and a name
/// of at most 63 alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric).
pub(crate) fn qualified_name_problem(name: &str) -> Option<String> {
    let (prefix, local) = match name.split_once('/') {
        Some((prefix, local)) => (Some(prefix), local),
        None => (None, name),
    };
    if local.contains('/') {
        return Some(
            "a qualified name must consist of a name with an optional DNS subdomain prefix and '/'"
                .into(),
        );
    }
    if let Some(prefix) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(label_ok) {
            return Some(format!(
                "prefix part {prefix:?} must be a lowercase DNS subdomain"
            ));
        }
    }
    if local.is_empty() {
        return Some("name part must be non-empty".into());
    }
    name_part_problem(local, "name part")
}

/// Why `value` is not a label value (empty, or a name part as above).
fn label_value_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    name_part_problem(value, "a valid label")
}

fn name_part_problem(s: &str, what: &str) -> Option<String> {
    if s.len() > 63 {
        return Some(format!("{what} must be no more than 63 characters"));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let chars_ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !chars_ok || !edge_ok(s.chars().next()) || !edge_ok(s.chars().last()) {
        return Some(format!(
            "{what} must consist of alphanumeric characters, '-', '_' or '.', and must start \
             and end with an alphanumeric character"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(s: &str) -> BTreeMap<String, String> {
        s.parse::<LabelMap>().unwrap().0
    }

    #[test]
    fn node_labels_parse_as_upstreams_configuration_map() {
        let l = labels(" a=1 ,,b, c = x=y ,node.kubernetes.io/pool=blue");
        assert_eq!(l["a"], "1");
        assert_eq!(l["b"], "");
        assert_eq!(l["c"], "x=y");
        assert_eq!(l["node.kubernetes.io/pool"], "blue");
        assert!(check_node_labels(&l).is_err(), "x=y is no label value");
        let ok = labels("team=db,kubelet.kubernetes.io/x=1,sub.node.kubernetes.io/y=2,example.com/z=3,topology.kubernetes.io/zone=a");
        assert_eq!(check_node_labels(&ok), Ok(()));
    }

    #[test]
    fn a_kubelet_may_not_label_itself_a_role() {
        let err = check_node_labels(&labels(
            "node-role.kubernetes.io/worker=,k8s.io/x=1,a.k8s.io/y=2",
        ))
        .unwrap_err();
        assert!(
            err.starts_with(
                "unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: \
                 [a.k8s.io/y k8s.io/x node-role.kubernetes.io/worker]"
            ),
            "{err}"
        );
        assert!(
            err.contains("(kubelet.kubernetes.io, node.kubernetes.io)"),
            "{err}"
        );
        let err = check_node_labels(&labels("Bad_Prefix.com/x=1,ok=-bad")).unwrap_err();
        assert!(err.starts_with("invalid node labels: "), "{err}");
        assert!(
            err.contains("'Bad_Prefix.com/x'") && err.contains("'-bad'"),
            "{err}"
        );
    }

    #[test]
    fn taints_parse_as_upstream() {
        let TaintList(t) = "dedicated=db:NoSchedule,gpu:NoExecute,old-:NoSchedule-"
            .parse()
            .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (
                t[0].key.as_str(),
                t[0].value.as_deref(),
                t[0].effect.as_str()
            ),
            ("dedicated", Some("db"), "NoSchedule")
        );
        assert_eq!((t[1].key.as_str(), t[1].value.as_deref()), ("gpu", None));
        assert_eq!("".parse::<TaintList>().unwrap().0, Vec::new());
        for (bad, want) in [
            (
                "foo=bar:Bogus",
                "invalid taint effect: Bogus, unsupported taint effect",
            ),
            ("foo=bar", "invalid taint spec: foo=bar"),
            ("a:b:NoSchedule", "invalid taint spec: a:b:NoSchedule"),
            ("a=b=c:NoSchedule", "invalid taint spec: a=b=c:NoSchedule"),
            (
                "a:NoSchedule,a=x:NoSchedule",
                "duplicated taints with the same key and effect",
            ),
            (
                "bad key:NoSchedule",
                "invalid taint spec: bad key:NoSchedule, ",
            ),
        ] {
            let err = bad.parse::<TaintList>().unwrap_err();
            assert!(err.starts_with(want), "{bad}: {err}");
        }
    }
}

/// An eviction threshold flag's value (upstream's "LangleSeparatedMapStringString"):
/// `memory.available<100Mi,nodefs.available<10%`. The flag replaces the whole setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdMap(pub BTreeMap<String, String>);

impl FromStr for ThresholdMap {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        separated_map(s, '<').map(ThresholdMap)
    }
}

/// A `signal=value` flag's value (`memory.available=1m30s,nodefs.available=2m`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalMap(pub BTreeMap<String, String>);

impl FromStr for SignalMap {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        separated_map(s, '=').map(SignalMap)
    }
}

fn separated_map(s: &str, separator: char) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| {
            let (key, value) = item.split_once(separator).ok_or_else(|| {
                format!("malformed pair, expect string{separator}string: {item:?}")
            })?;
            Ok((key.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}
