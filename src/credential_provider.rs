//! Image credential provider plugins (upstream `pkg/credentialprovider/plugin`):
//! `--image-credential-provider-config` names a `CredentialProviderConfig`
//! (`kubelet.config.k8s.io/v1`); for an image one of its providers' `matchImages` matches,
//! the plugin `<--image-credential-provider-bin-dir>/<name>` runs with a
//! `CredentialProviderRequest` on stdin and answers a `CredentialProviderResponse` on
//! stdout. Its credentials are cached per `cacheKeyType` for `cacheDuration` (the
//! provider's `defaultCacheDuration` when the answer has none) and tried for the pull after
//! the pod's `imagePullSecrets`, as upstream's keyring orders them.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::cri::api;
use crate::util::duration::parse_duration;

/// The plugin API versions upstream's kubelet speaks.
const PLUGIN_API_VERSIONS: [&str; 3] = [
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
];

/// The config file's API versions.
const CONFIG_API_VERSIONS: [&str; 3] = [
    "kubelet.config.k8s.io/v1",
    "kubelet.config.k8s.io/v1beta1",
    "kubelet.config.k8s.io/v1alpha1",
];

/// How long a plugin may run before it is killed and its answer counts as failed.
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// A configuration or answer that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The config file is unreadable or invalid.
    #[error("image credential provider config {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A plugin failed or answered something unusable.
    #[error("image credential provider {provider}: {message}")]
    Plugin {
        /// The provider's name.
        provider: String,
        /// What went wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigFile {
    api_version: String,
    kind: String,
    #[serde(default)]
    providers: Vec<ProviderSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProviderSpec {
    #[serde(default)]
    name: String,
    #[serde(default)]
    match_images: Vec<String>,
    default_cache_duration: Option<String>,
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<EnvVar>,
    token_attributes: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvVar {
    name: String,
    value: String,
}

/// A plugin's answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    cache_key_type: String,
    cache_duration: Option<String>,
    #[serde(default)]
    auth: BTreeMap<String, AuthEntry>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
struct AuthEntry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// A cached answer: the credentials by registry key, and when they expire.
type Cached = (BTreeMap<String, AuthEntry>, Instant);

/// One configured plugin.
#[derive(Debug)]
struct Provider {
    name: String,
    binary: PathBuf,
    match_images: Vec<String>,
    default_cache: Duration,
    api_version: String,
    args: Vec<String>,
    env: Vec<EnvVar>,
    /// Answers by cache key: the credentials and when they expire.
    cache: Mutex<HashMap<String, Cached>>,
}

/// The configured plugins.
#[derive(Debug)]
pub struct CredentialProviders {
    providers: Vec<Provider>,
}

impl CredentialProviders {
    /// Reads and checks `config`; every provider's plugin must be in `bin_dir`.
    pub fn load(config: &Path, bin_dir: &Path) -> Result<Self, ProviderError> {
        let err = |message: String| ProviderError::Config {
            path: config.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(config).map_err(|e| err(e.to_string()))?;
        let file: ConfigFile = serde_yaml_ng::from_str(&text).map_err(|e| err(e.to_string()))?;
        if !CONFIG_API_VERSIONS.contains(&file.api_version.as_str()) {
            return Err(err(format!(
                "unsupported apiVersion {:?}",
                file.api_version
            )));
        }
        if file.kind != "CredentialProviderConfig" {
            return Err(err(format!(
                "kind is {:?}, not CredentialProviderConfig",
                file.kind
            )));
        }
        if file.providers.is_empty() {
            return Err(err("at least 1 item in plugins is required".into()));
        }
        if !bin_dir.is_dir() {
            return Err(err(format!(
                "plugin binary directory {} did not exist",
                bin_dir.display()
            )));
        }
        let mut providers: Vec<Provider> = Vec::new();
        for (i, p) in file.providers.into_iter().enumerate() {
            let at = |field: &str, message: &str| err(format!("providers[{i}].{field}: {message}"));
            if p.name.is_empty() {
                return Err(at("name", "name is required"));
            }
            if p.name.contains('/') || p.name.contains(' ') || p.name == "." || p.name == ".." {
                return Err(at(
                    "name",
                    "name cannot contain '/' or ' ', or be '.' or '..'",
                ));
            }
            if providers.iter().any(|q| q.name == p.name) {
                return Err(at("name", &format!("duplicate provider name {:?}", p.name)));
            }
            if p.match_images.is_empty() {
                return Err(at(
                    "matchImages",
                    "at least 1 item in matchImages is required",
                ));
            }
            for image in &p.match_images {
                if image.contains("://") || image.is_empty() || image.contains(char::is_whitespace)
                {
                    return Err(at(
                        "matchImages",
                        &format!("match image {image:?} is invalid"),
                    ));
                }
            }
            let Some(cache) = p.default_cache_duration.as_deref() else {
                return Err(at(
                    "defaultCacheDuration",
                    "defaultCacheDuration is required",
                ));
            };
            let default_cache = parse_duration(cache)
                .ok()
                .and_then(|d| d.to_std())
                .ok_or_else(|| at("defaultCacheDuration", "must be a non-negative duration"))?;
            if p.api_version.is_empty() {
                return Err(at("apiVersion", "apiVersion is required"));
            }
            if !PLUGIN_API_VERSIONS.contains(&p.api_version.as_str()) {
                return Err(at(
                    "apiVersion",
                    &format!("unsupported apiVersion {:?}", p.api_version),
                ));
            }
            if p.token_attributes.is_some() {
                return Err(at(
                    "tokenAttributes",
                    "service account tokens for credential providers (feature gate \
                     KubeletServiceAccountTokenForCredentialProviders) are not supported",
                ));
            }
            let binary = bin_dir.join(&p.name);
            if !binary.is_file() {
                return Err(at(
                    "name",
                    &format!(
                        "plugin binary executable {} did not exist",
                        binary.display()
                    ),
                ));
            }
            providers.push(Provider {
                name: p.name,
                binary,
                match_images: p.match_images,
                default_cache,
                api_version: p.api_version,
                args: p.args,
                env: p.env,
                cache: Mutex::new(HashMap::new()),
            });
        }
        Ok(CredentialProviders { providers })
    }

    /// The credentials every matching plugin gives for `image`, most specific registry key
    /// first; a plugin that fails is logged and skipped, as upstream's keyring does.
    pub fn credentials(&self, image: &str) -> Vec<api::AuthConfig> {
        let mut found: Vec<(usize, api::AuthConfig)> = Vec::new();
        for p in &self.providers {
            if !p.match_images.iter().any(|m| urls_match(m, image)) {
                continue;
            }
            let auth = match p.lookup(image) {
                Ok(auth) => auth,
                Err(e) => {
                    log::warn!("image={image:?} {e}");
                    continue;
                }
            };
            for (key, entry) in auth {
                if !urls_match(&key, image) {
                    continue;
                }
                let mut a = api::AuthConfig::new();
                a.set_username(entry.username);
                a.set_password(entry.password);
                a.set_server_address(key.clone());
                found.push((key.len(), a));
            }
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        found.into_iter().map(|(_, a)| a).collect()
    }
}

impl Provider {
    /// The cached answer for `image`, or the plugin's.
    fn lookup(&self, image: &str) -> Result<BTreeMap<String, AuthEntry>, ProviderError> {
        let now = Instant::now();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.retain(|_, (_, expires)| *expires > now);
            for key in [image.to_string(), registry_of(image), String::new()] {
                if let Some((auth, _)) = cache.get(&key) {
                    return Ok(auth.clone());
                }
            }
        }
        let response = self.exec(image)?;
        let err = |message: String| ProviderError::Plugin {
            provider: self.name.clone(),
            message,
        };
        if response.kind != "CredentialProviderResponse" {
            return Err(err(format!(
                "kind was {:?}, expected CredentialProviderResponse",
                response.kind
            )));
        }
        if response.api_version != self.api_version {
            return Err(err(format!(
                "apiVersion from the response {:?} does not match the request's {:?}",
                response.api_version, self.api_version
            )));
        }
        let key = match response.cache_key_type.as_str() {
            "Image" => image.to_string(),
            "Registry" => registry_of(image),
            "Global" => String::new(),
            other => return Err(err(format!("invalid cacheKeyType {other:?}"))),
        };
        let ttl = match response.cache_duration.as_deref() {
            Some(d) => parse_duration(d)
                .ok()
                .and_then(|d| d.to_std())
                .ok_or_else(|| err(format!("invalid cacheDuration {d:?}")))?,
            None => self.default_cache,
        };
        if !ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.insert(key, (response.auth.clone(), now + ttl));
        }
        Ok(response.auth)
    }

    /// Runs the plugin for `image` and reads its answer.
    fn exec(&self, image: &str) -> Result<Response, ProviderError> {
        let err = |message: String| ProviderError::Plugin {
            provider: self.name.clone(),
            message,
        };
        let request = serde_json::json!({
            "kind": "CredentialProviderRequest",
            "apiVersion": self.api_version,
            "image": image,
        });
        let mut child = Command::new(&self.binary)
            .args(&self.args)
            .envs(self.env.iter().map(|e| (&e.name, &e.value)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("running {}: {e}", self.binary.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin that does not read its request still answers; a write error then
            // shows in its exit status, not here.
            let _ = stdin.write_all(request.to_string().as_bytes());
        }
        let stdout = drain(child.stdout.take(), 1 << 20)
            .map_err(|e| err(format!("starting its reader: {e}")))?;
        let stderr = drain(child.stderr.take(), 64 << 10)
            .map_err(|e| err(format!("starting its reader: {e}")))?;
        let deadline = Instant::now() + EXEC_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(err(format!("no answer within {EXEC_TIMEOUT:?}")));
                }
                Err(e) => return Err(err(format!("waiting for it: {e}"))),
            }
        };
        let out = stdout
            .join()
            .map_err(|_| err("its output reader failed".into()))?;
        let errs = stderr.join().unwrap_or_default();
        if !status.success() {
            return Err(err(format!(
                "{status}: {}",
                String::from_utf8_lossy(&errs).trim()
            )));
        }
        serde_json::from_slice(&out).map_err(|e| err(format!("decoding its answer: {e}")))
    }
}

/// Reads at most `limit` bytes of a plugin's output pipe on a thread of its own, so both
/// pipes drain at once and a plugin chatty on stderr never blocks.
fn drain<R: Read + Send + 'static>(
    pipe: Option<R>,
    limit: u64,
) -> std::io::Result<std::thread::JoinHandle<Vec<u8>>> {
    std::thread::Builder::new()
        .name("credential-plugin".into())
        .spawn(move || {
            let mut out = Vec::new();
            if let Some(pipe) = pipe {
                let _ = pipe.take(limit).read_to_end(&mut out);
            }
            out
        })
}

