//! Authentication and authorization of kubelet API requests, as upstream's auth filter:
//! a verified client certificate names the user (CN) and groups (O); otherwise a bearer
//! token is checked through the TokenReview API; otherwise the request is anonymous, and
//! refused unless anonymous access is on. The request is then mapped to a `nodes`
//! subresource and verb and authorized through SubjectAccessReview (or always allowed).
//! Both webhooks' answers are cached for the configured times.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};

use super::http::Request;
use crate::api::KubeClient;
use crate::util::x509::subject;

/// An authenticated caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// User name.
    pub name: String,
    /// UID, when the authenticator knows one.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What a request asks to do, as a `nodes` subresource access.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    /// API verb (`get`, `create`, ...).
    pub verb: String,
    /// `nodes` subresource (`proxy`, `stats`, `metrics`, `log`, ...).
    pub subresource: String,
    /// The node.
    pub name: String,
}

/// Authentication settings.
#[derive(Debug, Clone)]
pub struct AuthnSettings {
    /// `authentication.anonymous.enabled`.
    pub anonymous: bool,
    /// `authentication.webhook.enabled`.
    pub webhook: bool,
    /// `authentication.webhook.cacheTTL`.
    pub cache_ttl: Duration,
}

/// Authorization settings.
#[derive(Debug, Clone)]
pub struct AuthzSettings {
    /// `authorization.mode` is `Webhook` (else `AlwaysAllow`).
    pub webhook: bool,
    /// `authorization.webhook.cacheAuthorizedTTL`.
    pub allowed_ttl: Duration,
    /// `authorization.webhook.cacheUnauthorizedTTL`.
    pub denied_ttl: Duration,
}

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401.
    Unauthorized,
    /// 403 with upstream's message.
    Forbidden(String),
    /// 500: a webhook could not be asked.
    Error(String),
}

/// Who asked for what: user name, UID, groups, extra, attributes.
type DecisionKey = (
    String,
    String,
    Vec<String>,
    BTreeMap<String, Vec<String>>,
    Attributes,
);

/// Entries a cache keeps at most; beyond that expired entries are dropped, then all.
const CACHE_LIMIT: usize = 4096;

struct Cache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: std::hash::Hash + Eq, V: Clone> Cache<K, V> {
    fn new() -> Self {
        Cache {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CACHE_LIMIT {
            let now = Instant::now();
            entries.retain(|_, (until, _)| now < *until);
            if entries.len() >= CACHE_LIMIT {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now() + ttl, value));
    }
}

/// The auth filter of the kubelet API.
pub struct Auth {
    node_name: String,
    authn: AuthnSettings,
    authz: AuthzSettings,
    api: Option<Arc<dyn KubeClient>>,
    tokens: Cache<String, Option<User>>,
    decisions: Cache<DecisionKey, Result<(), String>>,
}

impl Auth {
    /// An auth filter for `node_name`; the webhooks go to `api`.
    pub fn new(
        node_name: &str,
        authn: AuthnSettings,
        authz: AuthzSettings,
        api: Option<Arc<dyn KubeClient>>,
    ) -> Auth {
        if api.is_none() && authn.webhook {
            log::warn!("kubelet API: no API server, so bearer tokens cannot be checked");
        }
        if api.is_none() && authz.webhook {
            log::warn!(
                "kubelet API: authorization mode Webhook without an API server denies every request"
            );
        }
        Auth {
            node_name: node_name.into(),
            authn,
            authz,
            api,
            tokens: Cache::new(),
            decisions: Cache::new(),
        }
    }

