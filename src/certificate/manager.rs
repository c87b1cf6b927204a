//! Certificate rotation (client-go's certificate manager), one thread per certificate
//! (`cert-rotation-client`, `cert-rotation-serving`).
//!
//! The thread sleeps until the rotation deadline of the certificate in use: a random point
//! between 70% and 90% of its lifetime after `notBefore`, so a fleet's nodes do not renew
//! together. It then makes a new key, asks for a certificate through a CertificateSigningRequest
//! (`generateName: csr-`, signed in with the identity in use, or with the bootstrap
//! credentials when that identity has expired), stores the pair and hands it to its user
//! (the API client, or the kubelet API's TLS). The old certificate stays in use until the new
//! one is issued. A failed attempt is retried with back-off from 2 s doubling to 5 minutes.
//! A certificate that is missing, or whose template (names, addresses) changed while the
//! kubelet runs, is asked for at once.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::csr::{self, Naming, Template};
use super::store::FileStore;
use super::{CertError, Pair};
use crate::api::CsrClient;
use crate::util::backoff::Exponential;

/// How long one rotation waits for its certificate (upstream: 15 minutes).
pub const ROTATION_WAIT: Duration = Duration::from_secs(15 * 60);
/// The longest sleep before the wall clock is read again (it may have jumped).
const MAX_SLEEP: Duration = Duration::from_secs(600);
/// How often a template that is not known yet (no node address) is asked for again.
const TEMPLATE_POLL: Duration = Duration::from_secs(5);

/// Who receives a newly issued pair.
pub type OnRotated = Box<dyn Fn(&Pair) + Send>;
/// The template to ask for now; `None` while it cannot be known yet.
pub type TemplateFn = Box<dyn Fn() -> Option<Template> + Send>;

/// One certificate kept fresh.
pub struct Rotation {
    /// `client` or `serving`: the thread's and the log lines' name.
    pub name: &'static str,
    /// Where the pairs are stored.
    pub store: FileStore,
    /// What to ask for.
    pub template: TemplateFn,
    /// The API client requests are made with.
    pub client: Arc<dyn CsrClient>,
    /// Used instead of `client` while the pair in use has expired (the bootstrap
    /// credentials, when the node identity can no longer sign in).
    pub fallback: Option<Arc<dyn CsrClient>>,
    /// Receives each new pair.
    pub on_rotated: OnRotated,
    /// How long one request waits to be issued.
    pub wait: Duration,
}

/// The rotation deadline of a certificate valid over `validity`, at `fraction` (0.7 to 0.9)
/// of its lifetime.
pub fn deadline_at(pair: &Pair, fraction: f64) -> SystemTime {
    let lifetime = pair.validity.lifetime();
    pair.validity.not_before + lifetime.mul_f64(fraction.clamp(0.0, 1.0))
}

/// A random fraction in [0.7, 0.9] (upstream's jittered 70 to 90%).
fn jittered_fraction() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    let random = match ring::rand::SystemRandom::new().fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    };
    0.7 + 0.2 * random
}

impl Rotation {
    /// Starts the thread, beginning with `current` (the pair in use, if any).
    pub fn start(
        self,
        current: Option<Pair>,
        stop: Receiver<()>,
    ) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("cert-rotation-{}", self.name))
            .spawn(move || self.run(current, &stop))
    }

    fn run(self, mut current: Option<Pair>, stop: &Receiver<()>) {
        let mut backoff = Exponential::new(Duration::from_secs(2), Duration::from_secs(300));
        let mut deadline = current
            .as_ref()
            .map(|p| deadline_at(p, jittered_fraction()));
        // A stored certificate for another identity (the node was renamed) or, for serving,
        // other names or addresses (the node's IP changed) is replaced at once, as upstream
        // does when the current certificate does not match the template.
        if let (Some(p), Some(t)) = (&current, (self.template)()) {
            if !subject_matches(p, &t) {
                log::warn!(
                    "the {} certificate in use is not for {} ({:?}); asking for a new one now",
                    self.name,
                    t.common_name,
                    t.organizations
                );
                deadline = Some(SystemTime::now());
            }
        }
        let mut asked_for: Option<Template> = None;
        if let (Some(p), Some(d)) = (&current, deadline) {
            log::info!(
                "{} certificate expires {}; rotation at {}",
                self.name,
                stamp(p.validity.not_after),
                stamp(d)
            );
        }
        loop {
            let template = (self.template)();
            let changed = matches!((&template, &asked_for), (Some(t), Some(a)) if t != a);
            let wait = match deadline {
                Some(_) if changed => Duration::ZERO,
                Some(d) => d.duration_since(SystemTime::now()).unwrap_or_default(),
                None => Duration::ZERO,
            };
            let wait = if template.is_none() {
                wait.max(TEMPLATE_POLL)
            } else {
                wait
            };
            if !wait.is_zero() {
                match stop.recv_timeout(wait.min(MAX_SLEEP)) {
                    Err(RecvTimeoutError::Timeout) => continue,
                    _ => return,
                }
            }
            let Some(template) = template else { continue };
            match self.rotate(&template, current.as_ref(), stop) {
                Ok(pair) => {
                    (self.on_rotated)(&pair);
                    let next = deadline_at(&pair, jittered_fraction());
                    log::info!(
                        "rotated the {} certificate; it expires {}, next rotation at {}",
                        self.name,
                        stamp(pair.validity.not_after),
                        stamp(next)
                    );
                    deadline = Some(next);
                    current = Some(pair);
                    asked_for = Some(template);
                    backoff.reset();
                }
                Err(CertError::Stopped(_)) => return,
                Err(e) => {
                    let wait = backoff.next_delay();
                    log::error!(
                        "rotating the {} certificate: {e}; retrying in {wait:?}",
                        self.name
                    );
                    if !matches!(stop.recv_timeout(wait), Err(RecvTimeoutError::Timeout)) {
                        return;
                    }
                }
            }
        }
    }

    fn rotate(
        &self,
        template: &Template,
        current: Option<&Pair>,
        stop: &Receiver<()>,
    ) -> Result<Pair, CertError> {
        let expired = current.is_none_or(|p| !p.validity.contains(SystemTime::now()));
        let client = match (&self.fallback, expired) {
            (Some(fallback), true) => {
                log::warn!("the {} certificate in use is expired or missing; asking with the bootstrap credentials", self.name);
                fallback.as_ref()
            }
            _ => self.client.as_ref(),
        };
        let key = csr::new_key()?;
        let cert_pem = csr::request_certificate(
            client,
            template,
            &key,
            &Naming::Generate("csr-"),
            self.wait,
            stop,
        )?;
        self.store.update(&cert_pem, &key.serialize_pem())
    }
}

