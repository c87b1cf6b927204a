//! Field and label selectors as the API server evaluates them for lists and watches. Both
//! fakes use them: the recording fake client through [`matches_fields`] and
//! [`matches_labels`], the API server test double through [`parse_fields`] and
//! [`LabelSelector::parse`] (it answers 400 for a selector that does not parse and reads
//! field labels its own way). Pure functions.
//!
//! Field selectors: comma-separated `path=value`, `path==value`, `path!=value`, where `path`
//! is a dotted JSON path (`spec.nodeName`, `metadata.namespace`); a missing field reads as "".
//! Label selectors: comma-separated `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
//! `k`, `!k`.

use std::collections::BTreeMap;

use serde_json::Value;

/// A selector term that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector term {term:?}")]
pub struct SelectorError {
    /// The term as written.
    pub term: String,
}

/// One field selector term: `path=value`, `path==value` or `path!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    /// The field path (`spec.nodeName`).
    pub path: String,
    /// `=` or `==` (true), `!=` (false).
    pub equal: bool,
    /// The value the field is compared with.
    pub value: String,
}

impl FieldTerm {
    /// Whether a field holding `have` satisfies the term.
    pub fn matches(&self, have: &str) -> bool {
        (have == self.value) == self.equal
    }
}

/// The terms of a field selector; none for an empty selector.
pub fn parse_fields(selector: &str) -> Result<Vec<FieldTerm>, SelectorError> {
    terms(selector)
        .map(|term| {
            let (path, equal, value) = equality(term).ok_or_else(|| invalid(term))?;
            Ok(FieldTerm {
                path: path.to_string(),
                equal,
                value: value.to_string(),
            })
        })
        .collect()
}

/// One label selector term.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelTerm {
    /// `k=v`, `k==v` (equal) or `k!=v`.
    Compare {
        key: String,
        equal: bool,
        value: String,
    },
    /// `k in (a,b)` (in) or `k notin (a,b)`.
    Set {
        key: String,
        is_in: bool,
        values: Vec<String>,
    },
    /// `k` (exists) or `!k`.
    Exists { key: String, exists: bool },
}

/// A parsed label selector: an object is selected when every term holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    terms: Vec<LabelTerm>,
}

impl LabelSelector {
    /// Parses a label selector; an empty one selects everything.
    pub fn parse(selector: &str) -> Result<LabelSelector, SelectorError> {
        let terms = terms(selector)
            .map(|term| label_term(term).ok_or_else(|| invalid(term)))
            .collect::<Result<_, _>>()?;
        Ok(LabelSelector { terms })
    }

    /// Whether the labels, read through `label` (key to value), satisfy every term.
    pub fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.terms.iter().all(|term| match term {
            LabelTerm::Compare { key, equal, value } => {
                (label(key) == Some(value.as_str())) == *equal
            }
            LabelTerm::Set { key, is_in, values } => {
                let found = label(key).is_some_and(|v| values.iter().any(|w| w == v));
                found == *is_in
            }
            LabelTerm::Exists { key, exists } => label(key).is_some() == *exists,
        })
    }
}

/// Whether `object` (as JSON) satisfies every term of the field selector. An empty selector
/// matches everything; a selector with a term that does not parse matches nothing.
pub fn matches_fields(object: &Value, selector: &str) -> bool {
    let Ok(terms) = parse_fields(selector) else {
        return false;
    };
    terms.iter().all(|term| {
        let pointer = format!("/{}", term.path.replace('.', "/"));
        let have = match object.pointer(&pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        term.matches(&have)
    })
}

/// Whether `labels` satisfy every term of the label selector. An empty selector matches
/// everything; a selector with a term that does not parse matches nothing.
pub fn matches_labels(labels: &BTreeMap<String, String>, selector: &str) -> bool {
    LabelSelector::parse(selector)
        .is_ok_and(|selector| selector.matches(|key| labels.get(key).map(String::as_str)))
}

fn invalid(term: &str) -> SelectorError {
    SelectorError {
        term: term.to_string(),
    }
}

/// A label term: set-based, then equality, then existence; `None` if it is none of them.
fn label_term(term: &str) -> Option<LabelTerm> {
    if let Some((key, op, values)) = set_term(term) {
        return Some(LabelTerm::Set {
            key: key.to_string(),
            is_in: op == "in",
            values: values.into_iter().map(str::to_string).collect(),
        });
    }
    if let Some((key, equal, value)) = equality(term) {
        return Some(LabelTerm::Compare {
            key: key.to_string(),
            equal,
            value: value.to_string(),
        });
    }
    match term.strip_prefix('!') {
        Some(key) => Some(LabelTerm::Exists {
            key: key.trim().to_string(),
            exists: false,
        }),
        None => is_key(term).then(|| LabelTerm::Exists {
            key: term.to_string(),
            exists: true,
        }),
    }
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
    fn parsed_selectors_name_the_bad_term() {
        assert_eq!(parse_fields("").unwrap(), []);
        let terms = parse_fields("spec.nodeName==n1, status.phase!=Failed").unwrap();
        let term = |path: &str, equal, value: &str| FieldTerm {
            path: path.into(),
            equal,
            value: value.into(),
        };
        assert_eq!(
            terms,
            [
                term("spec.nodeName", true, "n1"),
                term("status.phase", false, "Failed")
            ]
        );
        let err = parse_fields("spec.nodeName=n1,nonsense").unwrap_err();
        assert_eq!(err.term, "nonsense");
        let err = LabelSelector::parse("app=web,a b c").unwrap_err();
        assert_eq!(err.to_string(), "invalid selector term \"a b c\"");
        let selector = LabelSelector::parse("app in (web,db),!gone").unwrap();
        assert!(selector.matches(|key| (key == "app").then_some("db")));
        assert!(!selector.matches(|_| Some("db")));
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
