//! The validated settings the rest of the kubelet reads: the second configuration stage after
//! [`super::flags`], built once by `main` and then shared as `Arc<KubeletConfig>`.
//!
//! [`KubeletConfig::from_args`] parses the command line, reads the `--config` file and lays
//! the `--config-dir` drop-ins over it, lays the flags that were given over both (upstream's
//! precedence: defaults, then the file, then the drop-ins in order, then flags), fills in
//! defaults and validates. Every error says which value was wrong and where it came from: a flag
//! (`flag --max-pods`), a file field (`/etc/kubernetes/kubelet.yaml: maxPods`) or the machine.

mod merge;
mod merger;
mod node;
mod raw_flags;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use structopt::StructOpt;

use self::merge::merge;
use self::node::read_machine_hostname;
use super::error::ConfigError;
use super::flags::KubeletFlags;
use super::kubelet_config::KubeletConfiguration;

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
    /// The `--config-dir` drop-in directory, for messages.
    pub config_dir: Option<PathBuf>,
    /// `--image-credential-provider-config` and `--image-credential-provider-bin-dir`.
    pub image_credential_providers: Option<(PathBuf, PathBuf)>,
    /// `--pod-infra-container-image`: deprecated; kept only so image GC can spare it.
    pub pod_infra_container_image: Option<String>,
    /// `--node-labels`, checked: set on the Node at registration, over the default labels.
    pub node_labels: BTreeMap<String, String>,
    /// `--cloud-provider=external`: the node registers with the uninitialized taint for the
    /// cloud-controller-manager to remove.
    pub external_cloud_provider: bool,
    /// Notes for `main` to log once logging is set up (deprecated flags and the like).
    pub warnings: Vec<String>,
    /// The file configuration with the given flags laid over it and upstream's defaults filled
    /// in: what is in effect, as `/configz` serves it.
    pub raw: KubeletConfiguration,
}

