//! The validated settings the rest of the kubelet reads: the second configuration stage after
//! [`super::flags`], built once by `main` and then shared as `Arc<KubeletConfig>`.
//!
//! [`KubeletConfig::from_args`] parses the command line, reads the `--config` file, lays the
//! flags that were given over the file's values (as upstream does), fills in defaults and
//! validates. Every error says which value was wrong and where it came from: a flag
//! (`flag --max-pods`), a file field (`/etc/kubernetes/kubelet.yaml: maxPods`) or the machine.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use structopt::clap::{self, ErrorKind};
use structopt::StructOpt;

use super::flags::{HeaderList, KubeletFlags};
use super::kubelet_config::defaults::{
    DEFAULT_CHECK_FREQUENCY, DEFAULT_CONTAINER_RUNTIME_ENDPOINT, DEFAULT_MAX_PODS,
    DEFAULT_POD_LOGS_DIR, DEFAULT_RESOLV_CONF, DEFAULT_RUNTIME_REQUEST_TIMEOUT,
    DEFAULT_SYNC_FREQUENCY,
};
use super::kubelet_config::validate::{
    check_cluster_domain, check_dns_subdomain, check_endpoint, check_http_url, check_ip,
    check_log_dir, check_positive, check_range,
};
use super::kubelet_config::{self, KubeletConfiguration};
use crate::util::duration::GoDuration;

/// Where the machine's hostname is read when there is no `--hostname-override`.
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";
const DEFAULT_ROOT_DIR: &str = "/var/lib/kubelet";
/// Container log symlinks go here when pod logs are in their default place (upstream fixes it).
const DEFAULT_CONTAINER_LOGS_DIR: &str = "/var/log/containers";
const DEFAULT_POD_WORKERS: usize = 8;
const MAX_POD_WORKERS: i64 = 256;

/// The kubelet's merged, validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeletConfig {
    /// CRI runtime service endpoint, always `unix:///...`
    /// (default `unix:///run/containerd/containerd.sock`).
    pub container_runtime_endpoint: String,
    /// CRI image service endpoint (default: `container_runtime_endpoint`).
    pub image_service_endpoint: String,
    /// State directory: pod volumes, plugins, checkpoints (default `/var/lib/kubelet`).
    pub root_dir: PathBuf,
    /// Pod log directory (default `/var/log/pods`, config `podLogsDir`).
    pub pod_logs_dir: PathBuf,
    /// Where the `<pod>_<ns>_<container>-<id>.log` symlinks go: `/var/log/containers` when
    /// `pod_logs_dir` is the default, else `containers` beside `pod_logs_dir`.
    pub container_logs_dir: PathBuf,
    /// Static pod manifest directory or file.
    pub static_pod_path: Option<PathBuf>,
    /// Static pod manifest URL (http or https).
    pub static_pod_url: Option<String>,
    /// Headers sent with `static_pod_url` requests, values in order.
    pub static_pod_url_header: BTreeMap<String, Vec<String>>,
    /// This node's name: `--hostname-override` or the machine hostname, trimmed, lower-cased,
    /// a valid DNS subdomain.
    pub node_name: String,
    /// The node's IP (`--node-ip`), the first of `node_ips`.
    pub node_ip: Option<IpAddr>,
    /// All of `--node-ip`: one address, or an IPv4 and an IPv6 one for dual-stack nodes.
    pub node_ips: Vec<IpAddr>,
    /// Most pods this node runs (default 110).
    pub max_pods: u32,
    /// Timeout of non-streaming CRI calls (default 2m).
    pub runtime_request_timeout: Duration,
    /// Longest time between pod syncs (default 1m).
    pub sync_frequency: Duration,
    /// Static pod path poll interval (default 20s).
    pub file_check_frequency: Duration,
    /// Static pod URL poll interval (default 20s).
    pub http_check_frequency: Duration,
    /// Run the pods once and exit.
    pub run_once: bool,
    /// klog-style verbosity (`-v N`, config `logging.verbosity`; default 0, capped at 255).
    pub verbosity: u8,
    /// kubeconfig for the API server; `None` runs standalone.
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig for requesting a client certificate when `kubeconfig` does not exist yet.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Directory of generated or bootstrapped certificates (default `/var/lib/kubelet/pki`).
    pub cert_dir: PathBuf,
    /// Size of the pod worker pool (rkubelet extension; default 8, 1 to 256).
    pub pod_workers: usize,
    /// `cgroupfs` or `systemd`.
    pub cgroup_driver: String,
    /// Threads running probes (`--prober-workers`, default 4).
    pub prober_workers: usize,
    /// How often image GC runs (`--image-gc-period`, default 5 min).
    pub image_gc_period: Duration,
    /// Cluster DNS server IPs given to pods.
    pub cluster_dns: Vec<IpAddr>,
    /// Cluster DNS domain (`cluster.local`), without a trailing dot.
    pub cluster_domain: Option<String>,
    /// Resolver file pod DNS starts from (default `/etc/resolv.conf`); empty disables it.
    pub resolv_conf: PathBuf,
    /// The `--config` path, for messages.
    pub config_file: Option<PathBuf>,
    /// `--pod-infra-container-image`: deprecated; kept only so image GC can spare it.
    pub pod_infra_container_image: Option<String>,
    /// Notes for `main` to log once logging is set up (deprecated flags and the like).
    pub warnings: Vec<String>,
    /// The file configuration with the given flags laid over it and upstream's defaults filled
    /// in: what is in effect, as `/configz` serves it.
    pub raw: KubeletConfiguration,
}

