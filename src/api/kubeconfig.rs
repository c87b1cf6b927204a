//! Loading a kubeconfig file (`apiVersion: v1`, `kind: Config`) into the settings of the REST
//! client: the current context's cluster (server URL, CA, TLS options) and user (client
//! certificate and key, bearer token or token file). Runs once at start-up on the main thread.
//!
//! Follows client-go's rules: `*-data` fields win over the file fields beside them, a
//! `tokenFile` wins over `token`, relative paths are relative to the kubeconfig's directory,
//! and a CA together with `insecure-skip-tls-verify` is refused. Every error names the file and
//! the field, e.g. `/etc/kubernetes/kubelet.conf: users[0].user.client-key: reading /x/key.pem:
//! No such file or directory`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ApiError;

/// What the REST client needs to reach and authenticate to one API server.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RestConfig {
    /// Base URL, e.g. `https://10.0.0.1:6443`, without a trailing slash.
    pub server: String,
    /// PEM bundle of the CAs to trust; `None` means the platform's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate (chain) for mutual TLS.
    pub client_cert_pem: Option<Vec<u8>>,
    /// PEM private key of the client certificate.
    pub client_key_pem: Option<Vec<u8>>,
    /// Bearer token (the token file's contents when one is set).
    pub bearer_token: Option<String>,
    /// File the token is re-read from, so rotated tokens are picked up.
    pub token_file: Option<PathBuf>,
    /// Accept any server certificate. For test clusters only.
    pub insecure_skip_tls_verify: bool,
    /// Name to verify the server certificate against instead of the URL's host.
    pub tls_server_name: Option<String>,
}

impl std::fmt::Debug for RestConfig {
    /// Keys and tokens stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestConfig")
            .field("server", &self.server)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<set>"))
            .field(
                "client_cert_pem",
                &self.client_cert_pem.as_ref().map(|_| "<set>"),
            )
            .field(
                "client_key_pem",
                &self.client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("token_file", &self.token_file)
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("tls_server_name", &self.tls_server_name)
            .finish()
    }
}

/// The kubeconfig file as written (only the fields the kubelet reads).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct KubeConfigFile {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(rename = "current-context")]
    current_context: Option<String>,
    clusters: Vec<Named<ClusterEntry>>,
    users: Vec<Named<UserEntry>>,
    contexts: Vec<Named<ContextEntry>>,
}

