//! `certificates.k8s.io/v1` CertificateSigningRequests, with what kube-apiserver and
//! kube-controller-manager do around them on a kubeadm cluster:
//!
//! - bootstrap tokens (`<id>.<secret>` bearer tokens from [`ApiServerConfig::bootstrap_tokens`])
//!   authenticate as `system:bootstrap:<id>` in groups `system:bootstrappers` and
//!   `system:bootstrappers:kubeadm:default-node-token`;
//! - RBAC as kubeadm sets it up: a bootstrap identity may create, get, list and watch CSRs
//!   and nothing else; a node may do the same with CSRs; neither may approve;
//! - create (the registry strategy): `spec.username` and `spec.groups` are set from the
//!   requester, `status` is dropped, the request must be a PEM `CERTIFICATE REQUEST`,
//!   `signerName` and `usages` are required, `expirationSeconds` is at least 600;
//! - the `approval` subresource changes only `status.conditions` (Approved or Denied);
//! - the approver (csrapproving, with kubeadm's `nodeclient` and `selfnodeclient` grants):
//!   client CSRs of bootstrappers and nodes renewing their own certificate are approved at
//!   once unless [`ApiServerConfig::auto_approve_node_client`] is off; serving CSRs wait for
//!   a human ([`ApiServer::approve_csr`](super::ApiServer::approve_csr));
//! - the signer (csrsigning): an approved request of the kubelet client or serving signer
//!   that passes the signer's checks is signed by the double's CA for
//!   [`ApiServerConfig::csr_signing_duration`] (or `expirationSeconds` if shorter), starting
//!   now (upstream backdates `notBefore` by up to five minutes); one that fails them gets a
//!   `Failed` condition with reason `SignerValidationFailure`.
//!
//! [`ApiServerConfig::bootstrap_tokens`]: super::ApiServerConfig::bootstrap_tokens
//! [`ApiServerConfig::auto_approve_node_client`]: super::ApiServerConfig::auto_approve_node_client
//! [`ApiServerConfig::csr_signing_duration`]: super::ApiServerConfig::csr_signing_duration

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateSigningRequestParams, DnType, DnValue, ExtendedKeyUsagePurpose, KeyUsagePurpose,
    SanType,
};
use serde_json::{json, Value};

use super::registry::{self, admit_all, Part};
use super::resources::Resource;
use super::server::Shared;
use super::status::ApiError;

const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// The groups of a user, as the double's authenticators give them.
pub fn groups_of(user: &str) -> Vec<String> {
    let mut groups = Vec::new();
    if user.starts_with("system:bootstrap:") {
        groups.push("system:bootstrappers".to_string());
        groups.push("system:bootstrappers:kubeadm:default-node-token".to_string());
    } else if user.starts_with("system:node:") {
        groups.push("system:nodes".to_string());
    } else {
        groups.push("system:masters".to_string());
    }
    groups.push("system:authenticated".to_string());
    groups
}

/// The user of a bootstrap token in an `Authorization` header.
pub fn bootstrap_user(tokens: &[String], header: Option<&str>) -> Option<String> {
    let token = header?.strip_prefix("Bearer ")?;
    tokens
        .iter()
        .find(|t| t.as_str() == token)
        .and_then(|t| t.split_once('.'))
        .map(|(id, _)| format!("system:bootstrap:{id}"))
}

/// RBAC for bootstrap and node users on CSRs, and for bootstrap users on everything: the
/// 403 kube-apiserver gives, or Ok.
pub fn authorize(
    user: Option<&str>,
    resource: Option<Resource>,
    verb: &str,
    sub: Option<&str>,
    name: &str,
) -> Result<(), ApiError> {
    let Some(user) = user else { return Ok(()) };
    let bootstrap = user.starts_with("system:bootstrap:");
    let node = user.starts_with("system:node:");
    let node_on_csrs = node && resource == Some(Resource::CertificateSigningRequests);
    if !(bootstrap || node_on_csrs) {
        return Ok(());
    }
    let allowed = resource == Some(Resource::CertificateSigningRequests)
        && sub.is_none()
        && matches!(verb, "create" | "get" | "list" | "watch");
    if allowed {
        return Ok(());
    }
    let (plural, group, scope) = match resource {
        Some(r) => (
            match sub {
                Some(sub) => format!("{}/{sub}", r.plural()),
                None => r.plural().to_string(),
            },
            r.group(),
            if r.namespaced() {
                "in the namespace"
            } else {
                "at the cluster scope"
            },
        ),
        None => (String::new(), "", "at the cluster scope"),
    };
    let object = plural.split('/').next().unwrap_or_default().to_string();
    Err(ApiError::forbidden(format!(
        "{object}{} is forbidden: User \"{user}\" cannot {verb} resource \"{plural}\" in API group \"{group}\" {scope}",
        if name.is_empty() { String::new() } else { format!(" \"{name}\"") }
    )))
}