/// Where a setting's value came from, so errors can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag, by its upstream name (`--max-pods`).
    Flag(&'static str),
    /// A field of the `--config` file, by its path in the document
    /// (`authentication.x509.clientCAFile`, `clusterDNS[1]`).
    File {
        /// The config file.
        file: PathBuf,
        /// The field's path.
        field: String,
    },
    /// A file describing the machine, such as the hostname file.
    Machine(PathBuf),
    /// The built-in default of the named setting.
    Default(&'static str),
}

impl Origin {
    /// An error saying that `value`, from here, is invalid for `reason`.
    pub fn invalid(self, value: impl fmt::Display, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::File { file, field } => write!(f, "{}: {field}", file.display()),
            Origin::Machine(path) => write!(f, "{}", path.display()),
            Origin::Default(setting) => write!(f, "default {setting}"),
        }
    }
}

/// Why the kubelet cannot start with this command line and configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A bad command line, or `--help`/`--version`: clap's text, ready to print. As clap's
    /// own `exit` does, print it to stdout when [`ConfigError::exit_code`] is 0 and to stderr
    /// otherwise; for `--version` clap has already printed the version and the text is empty.
    #[error("{0}")]
    Cli(clap::Error),
    /// The `--config` file cannot be read.
    #[error("cannot read config file {}: {source}", file.display())]
    Read {
        /// The config file.
        file: PathBuf,
        /// Why reading failed.
        source: io::Error,
    },
    /// The `--config` file is not a well-formed KubeletConfiguration: bad YAML, an unknown
    /// field or a value of the wrong type. `reason` starts with the field's path.
    #[error("{}: {reason}", file.display())]
    Parse {
        /// The config file.
        file: PathBuf,
        /// What is wrong, with the field's path and the line and column.
        reason: String,
    },
    /// A value that parsed but is not acceptable.
    #[error("{origin}: invalid value {value:?}: {reason}")]
    Invalid {
        /// Where the value came from.
        origin: Origin,
        /// The value as given.
        value: String,
        /// What it should have been.
        reason: String,
    },
    /// The machine's hostname cannot be read (and no `--hostname-override` was given).
    #[error("cannot read the hostname from {}: {source} (set --hostname-override)", path.display())]
    Hostname {
        /// The hostname file.
        path: PathBuf,
        /// Why reading failed.
        source: io::Error,
    },
}

impl ConfigError {
    /// The process exit code for this error: 0 for `--help` and `--version` (which are not
    /// failures), 1 for everything else, as clap and the upstream kubelet do.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Cli(err)
                if matches!(
                    err.kind,
                    ErrorKind::HelpDisplayed | ErrorKind::VersionDisplayed
                ) =>
            {
                0
            }
            _ => 1,
        }
    }
}

impl KubeletConfig {
    /// Parse argv (first item is the program name), read --config, apply flags over file, validate.
    pub fn from_args<I: IntoIterator<Item = OsString>>(
        args: I,
    ) -> Result<KubeletConfig, ConfigError> {
        let flags = KubeletFlags::from_iter_safe(args).map_err(ConfigError::Cli)?;
        KubeletConfig::from_flags(flags)
    }

    /// Reads `--config` if given, lays the given flags over it, fills in defaults and
    /// validates. The node name falls back to the machine's hostname.
    pub fn from_flags(flags: KubeletFlags) -> Result<KubeletConfig, ConfigError> {
        merge(flags, read_machine_hostname)
    }

    /// The `env_logger` filter for `verbosity`.
    ///
    /// klog levels are finer than `log`'s, so they are folded: upstream logs what an operator
    /// watches at V(0) to V(2), debugging at V(3) and V(4), and tracing at V(5) and above.
    /// Here 0 to 2 give `info`; 3 and 4 add `debug` for rkubelet's own modules; 5 and above add
    /// `trace` for them. Other crates (gRPC, HTTP) stay at `info` either way, and `RUST_LOG`,
    /// when set, wins in `main`.
    pub fn log_filter(&self) -> String {
        let krate = env!("CARGO_CRATE_NAME");
        match self.verbosity {
            0..=2 => "info".to_string(),
            3 | 4 => format!("info,{krate}=debug"),
            _ => format!("info,{krate}=trace"),
        }
    }
}

/// Reads the machine's hostname from `/proc/sys/kernel/hostname`.
fn read_machine_hostname() -> Result<String, ConfigError> {
    fs::read_to_string(HOSTNAME_FILE).map_err(|source| ConfigError::Hostname {
        path: PathBuf::from(HOSTNAME_FILE),
        source,
    })
}

