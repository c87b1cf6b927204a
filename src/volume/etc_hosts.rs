//! The kubelet-managed `/etc/hosts` of a pod (upstream `managedHostsFileContent`,
//! `nodeHostsFileContent` and `hostsEntriesFromHostAliases` in
//! `pkg/kubelet/kubelet_pods.go`): generated for pods on the pod network, the node's own for
//! hostNetwork pods. Generated and written by the pod worker thread in
//! `sync_pod` before the sandbox's containers start; the file is bind-mounted into
//! every container.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use k8s_openapi::api::core::v1::HostAlias;

/// First line of a managed hosts file, byte-for-byte as upstream.
pub const MANAGED_HOSTS_HEADER: &str = "# Kubernetes-managed hosts file.\n";

/// First line of a hostNetwork pod's managed hosts file, as upstream.
pub const MANAGED_HOSTS_HEADER_HOST_NETWORK: &str =
    "# Kubernetes-managed hosts file (host network).\n";

/// Permission bits of the written file, as upstream.
const HOSTS_FILE_MODE: u32 = 0o644;

/// The content of a pod's managed `/etc/hosts`.
///
/// `domain` is the full domain the pod's FQDN ends in
/// (`<subdomain>.<namespace>.svc.<cluster-domain>`), present only when the pod sets
/// `spec.subdomain`; each pod IP then maps to `<hostname>.<domain>` and `<hostname>`.
pub fn hosts_file_content(
    pod_ips: &[String],
    hostname: &str,
    domain: Option<&str>,
    host_aliases: &[HostAlias],
) -> String {
    let mut out = String::from(MANAGED_HOSTS_HEADER);
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::0\tip6-localnet\n");
    out.push_str("fe00::0\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    for ip in pod_ips {
        // Writing to a String cannot fail.
        let _ = match domain.filter(|d| !d.is_empty()) {
            Some(domain) => writeln!(out, "{ip}\t{hostname}.{domain}\t{hostname}"),
            None => writeln!(out, "{ip}\t{hostname}"),
        };
    }
    out.push_str(&host_alias_entries(host_aliases));
    out
}

/// The content of a hostNetwork pod's managed `/etc/hosts`: the node's own file under the
/// host-network header, then the host aliases.
pub fn host_network_hosts_file_content(node_hosts: &str, host_aliases: &[HostAlias]) -> String {
    let mut out = String::from(MANAGED_HOSTS_HEADER_HOST_NETWORK);
    out.push_str(node_hosts);
    out.push_str(&host_alias_entries(host_aliases));
    out
}

/// The `# Entries added by HostAliases.` section: one line per alias, its hostnames
/// tab-separated. Empty when there are no aliases.
pub fn host_alias_entries(host_aliases: &[HostAlias]) -> String {
    if host_aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for alias in host_aliases {
        let names = alias.hostnames.as_deref().unwrap_or_default().join("\t");
        let _ = writeln!(out, "{}\t{names}", alias.ip);
    }
    out
}

/// Writes `content` to `path` with mode 0644, atomically: a sibling temporary file
/// is written and renamed over `path`, so a container starting meanwhile reads either
/// the old file or the new one. Not synced to disk (upstream writes it plainly too): after
/// a crash of the machine no container of the pod runs, and the file is compared with
/// what it should hold, and rewritten, before the next one starts.
pub fn write_hosts_file(path: &Path, content: &str) -> io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "hosts path has no file name")
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);

    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(HOSTS_FILE_MODE)
            .open(&tmp)?;
        f.write_all(content.as_bytes())?;
        drop(f);
        fs::set_permissions(&tmp, fs::Permissions::from_mode(HOSTS_FILE_MODE))?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::test_support::TestDir;

    const LOCAL: &str = "# Kubernetes-managed hosts file.\n\
        127.0.0.1\tlocalhost\n\
        ::1\tlocalhost ip6-localhost ip6-loopback\n\
        fe00::0\tip6-localnet\n\
        fe00::0\tip6-mcastprefix\n\
        fe00::1\tip6-allnodes\n\
        fe00::2\tip6-allrouters\n";

    fn alias(ip: &str, names: &[&str]) -> HostAlias {
        HostAlias {
            ip: ip.to_string(),
            hostnames: Some(names.iter().map(|n| n.to_string()).collect()),
        }
    }

    #[test]
    fn content_matches_upstream() {
        let ips = vec!["10.0.0.5".to_string()];
        let dual = vec!["10.0.0.5".to_string(), "fd00::5".to_string()];
        let aliases = [
            alias("123.45.67.89", &["foo", "bar", "baz"]),
            alias("456.78.90.123", &["park", "doo"]),
        ];
        let cases: Vec<(&str, Option<&str>, &[HostAlias], String)> = vec![
            ("plain", None, &[], format!("{LOCAL}10.0.0.5\tweb-0\n")),
            (
                "subdomain",
                Some("nginx.default.svc.cluster.local"),
                &[],
                format!("{LOCAL}10.0.0.5\tweb-0.nginx.default.svc.cluster.local\tweb-0\n"),
            ),
            (
                "empty domain",
                Some(""),
                &[],
                format!("{LOCAL}10.0.0.5\tweb-0\n"),
            ),
            (
                "aliases",
                None,
                &aliases,
                format!(
                    "{LOCAL}10.0.0.5\tweb-0\n\n# Entries added by HostAliases.\n\
                     123.45.67.89\tfoo\tbar\tbaz\n456.78.90.123\tpark\tdoo\n"
                ),
            ),
        ];
        for (name, domain, aliases, want) in cases {
            assert_eq!(
                hosts_file_content(&ips, "web-0", domain, aliases),
                want,
                "{name}"
            );
        }
        assert_eq!(
            hosts_file_content(&dual, "db", Some("s.ns.svc.k8s.local"), &[]),
            format!(
                "{LOCAL}10.0.0.5\tdb.s.ns.svc.k8s.local\tdb\nfd00::5\tdb.s.ns.svc.k8s.local\tdb\n"
            )
        );
        assert_eq!(hosts_file_content(&[], "x", None, &[]), LOCAL);
    }

    #[test]
    fn alias_without_hostnames_keeps_the_ip_line() {
        let a = HostAlias {
            ip: "1.2.3.4".into(),
            hostnames: None,
        };
        assert_eq!(
            host_alias_entries(&[a]),
            "\n# Entries added by HostAliases.\n1.2.3.4\t\n"
        );
        assert_eq!(host_alias_entries(&[]), "");
    }

    #[test]
    fn write_replaces_atomically_with_mode() {
        let dir = TestDir::new("hosts");
        let path = dir.path().join("etc-hosts");
        write_hosts_file(&path, "one\n").expect("first write");
        write_hosts_file(&path, "two\n").expect("second write");
        assert_eq!(fs::read_to_string(&path).expect("read"), "two\n");
        let meta = fs::metadata(&path).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("etc-hosts")]);
    }

    #[test]
    fn write_into_missing_dir_fails() {
        let dir = TestDir::new("hosts-missing");
        let err = write_hosts_file(&dir.path().join("nope/etc-hosts"), "x").expect_err("no dir");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
