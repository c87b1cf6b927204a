//! Where API-backed volumes get their objects: ConfigMaps and Secrets through a small TTL
//! cache, service-account tokens through the TokenRequest API with refresh before 80% of
//! their lifetime (upstream `pkg/kubelet/configmap`, `pkg/kubelet/secret`,
//! `pkg/kubelet/token`).
//!
//! Change detection is a TTL cache, not a watch per object: every pod sync re-projects its
//! volumes from objects at most `ttl` old, and a pod's first set-up always reads fresh
//! objects (upstream does the same when it registers a pod). With the default sync frequency
//! of one minute and a TTL of ten seconds, an object change reaches the pod's files within
//! about seventy seconds.
//!
//! Only objects that a pod bound to this node references are ever read, with the kubelet's
//! own credentials, which is what the API server's node authorizer allows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::services::ServiceInformer;
use crate::api::{ApiError, KubeClient};
use crate::clock::{from_unix_nanos, Clock};

use super::error::VolumeError;

/// Default age after which a cached ConfigMap or Secret is read again.
pub const DEFAULT_OBJECT_TTL: Duration = Duration::from_secs(10);
/// Cache entries nobody asked for in this long are dropped.
const IDLE_EVICTION: Duration = Duration::from_secs(600);
/// Tokens are renewed at the latest this long after they were issued (upstream `maxTTL`).
const MAX_TOKEN_AGE: Duration = Duration::from_secs(24 * 3600);
/// Lifetime asked for when a projection names none (the API's default).
pub const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

struct Cached<T> {
    fetched: Instant,
    used: Instant,
    /// `None`: the object did not exist.
    value: Option<T>,
}

type ObjectKey = (String, String);

/// ConfigMaps and Secrets of the pods on this node, read through a TTL cache.
pub struct ObjectCache {
    api: Option<Arc<dyn KubeClient>>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    config_maps: Mutex<HashMap<ObjectKey, Cached<ConfigMap>>>,
    secrets: Mutex<HashMap<ObjectKey, Cached<Secret>>>,
    services: Mutex<HashMap<ObjectKey, Cached<Vec<Service>>>>,
    runtime_classes: Mutex<HashMap<ObjectKey, Cached<RuntimeClass>>>,
    /// The services as a watch keeps them; `None`: listed through the TTL cache.
    service_informer: Option<Arc<ServiceInformer>>,
}

impl ObjectCache {
    /// A cache over `api` (none for a standalone kubelet, where only static pods run and
    /// API objects cannot be referenced).
    pub fn new(api: Option<Arc<dyn KubeClient>>, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        ObjectCache {
            api,
            clock,
            ttl,
            config_maps: Mutex::new(HashMap::new()),
            secrets: Mutex::new(HashMap::new()),
            services: Mutex::new(HashMap::new()),
            runtime_classes: Mutex::new(HashMap::new()),
            service_informer: None,
        }
    }

    /// Reads services from `informer` (current as the watch delivers) once it has listed.
    pub fn with_service_informer(mut self, informer: Option<Arc<ServiceInformer>>) -> Self {
        self.service_informer = informer;
        self
    }

    /// The RuntimeClass `name` (cluster-scoped), `None` when it does not exist. Without an
    /// API server there is nothing to resolve it from: an error, so a pod asking for one
    /// never runs under the default handler by mistake.
    pub fn runtime_class(&self, name: &str) -> Result<Option<RuntimeClass>, VolumeError> {
        self.lookup(
            &self.runtime_classes,
            "runtimeclass",
            "",
            name,
            false,
            |api| api.get_runtime_class(name),
        )
    }

    /// The PersistentVolumeClaim `namespace/name` as the API server has it now (`None` when
    /// it does not exist). Not cached: a claim's phase is what decides.
    pub fn claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::PersistentVolumeClaim>, VolumeError> {
        self.read_now("persistentvolumeclaim", name, |api| {
            api.get_persistent_volume_claim(namespace, name)
        })
    }

