//! Field and label selectors of list and watch requests, plus the namespace a request is
//! scoped to. Field selectors support `=`, `==` and `!=` on each resource's field labels;
//! label selectors support equality, inequality and existence (`key`, `!key`). Set-based
//! label terms (`in`, `notin`) are refused with 400.

use serde_json::Value;

use super::meta::str_at;
use super::resources::Resource;
use super::status::ApiError;

/// One `key=value` or `key!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    key: String,
    value: String,
    negated: bool,
}

/// One label selector term.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelTerm {
    Compare(Term),
    Exists(String),
    Absent(String),
}

/// Which objects a list or watch returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    resource: Resource,
    namespace: Option<String>,
    fields: Vec<Term>,
    labels: Vec<LabelTerm>,
}

impl Filter {
    /// Parses the selectors of a request on `resource` (scoped to `namespace` if given).
    /// Unknown field labels and malformed terms are 400, like upstream.
    pub fn parse(
        resource: Resource,
        namespace: Option<&str>,
        field_selector: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Filter, ApiError> {
        let mut fields = Vec::new();
        for term in terms(field_selector) {
            let term = parse_term(term)
                .ok_or_else(|| ApiError::bad_request(format!("invalid field selector: {term}")))?;
            if resource.field_value(&Value::Null, &term.key).is_none() {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {}",
                    term.key
                )));
            }
            fields.push(term);
        }
        let mut labels = Vec::new();
        for term in terms(label_selector) {
            labels.push(parse_label_term(term)?);
        }
        Ok(Filter {
            resource,
            namespace: namespace.map(str::to_string),
            fields,
            labels,
        })
    }

    /// Whether `obj` is selected.
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(namespace) = &self.namespace {
            if str_at(obj, "/metadata/namespace") != namespace {
                return false;
            }
        }
        let fields_match = self.fields.iter().all(|term| {
            let value = self
                .resource
                .field_value(obj, &term.key)
                .unwrap_or_default();
            (value == term.value) != term.negated
        });
        let label = |key: &str| {
            obj.pointer("/metadata/labels")
                .and_then(|labels| labels.get(key))
                .and_then(Value::as_str)
        };
        let labels_match = self.labels.iter().all(|term| match term {
            LabelTerm::Compare(t) => (label(&t.key) == Some(t.value.as_str())) != t.negated,
            LabelTerm::Exists(key) => label(key).is_some(),
            LabelTerm::Absent(key) => label(key).is_none(),
        });
        fields_match && labels_match
    }
}

fn terms(selector: Option<&str>) -> impl Iterator<Item = &str> {
    selector
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn parse_term(term: &str) -> Option<Term> {
    let (key, value, negated) = if let Some((k, v)) = term.split_once("!=") {
        (k, v, true)
    } else if let Some((k, v)) = term.split_once("==") {
        (k, v, false)
    } else {
        let (k, v) = term.split_once('=')?;
        (k, v, false)
    };
    let key = key.trim();
    if key.is_empty() {
        return None;
    }
    Some(Term {
        key: key.to_string(),
        value: value.trim().to_string(),
        negated,
    })
}

fn parse_label_term(term: &str) -> Result<LabelTerm, ApiError> {
    if term.contains('(') || term.contains(' ') {
        return Err(ApiError::bad_request(format!(
            "set-based label selector {term:?} is not supported by the API server test double"
        )));
    }
    if term.contains('=') {
        let parsed = parse_term(term)
            .ok_or_else(|| ApiError::bad_request(format!("invalid label selector: {term}")))?;
        return Ok(LabelTerm::Compare(parsed));
    }
    match term.strip_prefix('!') {
        Some(key) => Ok(LabelTerm::Absent(key.to_string())),
        None => Ok(LabelTerm::Exists(term.to_string())),
    }
}
