//! The `serviceaccounts/{name}/token` subresource (TokenRequest) and the base64 coding it and
//! secrets need.
//!
//! Simplifications: the service account itself need not exist (the double stores no
//! service accounts; upstream answers 404 for a missing one), only the namespace must; the
//! token is JWT-shaped (`header.payload.signature`, base64url without padding) with
//! upstream's claims, but its signature is a SHA-256 digest, not an RS256 signature, so
//! nothing can verify it. `spec.audiences` defaults to the double's issuer and
//! `spec.expirationSeconds` to 3600; below 600 is refused with 422 Invalid. There is no upper cap.

use ring::digest::{digest, SHA256};
use serde_json::{json, Value};

use super::meta::{format_time, new_uid, str_at, unix_now};
use super::registry::key;
use super::resources::Resource;
use super::status::ApiError;
use super::store::Store;

/// The issuer and default audience of the double's tokens.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Lifetime of a token whose request names none.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime the API accepts (10 minutes).
const MIN_EXPIRATION_SECONDS: i64 = 600;

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode_with(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
        }
        if pad {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding (how `Secret.data` values travel).
pub fn base64(bytes: &[u8]) -> String {
    encode_with(bytes, STD, true)
}

/// base64url without padding (JWT segments).
pub fn base64url(bytes: &[u8]) -> String {
    encode_with(bytes, URL, false)
}

/// `POST .../serviceaccounts/{sa}/token`: the TokenRequest answered with a token.
pub fn create_token(
    store: &Store,
    namespace: &str,
    service_account: &str,
    mut request: Value,
) -> Result<Value, ApiError> {
    if !request.is_object() {
        return Err(ApiError::bad_request(
            "a TokenRequest must be a JSON object",
        ));
    }
    let kind = str_at(&request, "/kind");
    if !kind.is_empty() && kind != "TokenRequest" {
        return Err(ApiError::bad_request(format!(
            "the body is a {kind}, not a TokenRequest"
        )));
    }
    if store
        .get(&key(Resource::Namespaces, "", namespace))
        .is_none()
    {
        return Err(ApiError::not_found(Resource::Namespaces, namespace));
    }
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(value) => value.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!("spec.expirationSeconds: not an integer: {value}"))
        })?,
    };
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(ApiError::invalid_token_request(&format!(
            "spec.expirationSeconds: Invalid value: {expiration}: may not specify a duration less than 10 minutes"
        )));
    }
    let audiences = match spec.get("audiences").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => Value::Array(list.clone()),
        _ => json!([ISSUER]),
    };
    let now = unix_now();
    let exp = now + expiration;
    let mut claims = json!({
        "aud": audiences,
        "exp": exp,
        "iat": now,
        "nbf": now,
        "iss": ISSUER,
        "jti": new_uid(),
        "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": { "name": service_account, "uid": new_uid() },
        },
    });
    if let Some(bound) = spec.get("boundObjectRef").filter(|b| b.is_object()) {
        let (kind, name) = (str_at(bound, "/kind"), str_at(bound, "/name"));
        if kind != "Pod" {
            return Err(ApiError::bad_request(format!(
                "spec.boundObjectRef.kind: Unsupported value: {kind:?}: the API server test double binds tokens to pods only"
            )));
        }
        let pod = store
            .get(&key(Resource::Pods, namespace, name))
            .ok_or_else(|| ApiError::not_found(Resource::Pods, name))?;
        let uid = str_at(&pod, "/metadata/uid");
        let sent_uid = str_at(bound, "/uid");
        if !sent_uid.is_empty() && sent_uid != uid {
            return Err(ApiError::conflict(
                Resource::Pods,
                name,
                &format!("the UID in the bound object reference ({sent_uid}) does not match the UID in record. The object might have been deleted and then recreated"),
            ));
        }
        claims["kubernetes.io"]["pod"] = json!({ "name": name, "uid": uid });
        let node = str_at(&pod, "/spec/nodeName");
        if !node.is_empty() {
            claims["kubernetes.io"]["node"] = json!({ "name": node });
        }
    }
    let header = json!({ "alg": "RS256", "kid": "apiserver-double" });
    let signed = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let signature = base64url(digest(&SHA256, signed.as_bytes()).as_ref());
    let mut answer_spec = spec;
    answer_spec["audiences"] = claims["aud"].clone();
    answer_spec["expirationSeconds"] = json!(expiration);
    request["kind"] = json!("TokenRequest");
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["metadata"] = json!({
        "name": service_account,
        "namespace": namespace,
        "creationTimestamp": format_time(now),
    });
    request["spec"] = answer_spec;
    request["status"] = json!({
        "token": format!("{signed}.{signature}"),
        "expirationTimestamp": format_time(exp),
    });
    Ok(request)
}
