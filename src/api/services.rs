//! The service informer (upstream's service lister in `kubelet.go`): thread
//! `service-informer` lists every service that has a cluster IP
//! (`fieldSelector=spec.clusterIP!=None`, as upstream: headless services give no
//! environment variables) and watches for changes, so a container created just after a
//! service sees that service's `<NAME>_SERVICE_HOST` variables. Relists on `410 Gone`,
//! re-watches when the server ends a watch, backs off (0.8 s doubling to 30 s) on failures.
//! Readers take a snapshot of one namespace; before the first list they get `None` and read
//! the API server themselves.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use k8s_openapi::api::core::v1::Service;

use super::{ApiError, KubeClient, ListOptions, WatchEvent};
use crate::util::backoff::Exponential;

/// Only services with a cluster IP matter for environment variables.
const SELECTOR: &str = "spec.clusterIP!=None";
/// First retry delay after a failure.
const BACKOFF_INITIAL: Duration = Duration::from_millis(800);
/// Retry delay cap.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Server-side watch timeout.
const WATCH_TIMEOUT_SECS: u32 = 300;

/// Services by (namespace, name).
type Services = BTreeMap<(String, String), Arc<Service>>;

/// Keeps every service with a cluster IP, as the API server has them.
pub struct ServiceInformer {
    client: Arc<dyn KubeClient>,
    /// `None` until the first list arrived.
    services: RwLock<Option<Services>>,
}

/// Why one watch ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Watch again from the last resourceVersion.
    Closed,
    /// List again.
    Gone,
    /// Back off, then watch again.
    Failed,
    /// Stop fired.
    Stopped,
}

fn key_of(service: &Service) -> (String, String) {
    (
        service.metadata.namespace.clone().unwrap_or_default(),
        service.metadata.name.clone().unwrap_or_default(),
    )
}

impl ServiceInformer {
    /// An informer reading through `client`; nothing is read until [`Self::relist`] or
    /// [`Self::start`].
    pub fn new(client: Arc<dyn KubeClient>) -> Arc<ServiceInformer> {
        Arc::new(ServiceInformer {
            client,
            services: RwLock::new(None),
        })
    }

    /// The services of `namespace`, sorted by name; `None` before the first list.
    pub fn services(&self, namespace: &str) -> Option<Vec<Service>> {
        let guard = self.services.read().unwrap_or_else(|p| p.into_inner());
        let all = guard.as_ref()?;
        Some(
            all.range((namespace.to_string(), String::new())..)
                .take_while(|((ns, _), _)| ns == namespace)
                .map(|(_, s)| Service::clone(s))
                .collect(),
        )
    }

    /// Lists every service; returns the list's resourceVersion.
    pub fn relist(&self) -> Result<String, ApiError> {
        let list = self.client.list_all_services(&ListOptions {
            field_selector: Some(SELECTOR.into()),
            ..Default::default()
        })?;
        let services: Services = list
            .items
            .into_iter()
            .map(|s| (key_of(&s), Arc::new(s)))
            .collect();
        *self.services.write().unwrap_or_else(|p| p.into_inner()) = Some(services);
        Ok(list.resource_version)
    }

    fn apply(&self, event: &WatchEvent<Service>) {
        let mut guard = self.services.write().unwrap_or_else(|p| p.into_inner());
        let Some(all) = guard.as_mut() else {
            return;
        };
        match event {
            WatchEvent::Added(s) | WatchEvent::Modified(s) => {
                all.insert(key_of(s), Arc::new(s.clone()));
            }
            WatchEvent::Deleted(s) => {
                all.remove(&key_of(s));
            }
            _ => {}
        }
    }

    /// Watches from `*resource_version` until the watch ends, applying each change.
    fn watch_once(
        &self,
        resource_version: &mut String,
        stop: &Receiver<()>,
    ) -> Result<End, ApiError> {
        let stream = self.client.watch_services(&ListOptions {
            field_selector: Some(SELECTOR.into()),
            resource_version: Some(resource_version.clone()),
            timeout_seconds: Some(WATCH_TIMEOUT_SECS),
            allow_watch_bookmarks: true,
            ..Default::default()
        })?;
        for event in stream {
            if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                return Ok(End::Stopped);
            }
            match event {
                Ok(WatchEvent::Bookmark {
                    resource_version: rv,
                }) => *resource_version = rv,
                Ok(WatchEvent::Error(status)) if status.code == 410 => return Ok(End::Gone),
                Ok(WatchEvent::Error(status)) => {
                    log::warn!(
                        "service watch error event: {} {}",
                        status.code,
                        status.message
                    );
                    return Ok(End::Failed);
                }
                Ok(event) => {
                    let rv = match &event {
                        WatchEvent::Added(s) | WatchEvent::Modified(s) | WatchEvent::Deleted(s) => {
                            s.metadata.resource_version.clone()
                        }
                        _ => None,
                    };
                    self.apply(&event);
                    if let Some(rv) = rv {
                        *resource_version = rv;
                    }
                }
                Err(e) => {
                    log::warn!("service watch: {e}");
                    return Ok(End::Failed);
                }
            }
        }
        Ok(End::Closed)
    }

    /// Starts thread `service-informer`; it ends when `stop` fires or disconnects.
    pub fn start(self: &Arc<Self>, stop: Receiver<()>) -> std::io::Result<JoinHandle<()>> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("service-informer".into())
            .spawn(move || me.run(&stop))
    }

    /// List, then watch, until `stop` fires (see the module docs).
    pub fn run(&self, stop: &Receiver<()>) {
        let mut backoff = Exponential::new(BACKOFF_INITIAL, BACKOFF_MAX);
        let mut resource_version: Option<String> = None;
        loop {
            let result = match resource_version.as_mut() {
                None => self.relist().map(|rv| {
                    resource_version = Some(rv);
                    End::Closed
                }),
                Some(rv) => self.watch_once(rv, stop),
            };
            let wait = match result {
                Ok(End::Stopped) => return,
                Ok(End::Closed) => {
                    backoff.reset();
                    Duration::ZERO
                }
                Ok(End::Gone) => {
                    resource_version = None;
                    Duration::ZERO
                }
                Ok(End::Failed) | Err(_) => {
                    let wait = backoff.next_delay();
                    if let Err(e) = &result {
                        log::warn!("services: {e}; retrying in {wait:?}");
                        if e.code() == Some(410) {
                            resource_version = None;
                        }
                    }
                    wait
                }
            };
            match stop.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FakeClient;
    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn service(namespace: &str, name: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.96.0.9".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn services_are_kept_by_namespace_and_follow_watch_events() {
        let fake = Arc::new(FakeClient::new());
        fake.insert_service(&service("a", "one")).unwrap();
        fake.insert_service(&service("b", "two")).unwrap();
        let informer = ServiceInformer::new(fake);
        assert_eq!(
            informer.services("a"),
            None,
            "nothing before the first list"
        );
        informer.relist().unwrap();
        let names = |ns: &str| -> Vec<String> {
            informer
                .services(ns)
                .unwrap()
                .into_iter()
                .map(|s| s.metadata.name.unwrap())
                .collect()
        };
        assert_eq!(names("a"), ["one"]);
        informer.apply(&WatchEvent::Added(service("a", "three")));
        informer.apply(&WatchEvent::Deleted(service("a", "one")));
        assert_eq!(names("a"), ["three"]);
        assert_eq!(names("b"), ["two"]);
        assert!(names("c").is_empty());
    }
}
