//! Field and label selectors as the API server evaluates them for lists and watches, for the
//! in-memory fakes (the fake client, the API server test double). Pure functions.
//!
//! Field selectors: comma-separated `path=value`, `path==value`, `path!=value`, where `path`
//! is a dotted JSON path (`spec.nodeName`, `metadata.namespace`); a missing field reads as "".
//! Label selectors: comma-separated `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
//! `k`, `!k`.

use std::collections::BTreeMap;

use serde_json::Value;

/// Whether `object` (as JSON) satisfies every term of the field selector. An empty selector
/// matches everything; a term that does not parse matches nothing.
pub fn matches_fields(object: &Value, selector: &str) -> bool {
    terms(selector).all(|term| {
        let Some((path, equal, want)) = equality(term) else {
            return false;
        };
        let pointer = format!("/{}", path.replace('.', "/"));
        let have = match object.pointer(&pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        (have == want) == equal
    })
}

/// Whether `labels` satisfy every term of the label selector. An empty selector matches
/// everything; a term that does not parse matches nothing.
pub fn matches_labels(labels: &BTreeMap<String, String>, selector: &str) -> bool {
    terms(selector).all(|term| {
        if let Some((key, op, values)) = set_term(term) {
            let found = labels
                .get(key)
                .is_some_and(|v| values.contains(&v.as_str()));
            return if op == "in" { found } else { !found };
        }
        if let Some((key, equal, want)) = equality(term) {
            let found = labels.get(key).is_some_and(|v| v == want);
            return found == equal;
        }
        match term.strip_prefix('!') {
            Some(key) => !labels.contains_key(key.trim()),
            None => is_key(term) && labels.contains_key(term),
        }
    })
}

/// The selector's terms: split at commas outside parentheses, trimmed, empty ones dropped.
fn terms(selector: &str) -> impl Iterator<Item = &str> {
    let mut depth = 0i32;
    selector
        .split(move |c| {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            c == ',' && depth == 0
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// `key=value`, `key==value` or `key!=value` → (key, is-equality, value).
fn equality(term: &str) -> Option<(&str, bool, &str)> {
    let (key, equal, value) = match term.split_once("!=") {
        Some((k, v)) => (k, false, v),
        None => {
            let (k, v) = term.split_once('=')?;
            (k, true, v.strip_prefix('=').unwrap_or(v))
        }
    };
    let key = key.trim();
    is_key(key).then_some((key, equal, value.trim()))
}

/// `key in (a,b)` or `key notin (a,b)` → (key, "in" or "notin", values).
fn set_term(term: &str) -> Option<(&str, &str, Vec<&str>)> {
    let (key, rest) = term.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let (op, list) = if let Some(list) = rest.strip_prefix("notin") {
        ("notin", list)
    } else {
        ("in", rest.strip_prefix("in")?)
    };
    let list = list.trim().strip_prefix('(')?.strip_suffix(')')?;
    let values = list.split(',').map(str::trim).collect();
    Some((key, op, values))
}

/// A label key or field path: letters, digits and `-_./`, not empty.
fn is_key(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "a", "namespace": "ns"},
                         "spec": {"nodeName": "n1", "hostNetwork": true}, "status": {}});
        let cases = [
            ("", true),
            ("spec.nodeName=n1", true),
            ("spec.nodeName==n1", true),
            ("spec.nodeName!=n1", false),
            ("spec.nodeName=n2", false),
            ("spec.nodeName=n1,metadata.namespace=ns", true),
            ("spec.nodeName=n1,metadata.namespace!=ns", false),
            ("status.phase=", true),
            ("status.phase!=Failed", true),
            ("spec.hostNetwork=true", true),
            ("nonsense", false),
        ];
        for (selector, want) in cases {
            assert_eq!(matches_fields(&pod, selector), want, "{selector:?}");
        }
    }

    #[test]
    fn label_selectors() {
        let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "front")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("app in (web, db)", true),
            ("app in (db)", false),
            ("app notin (db,cache)", true),
            ("missing notin (x)", true),
            ("app in (web,db),tier=front", true),
            ("app in (web,db),tier=back", false),
            ("a b c", false),
        ];
        for (selector, want) in cases {
            assert_eq!(matches_labels(&labels, selector), want, "{selector:?}");
        }
    }
}