/// Whether the leaf of `pair` has the template's CN and organizations and, for a template
/// with subject alternative names (serving), the same DNS names and IP addresses.
fn subject_matches(pair: &Pair, template: &Template) -> bool {
    use rustls::pki_types::pem::PemObject;
    let Some(Ok(leaf)) =
        rustls::pki_types::CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes()).next()
    else {
        return false;
    };
    let Some(subject) = crate::util::x509::subject(&leaf) else {
        return false;
    };
    let mut have = subject.organizations.clone();
    let mut want = template.organizations.clone();
    have.sort();
    want.sort();
    if subject.common_name != template.common_name || have != want {
        return false;
    }
    if template.dns_names.is_empty() && template.ips.is_empty() {
        return true;
    }
    let Some(names) = crate::util::x509::alt_names(&leaf) else {
        return false;
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v.dedup();
        v
    };
    let mut have_ips = names.ips;
    let mut want_ips = template.ips.clone();
    have_ips.sort();
    have_ips.dedup();
    want_ips.sort();
    want_ips.dedup();
    sorted(names.dns_names) == sorted(template.dns_names.clone()) && have_ips == want_ips
}

fn stamp(t: SystemTime) -> String {
    crate::types::api_time(t)
        .map(|t| t.0.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::x509::Validity;

    fn pair(start: u64, lifetime: u64) -> Pair {
        let not_before = SystemTime::UNIX_EPOCH + Duration::from_secs(start);
        Pair {
            cert_pem: String::new(),
            key_pem: String::new(),
            validity: Validity {
                not_before,
                not_after: not_before + Duration::from_secs(lifetime),
            },
        }
    }

    /// A self-signed PEM certificate for `system:node:node-a` in `system:nodes` with these
    /// subject alternative names.
    fn node_a_cert(dns_names: Vec<String>, ips: Vec<std::net::IpAddr>) -> String {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(dns_names).unwrap();
        params
            .subject_alt_names
            .extend(ips.into_iter().map(rcgen::SanType::IpAddress));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:node-a");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_certificate_for_another_node_does_not_match_the_template() {
        let mut p = pair(0, 1);
        p.cert_pem = node_a_cert(Vec::new(), Vec::new());
        let template = crate::certificate::bootstrap::client_template;
        assert!(subject_matches(&p, &template("node-a")));
        assert!(!subject_matches(&p, &template("node-b")));
        let mut other_group = template("node-a");
        other_group.organizations = vec!["system:masters".into()];
        assert!(!subject_matches(&p, &other_group));
        assert!(!subject_matches(&pair(0, 1), &template("node-a")), "no PEM");

        // Serving: the names and addresses count too.
        let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
        let mut serving = pair(0, 1);
        serving.cert_pem = node_a_cert(vec!["node-a".into()], vec![ip("10.0.0.7")]);
        let serving_template = |ips: &[std::net::IpAddr]| Template {
            common_name: "system:node:node-a".into(),
            organizations: vec!["system:nodes".into()],
            dns_names: vec!["node-a".into()],
            ips: ips.to_vec(),
            signer: crate::certificate::SERVING_SIGNER,
            usages: crate::certificate::csr::SERVING_USAGES,
        };
        assert!(subject_matches(
            &serving,
            &serving_template(&[ip("10.0.0.7")])
        ));
        assert!(!subject_matches(
            &serving,
            &serving_template(&[ip("10.0.0.8")])
        ));
        assert!(!subject_matches(
            &serving,
            &serving_template(&[ip("10.0.0.7"), ip("fd00::7")])
        ));
    }

    #[test]
    fn deadlines_fall_between_70_and_90_percent_of_the_lifetime() {
        let p = pair(1000, 1000);
        let at = |f| {
            deadline_at(&p, f)
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        assert_eq!((at(0.7), at(0.9)), (1700, 1900));
        for _ in 0..200 {
            let f = jittered_fraction();
            assert!((0.7..=0.9).contains(&f), "{f}");
        }
        let spread: std::collections::HashSet<u64> = (0..50)
            .map(|_| (jittered_fraction() * 1e6) as u64)
            .collect();
        assert!(spread.len() > 40, "random, not fixed: {spread:?}");
    }
}