/// Builds the settings; `hostname` reads the machine hostname (a seam for tests).
fn merge(
    mut flags: KubeletFlags,
    hostname: impl FnOnce() -> Result<String, ConfigError>,
) -> Result<KubeletConfig, ConfigError> {
    let config_file = flags.config.clone();
    let mut raw = match &config_file {
        Some(path) => kubelet_config::load(path)?,
        None => KubeletConfiguration::new(),
    };
    let m = Merger {
        file: config_file.clone(),
    };
    let mut warnings = Vec::new();
    if let Some(image) = &flags.pod_infra_container_image {
        warnings.push(format!(
            "flag --pod-infra-container-image={image} is deprecated and has no effect \
             beyond sparing the image from garbage collection: the container runtime \
             chooses the sandbox image"
        ));
    }

    // In the file "" means unset (kubeadm writes it); an explicit empty flag is an error.
    let (endpoint, origin) = m
        .pick(
            flags.container_runtime_endpoint.take(),
            "--container-runtime-endpoint",
            &mut raw.container_runtime_endpoint,
            "containerRuntimeEndpoint",
        )
        .filter(|(endpoint, origin)| !endpoint.is_empty() || matches!(origin, Origin::Flag(_)))
        .unwrap_or_else(|| {
            let default = DEFAULT_CONTAINER_RUNTIME_ENDPOINT.to_string();
            (default, Origin::Default("containerRuntimeEndpoint"))
        });
    let container_runtime_endpoint = check_endpoint(origin, &endpoint)?;
    let image_service_endpoint = match m.pick(
        flags.image_service_endpoint.take(),
        "--image-service-endpoint",
        &mut raw.image_service_endpoint,
        "imageServiceEndpoint",
    ) {
        // Empty means "same as the runtime", from a flag too (as upstream).
        Some((endpoint, origin)) if !endpoint.is_empty() => check_endpoint(origin, &endpoint)?,
        _ => container_runtime_endpoint.clone(),
    };

    let root_dir = flags
        .root_dir
        .take()
        .unwrap_or_else(|| DEFAULT_ROOT_DIR.into());
    if !root_dir.is_absolute() {
        // Volume paths under it are handed to the runtime, which needs absolute host paths.
        let origin = Origin::Flag("--root-dir");
        return Err(origin.invalid(root_dir.display(), "must be an absolute path"));
    }
    let (pod_logs_dir, origin) = m
        .pick_path(
            flags.pod_logs_dir.take(),
            "--pod-logs-dir",
            &mut raw.pod_logs_dir,
            "podLogsDir",
        )
        .filter(|(dir, _)| !dir.as_os_str().is_empty())
        .unwrap_or_else(|| (DEFAULT_POD_LOGS_DIR.into(), Origin::Default("podLogsDir")));
    check_log_dir(origin, &pod_logs_dir)?;
    let container_logs_dir = if pod_logs_dir == Path::new(DEFAULT_POD_LOGS_DIR) {
        PathBuf::from(DEFAULT_CONTAINER_LOGS_DIR)
    } else {
        let parent = pod_logs_dir.parent().unwrap_or(&pod_logs_dir);
        parent.join("containers")
    };

    let static_pod_path = m
        .pick_path(
            flags.pod_manifest_path.take(),
            "--pod-manifest-path",
            &mut raw.static_pod_path,
            "staticPodPath",
        )
        .map(|(path, _)| path)
        .filter(|path| !path.as_os_str().is_empty());
    let static_pod_url = match m.pick(
        flags.manifest_url.take(),
        "--manifest-url",
        &mut raw.static_pod_url,
        "staticPodURL",
    ) {
        Some((url, origin)) if !url.is_empty() => {
            check_http_url(origin, &url)?;
            Some(url)
        }
        _ => None,
    };
    let static_pod_url_header = if flags.manifest_url_header.is_empty() {
        let headers = raw.static_pod_url_header.clone().unwrap_or_default();
        check_header_names(m.file_origin("staticPodURLHeader"), &headers)?;
        headers
    } else {
        let headers = header_map(&flags.manifest_url_header);
        check_header_names(Origin::Flag("--manifest-url-header"), &headers)?;
        raw.static_pod_url_header = Some(headers.clone());
        headers
    };

    let (name, origin) = match flags.hostname_override.take() {
        Some(name) if !name.trim().is_empty() => (name, Origin::Flag("--hostname-override")),
        _ => (hostname()?, Origin::Machine(HOSTNAME_FILE.into())),
    };
    let node_name = name.trim().to_lowercase();
    check_dns_subdomain(origin, &node_name)?;
    let node_ips = parse_node_ips(flags.node_ip.as_deref().unwrap_or_default())?;

    let (max_pods, origin) = m
        .pick(flags.max_pods, "--max-pods", &mut raw.max_pods, "maxPods")
        .unwrap_or((DEFAULT_MAX_PODS, Origin::Default("maxPods")));
    let max_pods = u32::try_from(max_pods)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| origin.invalid(max_pods, "must be greater than 0"))?;

    let runtime_request_timeout = m.duration(
        flags.runtime_request_timeout,
        "--runtime-request-timeout",
        &mut raw.runtime_request_timeout,
        "runtimeRequestTimeout",
        DEFAULT_RUNTIME_REQUEST_TIMEOUT,
    )?;
    let sync_frequency = m.duration(
        flags.sync_frequency,
        "--sync-frequency",
        &mut raw.sync_frequency,
        "syncFrequency",
        DEFAULT_SYNC_FREQUENCY,
    )?;
    let file_check_frequency = m.duration(
        flags.file_check_frequency,
        "--file-check-frequency",
        &mut raw.file_check_frequency,
        "fileCheckFrequency",
        DEFAULT_CHECK_FREQUENCY,
    )?;
    let http_check_frequency = m.duration(
        flags.http_check_frequency,
        "--http-check-frequency",
        &mut raw.http_check_frequency,
        "httpCheckFrequency",
        DEFAULT_CHECK_FREQUENCY,
    )?;

    let run_once = m
        .pick(flags.run_once(), "--runonce", &mut raw.run_once, "runOnce")
        .is_some_and(|(run_once, _)| run_once);
    let verbosity = m
        .pick(
            flags.v,
            "--v",
            &mut raw.logging.verbosity,
            "logging.verbosity",
        )
        .map_or(0, |(v, _)| u8::try_from(v).unwrap_or(u8::MAX));

    let pod_workers = flags.pod_workers.unwrap_or(DEFAULT_POD_WORKERS);
    let workers = i64::try_from(pod_workers).unwrap_or(i64::MAX);
    check_range(Origin::Flag("--pod-workers"), workers, 1, MAX_POD_WORKERS)?;

    let cluster_dns = if flags.cluster_dns.is_empty() {
        let listed = raw.cluster_dns.iter().flatten().enumerate();
        listed
            .map(|(index, ip)| check_ip(m.file_origin(format!("clusterDNS[{index}]")), ip))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        let listed: Vec<String> = flags
            .cluster_dns
            .iter()
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|ip| !ip.is_empty())
            .map(String::from)
            .collect();
        let ips = listed
            .iter()
            .map(|ip| check_ip(Origin::Flag("--cluster-dns"), ip))
            .collect::<Result<Vec<_>, _>>()?;
        raw.cluster_dns = Some(listed);
        ips
    };
    let cluster_domain = match m.pick(
        flags.cluster_domain.take(),
        "--cluster-domain",
        &mut raw.cluster_domain,
        "clusterDomain",
    ) {
        Some((domain, origin)) if !domain.is_empty() => {
            Some(check_cluster_domain(origin, &domain)?)
        }
        _ => None,
    };
    let cgroup_driver = m
        .pick(
            flags.cgroup_driver.take(),
            "--cgroup-driver",
            &mut raw.cgroup_driver,
            "cgroupDriver",
        )
        .map(|(d, origin)| match d.as_str() {
            "cgroupfs" | "systemd" => Ok(d),
            _ => Err(origin.invalid(&d, "must be cgroupfs or systemd")),
        })
        .transpose()?
        .unwrap_or_else(|| "cgroupfs".into());
    m.pick(
        flags.cgroups_per_qos.take(),
        "--cgroups-per-qos",
        &mut raw.cgroups_per_qos,
        "cgroupsPerQOS",
    );
    m.pick(
        flags.cgroup_root.take(),
        "--cgroup-root",
        &mut raw.cgroup_root,
        "cgroupRoot",
    );
    m.pick(
        flags.address.take(),
        "--address",
        &mut raw.address,
        "address",
    );
    m.pick(flags.port.take(), "--port", &mut raw.port, "port");
    m.pick(
        flags.read_only_port.take(),
        "--read-only-port",
        &mut raw.read_only_port,
        "readOnlyPort",
    );
    let path_text = |p: Option<PathBuf>| p.map(|p| p.to_string_lossy().into_owned());
    m.pick(
        path_text(flags.tls_cert_file.take()),
        "--tls-cert-file",
        &mut raw.tls_cert_file,
        "tlsCertFile",
    );
    m.pick(
        path_text(flags.tls_private_key_file.take()),
        "--tls-private-key-file",
        &mut raw.tls_private_key_file,
        "tlsPrivateKeyFile",
    );
    m.pick(
        path_text(flags.client_ca_file.take()),
        "--client-ca-file",
        &mut raw.authentication.x509.client_ca_file,
        "authentication.x509.clientCAFile",
    );
    m.pick(
        flags.anonymous_auth.take(),
        "--anonymous-auth",
        &mut raw.authentication.anonymous.enabled,
        "authentication.anonymous.enabled",
    );
    m.pick(
        flags.authentication_token_webhook.take(),
        "--authentication-token-webhook",
        &mut raw.authentication.webhook.enabled,
        "authentication.webhook.enabled",
    );
    m.pick(
        flags.authorization_mode.take(),
        "--authorization-mode",
        &mut raw.authorization.mode,
        "authorization.mode",
    );
    // An explicit "" (flag or file) disables the resolver file, so it is not filtered out.
    let resolv_conf = m
        .pick_path(
            flags.resolv_conf.take(),
            "--resolv-conf",
            &mut raw.resolv_conf,
            "resolvConf",
        )
        .map_or_else(|| PathBuf::from(DEFAULT_RESOLV_CONF), |(path, _)| path);

    raw.set_defaults();
    // Upstream's default is /var/lib/kubelet/pki whatever --root-dir says; following
    // --root-dir keeps kubelets with their own root dirs from sharing one key.
    let cert_dir = flags
        .cert_dir
        .take()
        .unwrap_or_else(|| root_dir.join("pki"));
    Ok(KubeletConfig {
        container_runtime_endpoint,
        image_service_endpoint,
        root_dir,
        pod_logs_dir,
        container_logs_dir,
        static_pod_path,
        static_pod_url,
        static_pod_url_header,
        node_name,
        node_ip: node_ips.first().copied(),
        node_ips,
        max_pods,
        runtime_request_timeout,
        sync_frequency,
        file_check_frequency,
        http_check_frequency,
        run_once,
        verbosity,
        kubeconfig: flags.kubeconfig.take(),
        bootstrap_kubeconfig: flags.bootstrap_kubeconfig.take(),
        cert_dir,
        pod_workers,
        cgroup_driver,
        prober_workers: flags.prober_workers.unwrap_or(4).clamp(1, 64),
        image_gc_period: flags
            .image_gc_period
            .and_then(|d| d.to_std())
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(300))
            .max(Duration::from_secs(1)),
        cluster_dns,
        cluster_domain,
        resolv_conf,
        config_file,
        pod_infra_container_image: flags.pod_infra_container_image.take(),
        warnings,
        raw,
    })
}

