//! This node's identity: its name (`--hostname-override`, else the machine's hostname, made
//! a valid DNS subdomain) and its IPs (`--node-ip`: one address, or an IPv4 and an IPv6 one
//! for a dual-stack node).

use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::config::error::{ConfigError, Origin};
use crate::config::kubelet_config::validate::{check_dns_subdomain, check_ip};

/// Where the machine's hostname is read when there is no `--hostname-override`.
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// Reads the machine's hostname from `/proc/sys/kernel/hostname`.
pub(super) fn read_machine_hostname() -> Result<String, ConfigError> {
    fs::read_to_string(HOSTNAME_FILE).map_err(|source| ConfigError::Hostname {
        path: PathBuf::from(HOSTNAME_FILE),
        source,
    })
}

/// The node name: `--hostname-override` unless it is blank, else what `hostname` reads from
/// the machine; trimmed, lower-cased and checked.
pub(super) fn node_name(
    hostname_override: Option<String>,
    hostname: impl FnOnce() -> Result<String, ConfigError>,
) -> Result<String, ConfigError> {
    let (name, origin) = match hostname_override {
        Some(name) if !name.trim().is_empty() => (name, Origin::Flag("--hostname-override")),
        _ => (hostname()?, Origin::Machine(HOSTNAME_FILE.into())),
    };
    let node_name = name.trim().to_lowercase();
    check_dns_subdomain(origin, &node_name)?;
    Ok(node_name)
}

/// Parses `--node-ip`: one address, or a comma-separated IPv4 and IPv6 pair.
pub(super) fn parse_node_ips(value: &str) -> Result<Vec<IpAddr>, ConfigError> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::config::flags::KubeletFlags;
    use crate::config::settings::merge::merge;
    use crate::config::settings::test_support::settings;

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
}