    /// The PersistentVolume `name` as the API server has it now.
    pub fn persistent_volume(
        &self,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::PersistentVolume>, VolumeError> {
        self.read_now("persistentvolume", name, |api| {
            api.get_persistent_volume(name)
        })
    }

    /// The CSIDriver object `name` as the API server has it now (`None`: no such object, the
    /// driver's defaults apply).
    pub fn csi_driver(
        &self,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::storage::v1::CSIDriver>, VolumeError> {
        self.read_now("csidriver", name, |api| api.get_csi_driver(name))
    }

    /// The VolumeAttachment `name` as the API server has it now.
    pub fn volume_attachment(
        &self,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::storage::v1::VolumeAttachment>, VolumeError> {
        self.read_now("volumeattachment", name, |api| {
            api.get_volume_attachment(name)
        })
    }

    /// Node `name` as the API server has it now.
    pub fn node(
        &self,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::Node>, VolumeError> {
        self.read_now("node", name, |api| api.get_node(name))
    }

    /// The labels of Node `name` as the API server has them now.
    pub fn node_labels(
        &self,
        name: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, VolumeError> {
        let node = self.read_now("node", name, |api| api.get_node(name))?;
        Ok(node.map(|n| n.metadata.labels.unwrap_or_default()))
    }

    fn read_now<T>(
        &self,
        kind: &'static str,
        name: &str,
        get: impl FnOnce(&dyn KubeClient) -> Result<T, ApiError>,
    ) -> Result<Option<T>, VolumeError> {
        let Some(api) = self.api.as_deref() else {
            return Err(VolumeError::NoApiServer {
                what: format!("{kind} \"{name}\""),
            });
        };
        match get(api) {
            Ok(object) => Ok(Some(object)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(source) => Err(VolumeError::Api {
                what: format!("{kind} \"{name}\""),
                source: Box::new(source),
            }),
        }
    }

    /// Whether there is an API server to read from.
    pub fn has_api(&self) -> bool {
        self.api.is_some()
    }

    /// The services of `namespace` (empty without an API server): from the service
    /// informer, else (before its first list, or without one) from the API server.
    pub fn services(&self, namespace: &str) -> Result<Vec<Service>, VolumeError> {
        if self.api.is_none() {
            return Ok(Vec::new());
        }
        if let Some(services) = self
            .service_informer
            .as_ref()
            .and_then(|i| i.services(namespace))
        {
            return Ok(services);
        }
        let found = self.lookup(
            &self.services,
            "services in namespace",
            namespace,
            "",
            false,
            |api| api.list_services(namespace),
        )?;
        Ok(found.unwrap_or_default())
    }

    /// The ConfigMap `namespace/name`, `None` when it does not exist. `fresh` bypasses the
    /// cache (a pod's first set-up).
    pub fn config_map(
        &self,
        namespace: &str,
        name: &str,
        fresh: bool,
    ) -> Result<Option<ConfigMap>, VolumeError> {
        self.lookup(
            &self.config_maps,
            "configmap",
            namespace,
            name,
            fresh,
            |api| api.get_config_map(namespace, name),
        )
    }

    /// The Secret `namespace/name`, `None` when it does not exist.
    pub fn secret(
        &self,
        namespace: &str,
        name: &str,
        fresh: bool,
    ) -> Result<Option<Secret>, VolumeError> {
        self.lookup(&self.secrets, "secret", namespace, name, fresh, |api| {
            api.get_secret(namespace, name)
        })
    }

    fn lookup<T: Clone>(
        &self,
        cache: &Mutex<HashMap<ObjectKey, Cached<T>>>,
        kind: &'static str,
        namespace: &str,
        name: &str,
        fresh: bool,
        get: impl FnOnce(&dyn KubeClient) -> Result<T, ApiError>,
    ) -> Result<Option<T>, VolumeError> {
        let now = self.clock.now();
        let key = (namespace.to_string(), name.to_string());
        if !fresh {
            if let Ok(mut map) = cache.lock() {
                if let Some(entry) = map.get_mut(&key) {
                    if now.saturating_duration_since(entry.fetched) < self.ttl {
                        entry.used = now;
                        return Ok(entry.value.clone());
                    }
                }
            }
        }
        let Some(api) = self.api.as_deref() else {
            return Err(VolumeError::NoApiServer {
                what: format!("{kind} \"{name}\""),
            });
        };
        // The lock is not held across the request: other pods' syncs go on meanwhile.
        let value = match get(api) {
            Ok(object) => Some(object),
            Err(e) if e.is_not_found() => None,
            Err(source) => {
                return Err(VolumeError::Api {
                    what: format!("{kind} \"{name}\""),
                    source: Box::new(source),
                })
            }
        };
        if let Ok(mut map) = cache.lock() {
            map.retain(|_, c| now.saturating_duration_since(c.used) < IDLE_EVICTION);
            map.insert(
                key,
                Cached {
                    fetched: now,
                    used: now,
                    value: value.clone(),
                },
            );
        }
        Ok(value)
    }
}

/// What a `serviceAccountToken` projection asks for, for one pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's service account.
    pub service_account: String,
    /// The audience; empty for the API server's own.
    pub audience: String,
    /// Requested lifetime.
    pub expiration_seconds: i64,
    /// The pod the token is bound to.
    pub pod_name: String,
    /// Its UID.
    pub pod_uid: String,
}

struct IssuedToken {
    token: String,
    issued: SystemTime,
    expires: SystemTime,
}

/// Bound service-account tokens for pods, requested and refreshed as upstream's token
/// manager does: a token is renewed once 80% of its lifetime has passed or it is a day old;
/// if renewal fails, the old token is served until it expires.
pub struct TokenManager {
    api: Option<Arc<dyn KubeClient>>,
    clock: Arc<dyn Clock>,
    tokens: Mutex<HashMap<TokenKey, IssuedToken>>,
}

impl TokenManager {
    /// A manager over `api`.
    pub fn new(api: Option<Arc<dyn KubeClient>>, clock: Arc<dyn Clock>) -> Self {
        TokenManager {
            api,
            clock,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// A token for `key`, from the cache while it is fresh, else from the API.
    pub fn token(&self, key: &TokenKey) -> Result<String, VolumeError> {
        let now = self.clock.wall();
        if let Ok(map) = self.tokens.lock() {
            if let Some(t) = map.get(key) {
                if !needs_refresh(t, key.expiration_seconds, now) {
                    return Ok(t.token.clone());
                }
            }
        }
        match self.request(key) {
            Ok(issued) => {
                let token = issued.token.clone();
                if let Ok(mut map) = self.tokens.lock() {
                    map.insert(key.clone(), issued);
                }
                Ok(token)
            }
            Err(e) => {
                let still_valid = self.tokens.lock().ok().and_then(|map| {
                    map.get(key)
                        .filter(|t| t.expires > now)
                        .map(|t| t.token.clone())
                });
                match still_valid {
                    Some(token) => {
                        log::warn!(
                            "pod=\"{}/{}\" renewing service account token failed, the current one stays in use: {e}",
                            key.namespace,
                            key.pod_name
                        );
                        Ok(token)
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// How many tokens are held, for all pods.
    pub fn len(&self) -> usize {
        self.tokens.lock().map_or(0, |m| m.len())
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets the tokens of a pod that is gone.
    pub fn forget_pod(&self, pod_uid: &str) {
        if let Ok(mut map) = self.tokens.lock() {
            map.retain(|k, _| k.pod_uid != pod_uid);
        }
    }

    fn request(&self, key: &TokenKey) -> Result<IssuedToken, VolumeError> {
        let what = format!("token for serviceaccount \"{}\"", key.service_account);
        let Some(api) = self.api.as_deref() else {
            return Err(VolumeError::NoApiServer { what });
        };
        let request = TokenRequest {
            metadata: ObjectMeta::default(),
            spec: TokenRequestSpec {
                audiences: if key.audience.is_empty() {
                    Vec::new()
                } else {
                    vec![key.audience.clone()]
                },
                expiration_seconds: Some(key.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(key.pod_name.clone()),
                    uid: Some(key.pod_uid.clone()),
                }),
            },
            status: None,
        };
        let answer = api
            .create_token(&key.namespace, &key.service_account, &request)
            .map_err(|source| VolumeError::Api {
                what: what.clone(),
                source: Box::new(source),
            })?;
        let status = answer.status.ok_or_else(|| VolumeError::BadToken {
            what: what.clone(),
            reason: "the answer has no status",
        })?;
        if status.token.is_empty() {
            return Err(VolumeError::BadToken {
                what,
                reason: "the answer holds an empty token",
            });
        }
        let nanos = status.expiration_timestamp.0.as_nanosecond();
        let expires = from_unix_nanos(i64::try_from(nanos).unwrap_or(i64::MAX));
        // The API may shorten the lifetime; what it granted is what counts.
        let granted = answer
            .spec
            .expiration_seconds
            .unwrap_or(key.expiration_seconds);
        let issued = expires
            .checked_sub(Duration::from_secs(u64::try_from(granted).unwrap_or(0)))
            .unwrap_or(expires);
        Ok(IssuedToken {
            token: status.token,
            issued,
            expires,
        })
    }
}

/// Upstream `requiresRefresh`: a day old, or within the last 20% of the lifetime.
fn needs_refresh(t: &IssuedToken, expiration_seconds: i64, now: SystemTime) -> bool {
    if now >= t.issued + MAX_TOKEN_AGE {
        return true;
    }
    let lifetime = t
        .expires
        .duration_since(t.issued)
        .unwrap_or_else(|_| Duration::from_secs(u64::try_from(expiration_seconds).unwrap_or(0)));
    now + lifetime / 5 >= t.expires
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fake::FakeClient;
    use crate::clock::FakeClock;

    fn cm(name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            data: Some([("k".to_string(), value.to_string())].into()),
            ..Default::default()
        }
    }

    fn value(c: Option<ConfigMap>) -> Option<String> {
        c.and_then(|c| c.data).and_then(|d| d.get("k").cloned())
    }

    #[test]
    fn objects_are_cached_for_the_ttl_and_fresh_reads_bypass_it() {
        let api = Arc::new(FakeClient::new());
        let clock = Arc::new(FakeClock::new());
        api.put_config_map(cm("a", "1"));
        let cache = ObjectCache::new(
            Some(api.clone() as Arc<dyn KubeClient>),
            clock.clone(),
            Duration::from_secs(10),
        );
        assert_eq!(
            value(cache.config_map("ns", "a", false).unwrap()),
            Some("1".into())
        );
        api.put_config_map(cm("a", "2"));
        assert_eq!(
            value(cache.config_map("ns", "a", false).unwrap()),
            Some("1".into())
        );
        assert_eq!(
            value(cache.config_map("ns", "a", true).unwrap()),
            Some("2".into())
        );
        api.put_config_map(cm("a", "3"));
        clock.step(Duration::from_secs(11));
        assert_eq!(
            value(cache.config_map("ns", "a", false).unwrap()),
            Some("3".into())
        );
        assert!(cache.config_map("ns", "missing", false).unwrap().is_none());
        assert!(cache.secret("ns", "missing", false).unwrap().is_none());
    }

    #[test]
    fn without_an_api_server_objects_are_an_error_naming_them() {
        let cache = ObjectCache::new(None, Arc::new(FakeClock::new()), DEFAULT_OBJECT_TTL);
        let err = cache.config_map("ns", "cfg", false).unwrap_err();
        assert!(err.to_string().contains("configmap \"cfg\""), "{err}");
    }

    fn key() -> TokenKey {
        TokenKey {
            namespace: "ns".into(),
            service_account: "default".into(),
            audience: String::new(),
            expiration_seconds: 3600,
            pod_name: "web".into(),
            pod_uid: "uid-1".into(),
        }
    }

    #[test]
    fn tokens_are_bound_to_the_pod_and_renewed_after_80_percent_of_their_life() {
        let api = Arc::new(FakeClient::new());
        let clock = Arc::new(FakeClock::new());
        let tokens = TokenManager::new(Some(api.clone() as Arc<dyn KubeClient>), clock.clone());
        let first = tokens.token(&key()).unwrap();
        assert_eq!(tokens.token(&key()).unwrap(), first);
        let requests = api.token_requests();
        assert_eq!(requests.len(), 1);
        let bound = requests[0].2.spec.bound_object_ref.clone().unwrap();
        assert_eq!(
            (
                bound.kind.as_deref(),
                bound.name.as_deref(),
                bound.uid.as_deref()
            ),
            (Some("Pod"), Some("web"), Some("uid-1"))
        );
        assert!(requests[0].2.spec.audiences.is_empty());

        clock.step(Duration::from_secs(2879));
        assert_eq!(tokens.token(&key()).unwrap(), first, "before 80%");
        clock.step(Duration::from_secs(2));
        let second = tokens.token(&key()).unwrap();
        assert_ne!(second, first, "after 80%");
        assert_eq!(api.token_requests().len(), 2);

        tokens.forget_pod("uid-1");
        let third = tokens.token(&key()).unwrap();
        assert_ne!(third, second);
    }
}