/// Chooses between a flag and the config-file field it overrides.
struct Merger {
    /// The `--config` file, to name in errors.
    file: Option<PathBuf>,
}

impl Merger {
    fn file_origin(&self, field: impl Into<String>) -> Origin {
        Origin::File {
            file: self.file.clone().unwrap_or_default(),
            field: field.into(),
        }
    }

    /// The flag's value when given (also written into the file configuration, so that `raw`
    /// shows what is in effect), else the file's value when set, else `None`.
    fn pick<T: Clone>(
        &self,
        flag: Option<T>,
        flag_name: &'static str,
        field: &mut Option<T>,
        field_name: &'static str,
    ) -> Option<(T, Origin)> {
        if let Some(value) = flag {
            *field = Some(value.clone());
            return Some((value, Origin::Flag(flag_name)));
        }
        let value = field.clone()?;
        Some((value, self.file_origin(field_name)))
    }

    /// [`Merger::pick`] for a path flag whose file field is a string.
    fn pick_path(
        &self,
        flag: Option<PathBuf>,
        flag_name: &'static str,
        field: &mut Option<String>,
        field_name: &'static str,
    ) -> Option<(PathBuf, Origin)> {
        if let Some(path) = flag {
            *field = Some(path.to_string_lossy().into_owned());
            return Some((path, Origin::Flag(flag_name)));
        }
        let value = field.clone()?;
        Some((PathBuf::from(value), self.file_origin(field_name)))
    }