/// The registry strategy's create: requester fields set, status dropped, request checked.
pub fn prepare_create(mut body: Value, user: Option<&str>) -> Result<Value, ApiError> {
    let invalid = |field: &str, why: &str| {
        ApiError::invalid(
            Resource::CertificateSigningRequests,
            body["metadata"]["name"].as_str().unwrap_or(""),
            &format!("{field}: {why}"),
        )
    };
    let request = body["spec"]["request"].as_str().unwrap_or("");
    let pem =
        decode_base64(request).map_err(|_| invalid("spec.request", "Invalid value: not base64"))?;
    let pem =
        String::from_utf8(pem).map_err(|_| invalid("spec.request", "Invalid value: not PEM"))?;
    if !pem.contains("-----BEGIN CERTIFICATE REQUEST-----")
        || CertificateSigningRequestParams::from_pem(&pem).is_err()
    {
        return Err(invalid(
            "spec.request",
            "Invalid value: []byte{...}: PEM block type must be CERTIFICATE REQUEST",
        ));
    }
    if body["spec"]["signerName"].as_str().unwrap_or("").is_empty() {
        return Err(invalid("spec.signerName", "Required value"));
    }
    if body["spec"]["usages"]
        .as_array()
        .is_none_or(|u| u.is_empty())
    {
        return Err(invalid("spec.usages", "Required value"));
    }
    if let Some(secs) = body["spec"]["expirationSeconds"].as_i64() {
        if secs < 600 {
            return Err(invalid(
                "spec.expirationSeconds",
                "Invalid value: may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
    let user = user.unwrap_or("system:anonymous");
    body["spec"]["username"] = json!(user);
    body["spec"]["groups"] = json!(groups_of(user));
    if let Some(obj) = body.as_object_mut() {
        obj.remove("status");
    }
    Ok(body)
}

/// The `approval` subresource: only `status.conditions` of Approved or Denied are taken.
pub fn approve(shared: &Shared, name: &str, body: &Value) -> Result<Value, ApiError> {
    let resource = Resource::CertificateSigningRequests;
    let key = (resource, String::new(), name.to_string());
    let mut current = shared
        .store
        .get(&key)
        .ok_or_else(|| ApiError::not_found(resource, name))?;
    let conditions = body["status"]["conditions"].clone();
    for c in conditions.as_array().into_iter().flatten() {
        let kind = c["type"].as_str().unwrap_or("");
        if !matches!(kind, "Approved" | "Denied" | "Failed") {
            return Err(ApiError::invalid(
                resource,
                name,
                &format!("status.conditions[].type: Unsupported value: \"{kind}\""),
            ));
        }
    }
    current["status"]["conditions"] = conditions;
    let written = registry::update(
        &shared.store,
        resource,
        "",
        name,
        current,
        Part::Status,
        &admit_all,
    )?;
    Ok(written.object)
}

/// What kube-controller-manager does after a CSR changed: approve what kubeadm's grants
/// auto-approve, then sign what is approved.
pub fn reconcile(shared: &Shared, name: &str) {
    let resource = Resource::CertificateSigningRequests;
    let key = (resource, String::new(), name.to_string());
    let Some(mut csr) = shared.store.get(&key) else {
        return;
    };
    let has = |csr: &Value, kind: &str| {
        csr["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == kind))
    };
    if has(&csr, "Denied") || has(&csr, "Failed") || csr["status"]["certificate"].is_string() {
        return;
    }
    let parsed = parse(&csr);
    if !has(&csr, "Approved") && shared.config.auto_approve_node_client {
        if let Some(message) = parsed.as_ref().ok().and_then(|p| auto_approval(&csr, p)) {
            add_condition(&mut csr, "Approved", "AutoApproved", message);
            match registry::update(
                &shared.store,
                resource,
                "",
                name,
                csr.clone(),
                Part::Status,
                &admit_all,
            ) {
                Ok(w) => csr = w.object,
                Err(e) => {
                    log::debug!("apiserver double: approving {name}: {e:?}");
                    return;
                }
            }
        }
    }
    if !has(&csr, "Approved") {
        return;
    }
    let signer = csr["spec"]["signerName"].as_str().unwrap_or("").to_string();
    if signer != CLIENT_SIGNER && signer != SERVING_SIGNER {
        return;
    }
    let outcome = parsed.and_then(|p| {
        check_for_signer(&signer, &csr, &p)?;
        let mut ttl = shared.config.csr_signing_duration;
        if let Some(secs) = csr["spec"]["expirationSeconds"].as_u64() {
            ttl = ttl.min(Duration::from_secs(secs));
        }
        shared
            .pki
            .sign_csr(p, &signer, ttl)
            .map_err(|e| e.to_string())
    });
    match outcome {
        Ok(pem) => {
            csr["status"]["certificate"] = json!(super::token::base64(pem.as_bytes()));
        }
        Err(why) => add_condition(&mut csr, "Failed", "SignerValidationFailure", &why),
    }
    if let Err(e) = registry::update(
        &shared.store,
        resource,
        "",
        name,
        csr,
        Part::Status,
        &admit_all,
    ) {
        log::debug!("apiserver double: signing {name}: {e:?}");
    }
}

fn add_condition(csr: &mut Value, kind: &str, reason: &str, message: &str) {
    let now = super::meta::format_time(super::meta::unix_now());
    let condition = json!({
        "type": kind, "status": "True", "reason": reason, "message": message,
        "lastUpdateTime": now, "lastTransitionTime": now,
    });
    match csr["status"]["conditions"].as_array_mut() {
        Some(list) => list.push(condition),
        None => csr["status"]["conditions"] = json!([condition]),
    }
}

/// The request's subject and names.
pub struct Parsed {
    params: CertificateSigningRequestParams,
    common_name: String,
    organizations: Vec<String>,
}

fn parse(csr: &Value) -> Result<Parsed, String> {
    let pem = decode_base64(csr["spec"]["request"].as_str().unwrap_or(""))?;
    let pem = String::from_utf8(pem).map_err(|e| e.to_string())?;
    let params = CertificateSigningRequestParams::from_pem(&pem).map_err(|e| e.to_string())?;
    let text = |v: &DnValue| match v {
        DnValue::PrintableString(s) => s.to_string(),
        DnValue::Utf8String(s) => s.clone(),
        DnValue::Ia5String(s) => s.to_string(),
        other => format!("{other:?}"),
    };
    let dn = &params.params.distinguished_name;
    let common_name = dn.get(&DnType::CommonName).map(text).unwrap_or_default();
    let organizations = dn
        .iter()
        .filter(|(t, _)| **t == DnType::OrganizationName)
        .map(|(_, v)| text(v))
        .collect();
    Ok(Parsed {
        params,
        common_name,
        organizations,
    })
}

fn usages(csr: &Value) -> Vec<String> {
    csr["spec"]["usages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str().map(str::to_string))
        .collect()
}

/// The signers' checks (upstream `IsKubeletClientCSR` / `IsKubeletServingCSR`).
fn check_for_signer(signer: &str, csr: &Value, p: &Parsed) -> Result<(), String> {
    if !p.common_name.starts_with("system:node:") || p.common_name.len() == "system:node:".len() {
        return Err("subject common name does not begin with system:node:".into());
    }
    if p.organizations != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    let sans = &p.params.params.subject_alt_names;
    let usages = usages(csr);
    let (needed, allowed): (&str, &[&str]) = if signer == CLIENT_SIGNER {
        (
            "client auth",
            &["digital signature", "key encipherment", "client auth"],
        )
    } else {
        (
            "server auth",
            &["digital signature", "key encipherment", "server auth"],
        )
    };
    if !usages.iter().any(|u| u == needed) || usages.iter().any(|u| !allowed.contains(&u.as_str()))
    {
        return Err(format!("usages did not match {allowed:?}"));
    }
    if signer == CLIENT_SIGNER && !sans.is_empty() {
        return Err("DNS, email, IP or URI subjectAltNames are not allowed".into());
    }
    if signer == SERVING_SIGNER {
        if sans
            .iter()
            .any(|s| !matches!(s, SanType::DnsName(_) | SanType::IpAddress(_)))
        {
            return Err("email and URI subjectAltNames are not allowed".into());
        }
        if sans.is_empty() {
            return Err("DNS or IP subjectAltName is required".into());
        }
    }
    Ok(())
}

/// kubeadm's grants with csrapproving's recognizers: a node client CSR of a bootstrapper
/// (`nodeclient`) or of the node it names (`selfnodeclient`).
fn auto_approval(csr: &Value, p: &Parsed) -> Option<&'static str> {
    if csr["spec"]["signerName"] != CLIENT_SIGNER
        || check_for_signer(CLIENT_SIGNER, csr, p).is_err()
    {
        return None;
    }
    let username = csr["spec"]["username"].as_str().unwrap_or("");
    let groups: Vec<&str> = csr["spec"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if username == p.common_name {
        return Some("Auto approving self kubelet client certificate after SubjectAccessReview.");
    }
    groups
        .contains(&"system:bootstrappers:kubeadm:default-node-token")
        .then_some("Auto approving kubelet client certificate after SubjectAccessReview.")
}

impl Parsed {
    /// The CN, and the parameters of the certificate to issue for `signer`, valid `ttl`
    /// from now.
    pub fn into_params(
        self,
        signer: &str,
        ttl: Duration,
    ) -> (String, CertificateSigningRequestParams) {
        let mut params = self.params;
        let now = SystemTime::now();
        params.params.not_before = now.into();
        params.params.not_after = (now + ttl).into();
        params.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.params.extended_key_usages = vec![if signer == CLIENT_SIGNER {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        (self.common_name, params)
    }
}

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    rkubelet::util::base64::decode(text)
}