/// The registry (host and port) of an image, `docker.io` for Docker Hub's short names.
fn registry_of(image: &str) -> String {
    let location = crate::kuberuntime::images::image_location(image);
    location.split('/').next().unwrap_or_default().to_string()
}

/// Splits `[scheme://]host[:port][/path]` into host parts, port and path.
fn split(url: &str) -> (Vec<&str>, &str, &str) {
    let url = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (hostport, path) = url.find('/').map_or((url, ""), |i| (&url[..i], &url[i..]));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, ""));
    (host.split('.').collect(), port, path)
}

/// Whether `glob` (a `matchImages` entry or a response's registry key) matches `image`, as
/// upstream's `URLsMatchStr`: the same port, the same number of host labels each matching
/// its glob (`*` within a label), and the glob's path a prefix of the image's.
pub fn urls_match(glob: &str, image: &str) -> bool {
    let (glob_host, glob_port, glob_path) = split(glob);
    let (host, port, path) = split(image);
    glob_port == port
        && glob_host.len() == host.len()
        && path.starts_with(glob_path)
        && glob_host
            .iter()
            .zip(&host)
            .all(|(g, h)| label_matches(g, h))
}

/// `*` matches any run of characters (within one label), everything else itself.
fn label_matches(glob: &str, label: &str) -> bool {
    match glob.split_once('*') {
        None => glob == label,
        Some((prefix, rest)) => {
            let Some(after) = label.strip_prefix(prefix) else {
                return false;
            };
            (0..=after.len())
                .filter(|i| after.is_char_boundary(*i))
                .any(|i| label_matches(rest, &after[i..]))
        }
    }
}

#[cfg(test)]
mod tests;
