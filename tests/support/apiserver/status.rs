//! API errors as kube-apiserver reports them: a `meta/v1 Status` with `reason`, `code`,
//! `message` and `details`, built by the constructors here so every message has upstream's
//! wording.

use serde_json::{json, Value};

use super::resources::Resource;

/// A failed API call, turned into a `Status` body and its HTTP code.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code (`404`, `409`, ...).
    pub code: u16,
    /// `Status.reason` (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when upstream sets it.
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_object(mut self, resource: Resource, name: &str) -> ApiError {
        let mut details = json!({ "name": name, "kind": resource.plural() });
        if !resource.group().is_empty() {
            details["group"] = json!(resource.group());
        }
        self.details = Some(details);
        self
    }

    /// 404 `NotFound`: `pods "x" not found`.
    pub fn not_found(resource: Resource, name: &str) -> ApiError {
        let message = format!("{} \"{name}\" not found", resource.qualified());
        ApiError::new(404, "NotFound", message).with_object(resource, name)
    }

    /// 409 `AlreadyExists`: `pods "x" already exists`.
    pub fn already_exists(resource: Resource, name: &str) -> ApiError {
        let message = format!("{} \"{name}\" already exists", resource.qualified());
        ApiError::new(409, "AlreadyExists", message).with_object(resource, name)
    }

    /// 409 `Conflict` for a stale resourceVersion.
    pub fn stale(resource: Resource, name: &str) -> ApiError {
        ApiError::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 `Conflict` with upstream's prefix: `Operation cannot be fulfilled on pods "x": why`.
    pub fn conflict(resource: Resource, name: &str, why: &str) -> ApiError {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            resource.qualified()
        );
        ApiError::new(409, "Conflict", message).with_object(resource, name)
    }

    /// 422 `Invalid`: `Pod "x" is invalid: field: why`.
    pub fn invalid(resource: Resource, name: &str, field_and_why: &str) -> ApiError {
        let message = format!("{} \"{name}\" is invalid: {field_and_why}", resource.kind());
        let mut error = ApiError::new(422, "Invalid", message);
        // The cause, as kube-apiserver lists each field error (kubectl prints them).
        let cause = field_and_why.split_once(": ").map(|(field, why)| {
            let reason = [
                ("Required value", "FieldValueRequired"),
                ("Not found", "FieldValueNotFound"),
                ("Forbidden", "FieldValueForbidden"),
                ("Duplicate value", "FieldValueDuplicate"),
                ("Unsupported value", "FieldValueNotSupported"),
            ]
            .iter()
            .find(|(prefix, _)| why.starts_with(prefix))
            .map_or("FieldValueInvalid", |(_, reason)| reason);
            json!({ "reason": reason, "message": why, "field": field })
        });
        error.details = Some(json!({
            "name": name,
            "kind": resource.kind(),
            "causes": cause.into_iter().collect::<Vec<_>>(),
        }));
        error
    }

    /// 422 `Invalid` for a TokenRequest, which has no name of its own: `TokenRequest.authentication.k8s.io "" is invalid: ...`.
    pub fn invalid_token_request(field_and_why: &str) -> ApiError {
        let message =
            format!("TokenRequest.authentication.k8s.io \"\" is invalid: {field_and_why}");
        let mut error = ApiError::new(422, "Invalid", message);
        error.details = Some(json!({ "kind": "TokenRequest", "group": "authentication.k8s.io" }));
        error
    }

    /// 403 `Forbidden` with the authorizer's message.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    /// 400 `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 401 `Unauthorized`.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 404 `NotFound` for a path that names no resource.
    pub fn no_route() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 405 `MethodNotAllowed`.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 410 `Expired`, sent as a watch `ERROR` event: `too old resource version: 5 (10)`.
    pub fn expired(requested: u64, oldest: u64) -> ApiError {
        let message = format!("too old resource version: {requested} ({oldest})");
        ApiError::new(410, "Expired", message)
    }

    /// 415 `UnsupportedMediaType` for a patch type the double does not implement.
    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json"
            ),
        )
    }

    /// 500 `InternalError`.
    pub fn internal(message: &str) -> ApiError {
        let mut error = ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        );
        error.details = Some(json!({ "causes": [{ "message": message }] }));
        error
    }

    /// 429 `TooManyRequests` (sent with `Retry-After: 1`).
    pub fn too_many_requests() -> ApiError {
        let mut error = ApiError::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        );
        error.details = Some(json!({ "retryAfterSeconds": 1 }));
        error
    }

    /// An injected failure with any code: 429 and 500 get upstream's reasons, others a
    /// generic one.
    pub fn injected(code: u16) -> ApiError {
        match code {
            429 => ApiError::too_many_requests(),
            500 => ApiError::internal("injected failure"),
            503 => ApiError::new(503, "ServiceUnavailable", "injected failure"),
            504 => ApiError::new(504, "Timeout", "injected failure"),
            _ => ApiError::new(code, "InternalError", "injected failure"),
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// The `Status` of a successful delete of a resource that does not return the object.
pub fn delete_success(resource: Resource, name: &str, uid: &str) -> Value {
    let mut details = json!({ "name": name, "kind": resource.plural(), "uid": uid });
    if !resource.group().is_empty() {
        details["group"] = json!(resource.group());
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