/// A `{name, <item>}` list entry; the item's key differs per list, hence the flatten.
#[derive(Debug, Deserialize)]
struct Named<T> {
    #[serde(default)]
    name: String,
    #[serde(flatten)]
    item: T,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ClusterEntry {
    cluster: Cluster,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UserEntry {
    user: User,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
struct User {
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    exec: Option<serde_yaml_ng::Value>,
    auth_provider: Option<serde_yaml_ng::Value>,
    username: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ContextEntry {
    context: Context,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Context {
    cluster: String,
    user: String,
}

/// Loads the kubeconfig at `path` and resolves its current context into a [`RestConfig`].
pub fn load(path: &Path) -> Result<RestConfig, ApiError> {
    let err =
        |field: &str, msg: String| ApiError::Config(format!("{}: {field}{msg}", path.display()));
    let text =
        std::fs::read_to_string(path).map_err(|e| err("", format!("reading: {}", io_msg(&e))))?;
    let file: KubeConfigFile =
        serde_yaml_ng::from_str(&text).map_err(|e| err("", format!("parsing YAML: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    resolve(&file, dir).map_err(|(field, msg)| err(&format!("{field}: "), msg))
}

/// A field path and what is wrong there.
type FieldError = (String, String);

fn resolve(file: &KubeConfigFile, dir: &Path) -> Result<RestConfig, FieldError> {
    if let Some(v) = file.api_version.as_deref().filter(|v| *v != "v1") {
        return Err((
            "apiVersion".into(),
            format!("{v:?} is not supported, want \"v1\""),
        ));
    }
    if let Some(k) = file.kind.as_deref().filter(|k| *k != "Config") {
        return Err((
            "kind".into(),
            format!("{k:?} is not supported, want \"Config\""),
        ));
    }
    let current = file
        .current_context
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ("current-context".to_string(), "not set".to_string()))?;
    let (ci, context) = find(&file.contexts, current).ok_or_else(|| {
        (
            "current-context".to_string(),
            format!("{current:?} not found in contexts"),
        )
    })?;
    let context = &context.context;
    let (cli, cluster) = find(&file.clusters, &context.cluster).ok_or_else(|| {
        (
            format!("contexts[{ci}].context.cluster"),
            format!("{:?} not found in clusters", context.cluster),
        )
    })?;
    let mut config = RestConfig::default();
    read_cluster(
        &cluster.cluster,
        &format!("clusters[{cli}].cluster"),
        dir,
        &mut config,
    )?;
    if !context.user.is_empty() {
        let (ui, user) = find(&file.users, &context.user).ok_or_else(|| {
            (
                format!("contexts[{ci}].context.user"),
                format!("{:?} not found in users", context.user),
            )
        })?;
        read_user(&user.user, &format!("users[{ui}].user"), dir, &mut config)?;
    }
    Ok(config)
}

fn find<'a, T>(list: &'a [Named<T>], name: &str) -> Option<(usize, &'a T)> {
    list.iter()
        .enumerate()
        .find(|(_, e)| e.name == name)
        .map(|(i, e)| (i, &e.item))
}

fn read_cluster(c: &Cluster, at: &str, dir: &Path, out: &mut RestConfig) -> Result<(), FieldError> {
    let server = c.server.trim().trim_end_matches('/');
    if server.is_empty() {
        return Err((format!("{at}.server"), "not set".into()));
    }
    if !(server.starts_with("https://") || server.starts_with("http://")) {
        return Err((
            format!("{at}.server"),
            format!("{server:?} is not an http(s) URL"),
        ));
    }
    out.server = server.to_string();
    out.ca_pem = pem_source(
        at,
        (
            "certificate-authority-data",
            c.certificate_authority_data.as_deref(),
        ),
        ("certificate-authority", c.certificate_authority.as_deref()),
        dir,
    )?;
    out.insecure_skip_tls_verify = c.insecure_skip_tls_verify;
    if out.insecure_skip_tls_verify && out.ca_pem.is_some() {
        return Err((
            format!("{at}.insecure-skip-tls-verify"),
            "specifying a root certificate authority together with insecure-skip-tls-verify is not allowed".into(),
        ));
    }
    out.tls_server_name = c.tls_server_name.clone().filter(|n| !n.is_empty());
    Ok(())
}

fn read_user(u: &User, at: &str, dir: &Path, out: &mut RestConfig) -> Result<(), FieldError> {
    if u.exec.is_some() {
        return Err((
            format!("{at}.exec"),
            "exec credential plugins are not supported".into(),
        ));
    }
    if u.auth_provider.is_some() {
        return Err((
            format!("{at}.auth-provider"),
            "auth provider plugins are not supported".into(),
        ));
    }
    if u.username.is_some() {
        log::warn!("kubeconfig {at}.username: basic authentication is not supported, ignored");
    }
    out.client_cert_pem = pem_source(
        at,
        (
            "client-certificate-data",
            u.client_certificate_data.as_deref(),
        ),
        ("client-certificate", u.client_certificate.as_deref()),
        dir,
    )?;
    out.client_key_pem = pem_source(
        at,
        ("client-key-data", u.client_key_data.as_deref()),
        ("client-key", u.client_key.as_deref()),
        dir,
    )?;
    match (&out.client_cert_pem, &out.client_key_pem) {
        (Some(_), None) => {
            return Err((
                format!("{at}.client-key"),
                "client certificate given without a key".into(),
            ))
        }
        (None, Some(_)) => {
            return Err((
                format!("{at}.client-certificate"),
                "client key given without a certificate".into(),
            ))
        }
        _ => {}
    }
    out.bearer_token = u.token.clone().filter(|t| !t.is_empty());
    if let Some(file) = u.token_file.as_deref().filter(|f| !f.is_empty()) {
        let file = dir.join(file);
        let token = std::fs::read_to_string(&file).map_err(|e| {
            (
                format!("{at}.tokenFile"),
                format!("reading {}: {}", file.display(), io_msg(&e)),
            )
        })?;
        out.bearer_token = Some(token.trim().to_string());
        out.token_file = Some(file);
    }
    Ok(())
}

/// Reads a PEM value given inline (base64 `*-data`, preferred) or as a file path.
fn pem_source(
    at: &str,
    (data_key, data): (&str, Option<&str>),
    (file_key, file): (&str, Option<&str>),
    dir: &Path,
) -> Result<Option<Vec<u8>>, FieldError> {
    if let Some(data) = data.filter(|d| !d.trim().is_empty()) {
        return crate::util::base64::decode(data)
            .map(Some)
            .map_err(|e| (format!("{at}.{data_key}"), format!("decoding base64: {e}")));
    }
    let Some(file) = file.filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let file = dir.join(file);
    std::fs::read(&file).map(Some).map_err(|e| {
        (
            format!("{at}.{file_key}"),
            format!("reading {}: {}", file.display(), io_msg(&e)),
        )
    })
}

/// An I/O error's text without Rust's ` (os error N)` suffix, as Go prints it.
fn io_msg(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_current_context_with_relative_paths_and_inline_data() {
        let dir = tempdir("ok");
        std::fs::create_dir_all(dir.join("pki")).unwrap();
        write(&dir, "pki/ca.crt", "CA");
        write(&dir, "key.pem", "KEY");
        let path = write(&dir, "kubelet.conf", TWO_CONTEXTS);
        let c = load(&path).unwrap();
        assert_eq!(c.server, "https://10.0.0.1:6443");
        assert_eq!(c.ca_pem.as_deref(), Some(&b"CA"[..]));
        assert_eq!(c.client_cert_pem.as_deref(), Some(&b"CERT"[..]));
        assert_eq!(c.client_key_pem.as_deref(), Some(&b"KEY"[..]));
        assert_eq!(c.tls_server_name.as_deref(), Some("kubernetes"));
        assert_eq!(c.bearer_token, None);
        assert!(!c.insecure_skip_tls_verify);
        assert!(!format!("{c:?}").contains("KEY"));
    }

    #[test]
    fn token_file_wins_over_token() {
        let dir = tempdir("token");
        write(&dir, "tok", "s3cret\n");
        let path = write(
            &dir,
            "kc",
            "current-context: c\nclusters: [{name: x, cluster: {server: 'https://h', insecure-skip-tls-verify: true}}]\n\
             contexts: [{name: c, context: {cluster: x, user: u}}]\nusers: [{name: u, user: {token: t, tokenFile: tok}}]\n",
        );
        let c = load(&path).unwrap();
        assert_eq!(c.bearer_token.as_deref(), Some("s3cret"));
        assert_eq!(c.token_file, Some(dir.join("tok")));
        assert!(c.insecure_skip_tls_verify);
    }

    #[test]
    fn errors_name_file_and_field() {
        let dir = tempdir("err");
        std::fs::create_dir_all(dir.join("pki")).unwrap();
        write(&dir, "pki/ca.crt", "CA");
        let cases: [(&str, &str); 7] = [
            (TWO_CONTEXTS, "users[1].user.client-key: reading "),
            (
                "current-context: foo\ncontexts: [{name: c, context: {cluster: x}}]\n",
                ": current-context: \"foo\" not found in contexts",
            ),
            ("clusters: []\n", ": current-context: not set"),
            (
                "current-context: c\ncontexts: [{name: c, context: {cluster: x}}]\n",
                ": contexts[0].context.cluster: \"x\" not found in clusters",
            ),
            (
                "current-context: c\ncontexts: [{name: c, context: {cluster: x}}]\nclusters: [{name: x, cluster: {server: 'h:1'}}]\n",
                ": clusters[0].cluster.server: \"h:1\" is not an http(s) URL",
            ),
            (
                "current-context: c\ncontexts: [{name: c, context: {cluster: x}}]\n\
                 clusters: [{name: x, cluster: {server: 'https://h', certificate-authority-data: '%%'}}]\n",
                ": clusters[0].cluster.certificate-authority-data: decoding base64: illegal character '%' at byte 0",
            ),
            ("kind: Pod\n", ": kind: \"Pod\" is not supported"),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let path = write(&dir, &format!("kc{i}"), text);
            let msg = load(&path).unwrap_err().to_string();
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
            assert!(msg.contains(want), "case {i}: {msg}");
        }
        let missing = dir.join("key.pem");
        let msg = load(&dir.join("kc0")).unwrap_err().to_string();
        assert!(
            msg.ends_with(&format!(
                "reading {}: No such file or directory",
                missing.display()
            )),
            "{msg}"
        );
        let msg = load(&dir.join("absent")).unwrap_err().to_string();
        assert!(
            msg.ends_with("absent: reading: No such file or directory"),
            "{msg}"
        );
    }

    #[test]
    fn ca_with_insecure_is_refused() {
        let dir = tempdir("insecure");
        let path = write(
            &dir,
            "kc",
            "current-context: c\ncontexts: [{name: c, context: {cluster: x}}]\n\
             clusters: [{name: x, cluster: {server: 'https://h', certificate-authority-data: Q0E=, insecure-skip-tls-verify: true}}]\n",
        );
        let msg = load(&path).unwrap_err().to_string();
        assert!(
            msg.contains("clusters[0].cluster.insecure-skip-tls-verify"),
            "{msg}"
        );
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("rkubelet-kubeconfig-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const TWO_CONTEXTS: &str = "
apiVersion: v1
kind: Config
current-context: node
clusters:
- name: other
  cluster: {server: 'https://other:6443'}
- name: local
  cluster:
    server: https://10.0.0.1:6443/
    certificate-authority: pki/ca.crt
    tls-server-name: kubernetes
contexts:
- name: admin
  context: {cluster: other, user: admin}
- name: node
  context: {cluster: local, user: node1}
users:
- name: admin
  user: {token: abc}
- name: node1
  user:
    client-certificate-data: Q0VSVA==
    client-certificate: /does/not/matter
    client-key: key.pem
";
}