    /// A duration setting: the flag, else the file's value unless zero (upstream's "unset"),
    /// else `default`; it must be above zero.
    fn duration(
        &self,
        flag: Option<GoDuration>,
        flag_name: &'static str,
        field: &mut Option<GoDuration>,
        field_name: &'static str,
        default: GoDuration,
    ) -> Result<Duration, ConfigError> {
        let (value, origin) = self
            .pick(flag, flag_name, field, field_name)
            .filter(|(value, origin)| !value.is_zero() || matches!(origin, Origin::Flag(_)))
            .unwrap_or((default, Origin::Default(field_name)));
        check_positive(origin, value)
    }
}

/// Parses `--node-ip`: one address, or a comma-separated IPv4 and IPv6 pair.
fn parse_node_ips(value: &str) -> Result<Vec<IpAddr>, ConfigError> {
    let origin = || Origin::Flag("--node-ip");
    let ips = value
        .split(',')
        .map(str::trim)
        .filter(|ip| !ip.is_empty())
        .map(|ip| check_ip(origin(), ip))
        .collect::<Result<Vec<_>, _>>()?;
    match ips.as_slice() {
        [] | [_] => Ok(ips),
        [a, b] if a.is_ipv4() != b.is_ipv4() => Ok(ips),
        _ => Err(origin().invalid(value, "expected one IP, or one IPv4 and one IPv6 address")),
    }
}

/// Collects `--manifest-url-header` values; a repeated name keeps every value in order.
fn header_map(lists: &[HeaderList]) -> BTreeMap<String, Vec<String>> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in lists.iter().flat_map(|list| list.0.iter()) {
        headers.entry(name.clone()).or_default().push(value.clone());
    }
    headers
}