impl KubeletConfig {
    /// Parse argv (first item is the program name), read --config, apply flags over file, validate.
    pub fn from_args<I: IntoIterator<Item = OsString>>(
        args: I,
    ) -> Result<KubeletConfig, ConfigError> {
        let cli_error = |message: String| {
            ConfigError::Cli(structopt::clap::Error {
                message: format!("error: {message}"),
                kind: structopt::clap::ErrorKind::InvalidValue,
                info: None,
            })
        };
        let (args, accepted) =
            super::upstream_flags::split_accepted(args.into_iter().collect()).map_err(cli_error)?;
        let flags = KubeletFlags::from_iter_safe(args).map_err(ConfigError::Cli)?;
        // As upstream, `--version` is answered before any configuration is read.
        let version = flags.version_requested().map_err(cli_error)?;
        if let Some(raw) = version {
            return Err(ConfigError::Cli(structopt::clap::Error {
                message: crate::version::version_text(raw),
                kind: structopt::clap::ErrorKind::VersionDisplayed,
                info: None,
            }));
        }
        let mut config = KubeletConfig::from_flags(flags)?;
        config
            .warnings
            .extend(super::upstream_flags::warning(&accepted));
        Ok(config)
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

/// Settings built from a test's arguments and config files.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod test_support {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use structopt::StructOpt;

    use super::merge::merge;
    use super::KubeletConfig;
    use crate::config::error::ConfigError;
    use crate::config::flags::KubeletFlags;

    /// A fresh directory for one test's config files, removed on drop.
    pub(super) struct TempDir(pub(super) PathBuf);

    impl TempDir {
        pub(super) fn new(test: &str) -> TempDir {
            let dir = std::env::temp_dir()
                .join(format!("rkubelet-settings-{}-{test}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub(super) fn config(&self, body: &str) -> PathBuf {
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
    pub(super) fn settings(args: &[&str]) -> Result<KubeletConfig, ConfigError> {
        let argv = std::iter::once("rkubelet").chain(args.iter().copied());
        let flags = KubeletFlags::from_iter_safe(argv).map_err(ConfigError::Cli)?;
        merge(flags, || Ok(" Node-A.Example.com\n".to_string()))
    }

    pub(super) fn with_config(config: &Path, args: &[&str]) -> Result<KubeletConfig, ConfigError> {
        let flag = format!("--config={}", config.display());
        let mut all = vec![flag.as_str()];
        all.extend_from_slice(args);
        settings(&all)
    }

    pub(super) const fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::path::Path;

    use super::test_support::{secs, settings, with_config, TempDir};
    use super::*;

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
    fn version_is_answered_before_the_config_file_is_read() {
        let args = |a: &[&str]| {
            KubeletConfig::from_args(
                ["rkubelet", "--config=/nonexistent/k.yaml"]
                    .iter()
                    .chain(a)
                    .map(OsString::from),
            )
        };
        let Err(ConfigError::Cli(err)) = args(&["--version"]) else {
            panic!("--version must answer");
        };
        assert_eq!(err.kind, structopt::clap::ErrorKind::VersionDisplayed);
        assert_eq!(err.message, crate::version::version_text(false));
        assert_eq!(ConfigError::Cli(err).exit_code(), 0);
        assert!(matches!(
            args(&["--version=false"]),
            Err(ConfigError::Read { .. })
        ));
        let Err(bad) = args(&["--version=maybe"]) else {
            panic!("a bad --version value is an error");
        };
        assert_eq!(bad.exit_code(), 1);
        assert!(bad.to_string().contains("--version"), "{bad}");
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

    #[test]
    fn precedence_is_defaults_file_drop_ins_flags() {
        let dir = TempDir::new("precedence");
        let config = dir.config(
            "maxPods: 30
syncFrequency: 30s
fileCheckFrequency: 5s
",
        );
        let drop_ins = dir.0.join("kubelet.conf.d");
        std::fs::create_dir_all(&drop_ins).unwrap();
        let drop_in = |name: &str, body: &str| {
            let text = format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n{body}"
            );
            std::fs::write(drop_ins.join(name), text).unwrap();
        };
        drop_in("10-a.conf", "maxPods: 40\nsyncFrequency: 40s\n");
        drop_in("20-b.conf", "maxPods: 50\n");
        let dir_flag = format!("--config-dir={}", drop_ins.display());
        let c = with_config(&config, &[&dir_flag, "--max-pods=60"]).unwrap();
        assert_eq!(c.max_pods, 60, "the flag wins");
        assert_eq!(c.sync_frequency, secs(40), "the drop-in wins over the file");
        assert_eq!(
            c.file_check_frequency,
            secs(5),
            "the file wins over the default"
        );
        assert_eq!(c.http_check_frequency, secs(20), "the default");
        assert_eq!(c.config_dir.as_deref(), Some(drop_ins.as_path()));
        let c = with_config(&config, &[&dir_flag]).unwrap();
        assert_eq!(c.max_pods, 50);
        assert_eq!(c.raw.max_pods, Some(50));
        // Without --config the drop-ins lie over the defaults; an empty flag is no directory.
        let c = settings(&[&dir_flag]).unwrap();
        assert_eq!((c.max_pods, c.sync_frequency), (50, secs(40)));
        assert_eq!(settings(&["--config-dir="]).unwrap().config_dir, None);
    }

    #[test]
    fn errors_name_the_drop_in_that_set_the_value() {
        let dir = TempDir::new("drop-in-errors");
        let config =
            dir.config("imageGCHighThresholdPercent: 90\nimageGCLowThresholdPercent: 85\n");
        let drop_ins = dir.0.join("conf.d");
        std::fs::create_dir_all(&drop_ins).unwrap();
        let header = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";
        std::fs::write(
            drop_ins.join("10-gc.conf"),
            format!("{header}imageGCHighThresholdPercent: 80\n"),
        )
        .unwrap();
        let dir_flag = format!("--config-dir={}", drop_ins.display());
        let err = with_config(&config, &[&dir_flag]).unwrap_err().to_string();
        let want = format!(
            "{}: imageGCLowThresholdPercent: invalid value \"85\"",
            drop_ins.join("10-gc.conf").display()
        );
        assert!(err.starts_with(&want), "{err}");
        // A relation a drop-in repairs is no error: only the result is checked.
        let config = dir.config("imageGCHighThresholdPercent: 70\n");
        std::fs::write(
            drop_ins.join("10-gc.conf"),
            format!("{header}imageGCHighThresholdPercent: 95\n"),
        )
        .unwrap();
        let c = with_config(&config, &[&dir_flag]).unwrap();
        assert_eq!(c.raw.image_gc_high_threshold_percent, Some(95));
        std::fs::write(
            drop_ins.join("20-bad.conf"),
            format!("{header}clusterDNS: [nope]\n"),
        )
        .unwrap();
        let err = with_config(&config, &[&dir_flag]).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}: clusterDNS[0]",
                drop_ins.join("20-bad.conf").display()
            )),
            "{err}"
        );
        let missing = settings(&["--config-dir=/nonexistent/kubelet.conf.d"]).unwrap_err();
        assert!(
            matches!(missing, ConfigError::ReadDir { .. }),
            "{missing:?}"
        );
        assert_eq!(missing.exit_code(), 1);
    }
}

/// `--image-credential-provider-config` with `--image-credential-provider-bin-dir`. A config
/// without a plugin directory cannot run any plugin: refused, as upstream's plugin
/// registration refuses a directory that does not exist. A directory alone is unused, as
/// upstream.
fn credential_provider_flags(
    config: Option<PathBuf>,
    bin_dir: Option<PathBuf>,
) -> Result<Option<(PathBuf, PathBuf)>, super::error::ConfigError> {
    match (config, bin_dir) {
        (Some(config), Some(bin)) if !config.as_os_str().is_empty() => Ok(Some((config, bin))),
        (Some(config), None) if !config.as_os_str().is_empty() => Err(super::error::Origin::Flag(
            "--image-credential-provider-config",
        )
        .invalid(
            config.display(),
            "needs --image-credential-provider-bin-dir, the directory of its plugins",
        )),
        _ => Ok(None),
    }
}
