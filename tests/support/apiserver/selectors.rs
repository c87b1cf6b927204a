//! Field and label selectors of list and watch requests, plus the namespace a request is
//! scoped to. The selectors are parsed by the crate's `rkubelet::api::selector` (the
//! recording fake client evaluates them with it too); a term that does not parse is 400.
//! Field selectors support `=`, `==` and `!=` on each resource's field labels (any other
//! field is 400, like upstream); label selectors support equality, inequality, existence
//! (`key`, `!key`) and the set-based `in` and `notin`.

use rkubelet::api::selector::{parse_fields, FieldTerm, LabelSelector};
use serde_json::Value;

use super::meta::str_at;
use super::resources::Resource;
use super::status::ApiError;

/// Which objects a list or watch returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    resource: Resource,
    namespace: Option<String>,
    fields: Vec<FieldTerm>,
    labels: LabelSelector,
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
        let fields = parse_fields(field_selector.unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid field selector: {}", e.term)))?;
        if let Some(term) = fields
            .iter()
            .find(|term| resource.field_value(&Value::Null, &term.path).is_none())
        {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {}",
                term.path
            )));
        }
        let labels = LabelSelector::parse(label_selector.unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid label selector: {}", e.term)))?;
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
            let value = self.resource.field_value(obj, &term.path);
            term.matches(&value.unwrap_or_default())
        });
        fields_match
            && self.labels.matches(|key| {
                obj.pointer("/metadata/labels")
                    .and_then(|labels| labels.get(key))
                    .and_then(Value::as_str)
            })
    }
}