/// Checks that header names are HTTP tokens (RFC 9110 `tchar`s).
fn check_header_names(
    origin: Origin,
    headers: &BTreeMap<String, Vec<String>>,
) -> Result<(), ConfigError> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    match headers
        .keys()
        .find(|name| name.is_empty() || !name.bytes().all(tchar))
    {
        Some(name) => Err(origin.invalid(name, "not a valid HTTP header name")),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A fresh directory for one test's config files, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> TempDir {
            let dir = std::env::temp_dir()
                .join(format!("rkubelet-settings-{}-{test}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn config(&self, body: &str) -> PathBuf {
            let path = self.0.join("kubelet.yaml");
            fs::write(&path, format!("{HEADER}{body}")).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const HEADER: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

    /// Settings from argv (without the program name) and a fixed machine hostname.
    fn settings(args: &[&str]) -> Result<KubeletConfig, ConfigError> {
        let argv = std::iter::once("rkubelet").chain(args.iter().copied());
        let flags = KubeletFlags::from_iter_safe(argv).map_err(ConfigError::Cli)?;
        merge(flags, || Ok(" Node-A.Example.com\n".to_string()))
    }

    fn with_config(config: &Path, args: &[&str]) -> Result<KubeletConfig, ConfigError> {
        let flag = format!("--config={}", config.display());
        let mut all = vec![flag.as_str()];
        all.extend_from_slice(args);
        settings(&all)
    }

    const fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn defaults() {
        let c = settings(&[]).unwrap();
        let containerd = "unix:///run/containerd/containerd.sock";
        assert_eq!(c.container_runtime_endpoint, containerd);
        assert_eq!(c.image_service_endpoint, containerd);
        assert_eq!(c.root_dir, Path::new("/var/lib/kubelet"));
        assert_eq!(c.cert_dir, Path::new("/var/lib/kubelet/pki"));
        let moved = settings(&["--root-dir=/srv/kubelet"]).unwrap();
        assert_eq!(moved.cert_dir, Path::new("/srv/kubelet/pki"));
        assert_eq!(c.pod_logs_dir, Path::new("/var/log/pods"));
        assert_eq!(c.container_logs_dir, Path::new("/var/log/containers"));
        assert_eq!(c.static_pod_path, None);
        assert_eq!(c.static_pod_url, None);
        assert!(c.static_pod_url_header.is_empty());
        assert_eq!(c.node_name, "node-a.example.com");
        assert_eq!(c.node_ip, None);
        assert_eq!(c.max_pods, 110);
        assert_eq!(c.runtime_request_timeout, secs(120));
        assert_eq!(c.sync_frequency, secs(60));
        assert_eq!(c.file_check_frequency, secs(20));
        assert_eq!(c.http_check_frequency, secs(20));
        assert!(!c.run_once);
        assert_eq!(c.verbosity, 0);
        assert_eq!(c.kubeconfig, None);
        assert_eq!(c.pod_workers, 8);
        assert!(c.cluster_dns.is_empty());
        assert_eq!(c.cluster_domain, None);
        assert_eq!(c.resolv_conf, Path::new("/etc/resolv.conf"));
        assert_eq!(c.config_file, None);
        assert!(c.warnings.is_empty());
        // `raw` is upstream's defaulted configuration.
        assert_eq!(c.raw.kind.as_deref(), Some("KubeletConfiguration"));
        assert_eq!(c.raw.port, Some(10250));
        assert_eq!(c.raw.max_pods, Some(110));
        assert_eq!(
            c.raw.container_runtime_endpoint.as_deref(),
            Some(containerd)
        );
    }

    const FILE: &str = "containerRuntimeEndpoint: unix:///run/crio/crio.sock
imageServiceEndpoint: /run/images.sock
podLogsDir: /srv/logs/pods
staticPodPath: /etc/kubernetes/manifests
staticPodURL: https://example.com/pods
staticPodURLHeader:
  Authorization: [Bearer abc]
maxPods: 50
runtimeRequestTimeout: 30s
syncFrequency: 1m30s
fileCheckFrequency: 5s
httpCheckFrequency: 45s
runOnce: true
logging:
  verbosity: 4
clusterDNS: [10.96.0.10, fd00::a]
clusterDomain: cluster.local.
resolvConf: /run/systemd/resolve/resolv.conf
";

    #[test]
    fn file_values_are_used() {
        let dir = TempDir::new("file-values");
        let config = dir.config(FILE);
        let c = with_config(&config, &[]).unwrap();
        assert_eq!(c.container_runtime_endpoint, "unix:///run/crio/crio.sock");
        assert_eq!(c.image_service_endpoint, "unix:///run/images.sock");
        assert_eq!(c.pod_logs_dir, Path::new("/srv/logs/pods"));
        assert_eq!(c.container_logs_dir, Path::new("/srv/logs/containers"));
        assert_eq!(
            c.static_pod_path.as_deref(),
            Some(Path::new("/etc/kubernetes/manifests"))
        );
        assert_eq!(
            c.static_pod_url.as_deref(),
            Some("https://example.com/pods")
        );
        assert_eq!(c.static_pod_url_header["Authorization"], vec!["Bearer abc"]);
        assert_eq!(c.max_pods, 50);
        assert_eq!(c.runtime_request_timeout, secs(30));
        assert_eq!(c.sync_frequency, secs(90));
        assert_eq!(c.file_check_frequency, secs(5));
        assert_eq!(c.http_check_frequency, secs(45));
        assert!(c.run_once);
        assert_eq!(c.verbosity, 4);
        let dns: Vec<IpAddr> = vec!["10.96.0.10".parse().unwrap(), "fd00::a".parse().unwrap()];
        assert_eq!(c.cluster_dns, dns);
        assert_eq!(c.cluster_domain.as_deref(), Some("cluster.local"));
        assert_eq!(c.resolv_conf, Path::new("/run/systemd/resolve/resolv.conf"));
        assert_eq!(c.config_file.as_deref(), Some(config.as_path()));
    }

    #[test]
    fn flags_override_the_file() {
        let dir = TempDir::new("flags-override");
        let config = dir.config(FILE);
        let c = with_config(
            &config,
            &[
                "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
                "--pod-logs-dir=/var/log/pods",
                "--pod-manifest-path=/srv/manifests",
                "--manifest-url=http://10.0.0.1/pods",
                "--manifest-url-header=X-A:1,X-A:2",
                "--max-pods=20",
                "--runtime-request-timeout=10s",
                "--sync-frequency=2m",
                "--file-check-frequency=1s",
                "--http-check-frequency=2s",
                "--runonce=false",
                "-v=2",
                "--cluster-dns=10.0.0.10",
                "--cluster-domain=corp.example",
                "--resolv-conf=",
            ],
        )
        .unwrap();
        let containerd = "unix:///run/containerd/containerd.sock";
        assert_eq!(c.container_runtime_endpoint, containerd);
        // Not given as a flag: still the file's.
        assert_eq!(c.image_service_endpoint, "unix:///run/images.sock");
        assert_eq!(c.container_logs_dir, Path::new("/var/log/containers"));
        assert_eq!(
            c.static_pod_path.as_deref(),
            Some(Path::new("/srv/manifests"))
        );
        assert_eq!(c.static_pod_url.as_deref(), Some("http://10.0.0.1/pods"));
        assert_eq!(
            c.static_pod_url_header,
            BTreeMap::from([("X-A".to_string(), vec!["1".to_string(), "2".to_string()])])
        );
        assert_eq!(c.max_pods, 20);
        assert_eq!(c.runtime_request_timeout, secs(10));
        assert_eq!(c.sync_frequency, secs(120));
        assert_eq!(c.file_check_frequency, secs(1));
        assert_eq!(c.http_check_frequency, secs(2));
        assert!(!c.run_once);
        assert_eq!(c.verbosity, 2);
        assert_eq!(c.cluster_dns, vec!["10.0.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.cluster_domain.as_deref(), Some("corp.example"));
        assert_eq!(c.resolv_conf, Path::new(""));
        // `raw` shows the merged values.
        assert_eq!(c.raw.max_pods, Some(20));
        assert_eq!(c.raw.sync_frequency, Some(GoDuration::from_secs(120)));
        assert_eq!(c.raw.logging.verbosity, Some(2));
        assert_eq!(c.raw.cluster_dns, Some(vec!["10.0.0.10".to_string()]));
        assert_eq!(c.raw.resolv_conf.as_deref(), Some(""));
        assert_eq!(
            c.raw.container_runtime_endpoint.as_deref(),
            Some(containerd)
        );
    }

    #[test]
    fn zero_durations_and_empty_strings_in_the_file_mean_default() {
        let dir = TempDir::new("zero-means-default");
        let body = "syncFrequency: 0s\nfileCheckFrequency: 0s\nruntimeRequestTimeout: 0s\n\
                    containerRuntimeEndpoint: \"\"\nstaticPodPath: \"\"\nclusterDomain: \"\"\n";
        let c = with_config(&dir.config(body), &[]).unwrap();
        assert_eq!(c.sync_frequency, secs(60));
        assert_eq!(c.file_check_frequency, secs(20));
        assert_eq!(c.runtime_request_timeout, secs(120));
        assert_eq!(
            c.container_runtime_endpoint,
            "unix:///run/containerd/containerd.sock"
        );
        assert_eq!(c.static_pod_path, None);
        assert_eq!(c.cluster_domain, None);
        assert_eq!(c.raw.sync_frequency, Some(GoDuration::from_secs(60)));
    }

    #[test]
    fn relative_file_paths_are_resolved_against_the_config_directory() {
        let dir = TempDir::new("relative");
        let config = dir.config("staticPodPath: manifests\npodLogsDir: logs/pods\n");
        let c = with_config(&config, &[]).unwrap();
        assert_eq!(c.static_pod_path, Some(dir.0.join("manifests")));
        assert_eq!(c.pod_logs_dir, dir.0.join("logs/pods"));
        assert_eq!(c.container_logs_dir, dir.0.join("logs/containers"));
    }

    #[test]
    fn invalid_values_name_their_origin() {
        let dir = TempDir::new("invalid");
        let file = |body: &str| dir.config(body).display().to_string();
        let cases: Vec<(Option<String>, Vec<&str>, String)> = vec![
            (
                None,
                vec!["--max-pods=0"],
                "flag --max-pods: invalid value \"0\"".into(),
            ),
            (
                None,
                vec!["--max-pods=-4"],
                "flag --max-pods: invalid value \"-4\"".into(),
            ),
            (
                None,
                vec!["--sync-frequency=0s"],
                "flag --sync-frequency: invalid value \"0s\"".into(),
            ),
            (
                None,
                vec!["--runtime-request-timeout=-1s"],
                "flag --runtime-request-timeout: invalid value \"-1s\"".into(),
            ),
            (
                None,
                vec!["--pod-workers=0"],
                "flag --pod-workers: invalid value \"0\"".into(),
            ),
            (
                None,
                vec!["--pod-workers=257"],
                "flag --pod-workers: invalid value \"257\"".into(),
            ),
            (
                None,
                vec!["--node-ip=nope"],
                "flag --node-ip: invalid value \"nope\"".into(),
            ),
            (
                None,
                vec!["--node-ip=10.0.0.1,10.0.0.2"],
                "flag --node-ip: invalid value \"10.0.0.1,10.0.0.2\"".into(),
            ),
            (
                None,
                vec!["--cluster-dns=10.0.0.10,bad"],
                "flag --cluster-dns: invalid value \"bad\"".into(),
            ),
            (
                None,
                vec!["--hostname-override=Bad_Name"],
                "flag --hostname-override: invalid value \"bad_name\"".into(),
            ),
            (
                None,
                vec!["--manifest-url=ftp://example.com"],
                "flag --manifest-url: invalid value \"ftp://example.com\"".into(),
            ),
            (
                None,
                vec!["--container-runtime-endpoint=tcp://10.0.0.1:1"],
                "flag --container-runtime-endpoint: invalid value".into(),
            ),
            (
                None,
                vec!["--container-runtime-endpoint="],
                "flag --container-runtime-endpoint: invalid value \"\"".into(),
            ),
            (
                None,
                vec!["--image-service-endpoint=relative.sock"],
                "flag --image-service-endpoint: invalid value".into(),
            ),
            (
                None,
                vec!["--root-dir=var/lib"],
                "flag --root-dir: invalid value".into(),
            ),
            (
                None,
                vec!["--pod-logs-dir=logs"],
                "flag --pod-logs-dir: invalid value".into(),
            ),
            (
                None,
                vec!["--pod-logs-dir=/"],
                "flag --pod-logs-dir: invalid value".into(),
            ),
            (
                None,
                vec!["--manifest-url-header=Bad Name:1"],
                "flag --manifest-url-header: invalid value \"Bad Name\"".into(),
            ),
            (
                Some("maxPods: 0\n".into()),
                vec![],
                format!("{}: maxPods: invalid value \"0\"", file("maxPods: 0\n")),
            ),
            (
                Some("syncFrequency: -1s\n".into()),
                vec![],
                format!("{}: syncFrequency: invalid value \"-1s\"", file("")),
            ),
            (
                Some("syncFrequency: 1parsec\n".into()),
                vec![],
                format!("{}: syncFrequency: time: unknown unit", file("")),
            ),
            (
                Some("fooBar: 1\n".into()),
                vec![],
                format!("{}: unknown field `fooBar`", file("")),
            ),
            (
                Some("maxPods: \"lots\"\n".into()),
                vec![],
                format!("{}: maxPods: invalid type", file("")),
            ),
            (
                Some("staticPodURLHeader:\n  \"a b\": [x]\n".into()),
                vec![],
                format!("{}: staticPodURLHeader: invalid value \"a b\"", file("")),
            ),
        ];
        for (body, args, want) in cases {
            let result = match &body {
                Some(body) => with_config(&dir.config(body), &args),
                None => settings(&args),
            };
            let err = result.unwrap_err();
            assert_eq!(err.exit_code(), 1);
            let message = err.to_string();
            assert!(
                message.starts_with(&want),
                "{args:?} {body:?}:\n{message}\nwanted {want}"
            );
        }
    }

    #[test]
    fn the_machine_hostname_is_cleaned_and_checked() {
        let flags = KubeletFlags::default();
        let c = merge(flags.clone(), || Ok("Worker-7\n".to_string())).unwrap();
        assert_eq!(c.node_name, "worker-7");
        let err = merge(flags.clone(), || Ok("my_host\n".to_string())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/proc/sys/kernel/hostname: invalid value \"my_host\""),
            "{err}"
        );
        assert!(merge(flags, || Ok("\n".to_string())).is_err());
        // An empty override falls back to the machine, as upstream.
        let c = settings(&["--hostname-override="]).unwrap();
        assert_eq!(c.node_name, "node-a.example.com");
    }

    #[test]
    fn node_ips() {
        let cases: &[(&str, &[&str])] = &[
            ("10.0.0.5", &["10.0.0.5"]),
            ("fd00::5", &["fd00::5"]),
            ("10.0.0.5,fd00::5", &["10.0.0.5", "fd00::5"]),
            (" fd00::5 , 10.0.0.5 ", &["fd00::5", "10.0.0.5"]),
            ("", &[]),
        ];
        for (flag, want) in cases {
            let c = settings(&[&format!("--node-ip={flag}")]).unwrap();
            let want: Vec<IpAddr> = want.iter().map(|ip| ip.parse().unwrap()).collect();
            assert_eq!(c.node_ips, want, "{flag}");
            assert_eq!(c.node_ip, want.first().copied(), "{flag}");
        }
    }

    #[test]
    fn log_filter_follows_verbosity() {
        let krate = env!("CARGO_CRATE_NAME");
        let cases = [
            ("0", "info".to_string()),
            ("2", "info".to_string()),
            ("3", format!("info,{krate}=debug")),
            ("4", format!("info,{krate}=debug")),
            ("5", format!("info,{krate}=trace")),
            ("10", format!("info,{krate}=trace")),
            ("1000", format!("info,{krate}=trace")),
        ];
        for (level, want) in cases {
            let c = settings(&["-v", level]).unwrap();
            assert_eq!(c.log_filter(), want, "-v {level}");
        }
        assert_eq!(settings(&["--v=1000"]).unwrap().verbosity, 255);
    }

    #[test]
    fn help_and_version_exit_zero_bad_flags_exit_one() {
        let cases: &[(&[&str], i32)] = &[
            (&["--help"], 0),
            (&["-h"], 0),
            (&["--no-such-flag"], 1),
            (&["--max-pods"], 1),
            (&["--sync-frequency=soon"], 1),
        ];
        for (args, code) in cases {
            let err = settings(args).unwrap_err();
            assert!(matches!(err, ConfigError::Cli(_)), "{args:?}: {err:?}");
            assert_eq!(err.exit_code(), *code, "{args:?}");
        }
        let err = settings(&["--help"]).unwrap_err();
        assert!(err.to_string().contains("--container-runtime-endpoint"));
    }

    #[test]
    fn from_args_reads_argv_and_the_config_file() {
        let dir = TempDir::new("from-args");
        let config = dir.config("maxPods: 30\n");
        let argv = [
            OsString::from("rkubelet"),
            OsString::from("--config"),
            config.clone().into_os_string(),
            OsString::from("--hostname-override=node-b"),
            OsString::from("--pod-infra-container-image=registry.k8s.io/pause:3.10"),
            OsString::from("--kubeconfig=/etc/kubernetes/kubelet.conf"),
            OsString::from("--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf"),
        ];
        let c = KubeletConfig::from_args(argv).unwrap();
        assert_eq!(c.max_pods, 30);
        assert_eq!(c.node_name, "node-b");
        assert_eq!(c.config_file, Some(config));
        assert_eq!(
            c.kubeconfig.as_deref(),
            Some(Path::new("/etc/kubernetes/kubelet.conf"))
        );
        assert!(c.bootstrap_kubeconfig.is_some());
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("--pod-infra-container-image"));
        let missing = KubeletConfig::from_args(
            ["rkubelet", "--config=/nonexistent/k.yaml"].map(OsString::from),
        );
        assert!(matches!(missing, Err(ConfigError::Read { .. })));
    }
}
