//! The versions rkubelet reports. It stands in for the kubelet of one Kubernetes release, so
//! it reports that release (what kubeadm's preflight and the version-skew rules compare), with
//! rkubelet's own version in the semver build metadata, which every such comparison ignores.

/// The Kubernetes release whose kubelet behaviour and APIs rkubelet follows.
pub const KUBERNETES_VERSION: &str = "v1.33.0";

/// rkubelet's own version.
pub const RKUBELET_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The kubelet version reported in `nodeInfo.kubeletVersion` and by `--version`:
/// `v1.33.0+rkubelet-0.1.0`.
pub fn kubelet_version() -> String {
    format!("{KUBERNETES_VERSION}+rkubelet-{RKUBELET_VERSION}")
}

/// What `--version` prints: one line, `Kubernetes <kubelet version>`, as upstream's kubelet
/// (kubeadm's preflight parses exactly that line). `raw` gives the fields one by one.
pub fn version_text(raw: bool) -> String {
    if !raw {
        return format!("Kubernetes {}", kubelet_version());
    }
    let (major, minor) = major_minor(KUBERNETES_VERSION);
    format!(
        "version.Info{{Major:\"{major}\", Minor:\"{minor}\", GitVersion:\"{}\", \
         Rkubelet:\"{RKUBELET_VERSION}\"}}",
        kubelet_version()
    )
}

fn major_minor(version: &str) -> (&str, &str) {
    let mut parts = version.trim_start_matches('v').split('.');
    (parts.next().unwrap_or(""), parts.next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape kubeadm's preflight accepts: `^\s*Kubernetes v(N.N.N)([-0-9a-zA-Z_.+]*)?\s*$`
    /// on the trimmed output, with no leading zeros in the numbers.
    fn kubeadm_parses(output: &str) -> Option<&str> {
        let version = output.trim().strip_prefix("Kubernetes v")?;
        let core_end = version
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(version.len());
        let numbers: Vec<&str> = version[..core_end].split('.').collect();
        let numeric = |n: &&str| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n == &"0" || !n.starts_with('0'))
        };
        let suffix_ok = version[core_end..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
        (numbers.len() == 3 && numbers.iter().all(numeric) && suffix_ok).then_some(version)
    }

    #[test]
    fn the_version_line_is_what_kubeadm_parses() {
        let line = version_text(false);
        assert_eq!(line.lines().count(), 1, "{line}");
        let version = kubeadm_parses(&line).unwrap_or_else(|| panic!("{line}"));
        assert!(version.starts_with("1.33."), "{version}");
        assert!(version.ends_with(&format!("+rkubelet-{RKUBELET_VERSION}")));
        assert_eq!(kubeadm_parses("Kubernetes v1.33\n"), None);
        assert_eq!(kubeadm_parses("Kubernetes v1.33.0\nrkubelet 0.1.0"), None);
    }

    #[test]
    fn raw_names_the_release_field_by_field() {
        let raw = version_text(true);
        assert!(raw.contains("Major:\"1\", Minor:\"33\""), "{raw}");
        assert!(
            raw.contains(&format!("GitVersion:\"{}\"", kubelet_version())),
            "{raw}"
        );
    }
}