    /// Authenticates the caller of `request`, given its verified client certificates.
    pub fn authenticate(
        &self,
        request: &Request,
        certs: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    ) -> Result<User, Refusal> {
        if let Some(leaf) = certs.and_then(|c| c.first()) {
            // A certificate without a common name names nobody; try the other ways.
            if let Some(s) = subject(leaf).filter(|s| !s.common_name.is_empty()) {
                return Ok(authenticated(User {
                    name: s.common_name,
                    groups: s.organizations,
                    ..User::default()
                }));
            }
        }
        let token = request
            .header("authorization")
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
            })
            .filter(|t| !t.is_empty());
        if let Some(token) = token {
            if self.authn.webhook {
                if let Some(user) = self.review_token(token)? {
                    return Ok(authenticated(user));
                }
            }
            // A token that was not accepted is not anonymous access.
            return Err(Refusal::Unauthorized);
        }
        if self.authn.anonymous {
            return Ok(User {
                name: "system:anonymous".into(),
                groups: vec!["system:unauthenticated".into()],
                ..User::default()
            });
        }
        Err(Refusal::Unauthorized)
    }

    fn review_token(&self, token: &str) -> Result<Option<User>, Refusal> {
        if let Some(cached) = self.tokens.get(&token.to_string()) {
            return Ok(cached);
        }
        let Some(api) = &self.api else {
            return Ok(None);
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.into()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let answer = api.create_token_review(&review).map_err(|e| {
            log::warn!("kubelet API: TokenReview failed: {e}");
            Refusal::Unauthorized
        })?;
        let status = answer.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(info)) => Some(User {
                name: info.username.unwrap_or_default(),
                uid: info.uid.unwrap_or_default(),
                groups: info.groups.unwrap_or_default(),
                extra: info.extra.unwrap_or_default(),
            }),
            _ => None,
        };
        self.tokens
            .put(token.into(), user.clone(), self.authn.cache_ttl);
        Ok(user)
    }

    /// The attributes of `request` for subresource `subresource`.
    pub fn attributes(&self, request: &Request, subresource: &str) -> Attributes {
        Attributes {
            verb: api_verb(&request.method).into(),
            subresource: subresource.into(),
            name: self.node_name.clone(),
        }
    }

    /// Authorizes `user` for `request`: first the fine-grained subresource of the path,
    /// then, for paths that have one, `proxy` as a fallback (upstream's
    /// KubeletFineGrainedAuthz behaviour).
    pub fn authorize(&self, user: &User, request: &Request) -> Result<(), Refusal> {
        let subresources = subresources(&request.path);
        let mut last = None;
        for sub in subresources {
            let attrs = self.attributes(request, sub);
            match self.decide(user, &attrs)? {
                Ok(()) => return Ok(()),
                Err(_) => last = Some(attrs),
            }
        }
        let attrs = last.unwrap_or_else(|| self.attributes(request, "proxy"));
        Err(Refusal::Forbidden(format!(
            "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
            user.name, attrs.verb, attrs.subresource
        )))
    }

    fn decide(&self, user: &User, attrs: &Attributes) -> Result<Result<(), String>, Refusal> {
        if !self.authz.webhook {
            return Ok(Ok(()));
        }
        let key = (
            user.name.clone(),
            user.uid.clone(),
            user.groups.clone(),
            user.extra.clone(),
            attrs.clone(),
        );
        if let Some(cached) = self.decisions.get(&key) {
            return Ok(cached);
        }
        let Some(api) = &self.api else {
            return Ok(Err("no API server".into()));
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(String::new()),
                    verb: Some(attrs.verb.clone()),
                    group: Some(String::new()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(attrs.subresource.clone()),
                    name: Some(attrs.name.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = api.create_subject_access_review(&review).map_err(|e| {
            log::warn!("kubelet API: SubjectAccessReview failed: {e}");
            Refusal::Error(format!("Authorization error (user={}): {e}", user.name))
        })?;
        let status = answer.status.unwrap_or_default();
        let decision = if status.allowed {
            self.decisions.put(key, Ok(()), self.authz.allowed_ttl);
            Ok(())
        } else {
            let why = status.reason.unwrap_or_default();
            self.decisions
                .put(key, Err(why.clone()), self.authz.denied_ttl);
            Err(why)
        };
        Ok(decision)
    }
}

/// Adds `system:authenticated`, as upstream's authenticator does for every authenticated
/// user.
fn authenticated(mut user: User) -> User {
    if !user.groups.iter().any(|g| g == "system:authenticated") {
        user.groups.push("system:authenticated".into());
    }
    user
}

/// The API verb of an HTTP method, as upstream maps it.
pub fn api_verb(method: &str) -> &'static str {
    match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
}

fn is_subpath(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The `nodes` subresources a path is authorized against, in the order tried.
pub fn subresources(path: &str) -> &'static [&'static str] {
    if is_subpath(path, "/stats") {
        &["stats"]
    } else if is_subpath(path, "/metrics") {
        &["metrics"]
    } else if is_subpath(path, "/logs") {
        &["log"]
    } else if is_subpath(path, "/checkpoint") {
        &["checkpoint"]
    } else if is_subpath(path, "/pods") || is_subpath(path, "/runningpods") {
        &["pods", "proxy"]
    } else if is_subpath(path, "/healthz") {
        &["healthz", "proxy"]
    } else if is_subpath(path, "/configz") {
        &["configz", "proxy"]
    } else {
        &["proxy"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fake::FakeClient;

    fn request(method: &str, path: &str, token: Option<&str>) -> Request {
        Request {
            method: method.into(),
            target: path.into(),
            path: path.into(),
            query: Vec::new(),
            headers: token
                .map(|t| vec![("authorization".to_string(), format!("Bearer {t}"))])
                .unwrap_or_default(),
            keep_alive: true,
            remote: None,
        }
    }

    fn auth(api: &Arc<FakeClient>, anonymous: bool, webhook_authz: bool) -> Auth {
        Auth::new(
            "node-a",
            AuthnSettings {
                anonymous,
                webhook: true,
                cache_ttl: Duration::from_secs(120),
            },
            AuthzSettings {
                webhook: webhook_authz,
                allowed_ttl: Duration::from_secs(300),
                denied_ttl: Duration::from_secs(30),
            },
            Some(Arc::clone(api) as Arc<dyn KubeClient>),
        )
    }

    #[test]
    fn paths_map_to_upstream_subresources() {
        let table = [
            ("/stats/summary", "stats"),
            ("/stats", "stats"),
            ("/statsx", "proxy"),
            ("/metrics", "metrics"),
            ("/metrics/cadvisor", "metrics"),
            ("/logs/syslog", "log"),
            ("/containerLogs/ns/p/c", "proxy"),
            ("/exec/ns/p/c", "proxy"),
            ("/pods", "pods"),
            ("/runningpods/", "pods"),
            ("/configz", "configz"),
            ("/healthz", "healthz"),
        ];
        for (path, sub) in table {
            assert_eq!(subresources(path)[0], sub, "{path}");
        }
        assert_eq!(api_verb("POST"), "create");
        assert_eq!(api_verb("GET"), "get");
    }

    #[test]
    fn tokens_are_reviewed_once_and_anonymous_is_refused() {
        let api = Arc::new(FakeClient::new());
        api.accept_token("good", "alice", &["devs"]);
        let a = auth(&api, false, true);
        let user = a
            .authenticate(&request("GET", "/pods", Some("good")), None)
            .unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, vec!["devs", "system:authenticated"]);
        a.authenticate(&request("GET", "/pods", Some("good")), None)
            .unwrap();
        let reviews = api
            .calls()
            .iter()
            .filter(|c| matches!(c, crate::api::fake::Call::CreateTokenReview))
            .count();
        assert_eq!(reviews, 1, "the second request used the cache");
        assert_eq!(
            a.authenticate(&request("GET", "/pods", Some("bad")), None),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            a.authenticate(&request("GET", "/pods", None), None),
            Err(Refusal::Unauthorized)
        );
        let anon = auth(&api, true, true)
            .authenticate(&request("GET", "/pods", None), None)
            .unwrap();
        assert_eq!(anon.name, "system:anonymous");
    }

    #[test]
    fn decisions_come_from_subject_access_review_and_are_cached() {
        let api = Arc::new(FakeClient::new());
        api.allow_user("alice");
        let a = auth(&api, false, true);
        let alice = User {
            name: "alice".into(),
            ..User::default()
        };
        let bob = User {
            name: "bob".into(),
            ..User::default()
        };
        a.authorize(&alice, &request("GET", "/stats/summary", None))
            .unwrap();
        a.authorize(&alice, &request("GET", "/stats/summary", None))
            .unwrap();
        let denied = a.authorize(&bob, &request("POST", "/exec/ns/p/c", None));
        assert_eq!(
            denied,
            Err(Refusal::Forbidden(
                "Forbidden (user=bob, verb=create, resource=nodes, subresource=proxy)".into()
            ))
        );
        let sars = api
            .calls()
            .iter()
            .filter(|c| matches!(c, crate::api::fake::Call::CreateSubjectAccessReview))
            .count();
        assert_eq!(sars, 2, "one review for alice (cached), one for bob");
        // /pods tries nodes/pods, then nodes/proxy.
        let before = api.calls().len();
        assert!(a.authorize(&bob, &request("GET", "/pods", None)).is_err());
        assert_eq!(api.calls().len() - before, 2);
        // AlwaysAllow asks nobody.
        let open = auth(&api, false, false);
        let before = api.calls().len();
        open.authorize(&bob, &request("GET", "/pods", None))
            .unwrap();
        assert_eq!(api.calls().len(), before);
    }
}
