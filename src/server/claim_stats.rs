//! Claim volumes in the Summary API and `kubelet_volume_stats_*`: the volumes of pods that
//! come from PersistentVolumeClaims, with their pod-spec name, `pvcRef` and figures (statfs
//! of the mount for `local` PVs, the driver's `NodeGetVolumeStats` for CSI volumes).

use super::stats::fs_of;
use super::summary::{FsStats, Summary};
use crate::util::metrics::Exposition;

/// Gives the volumes of `summary` that come from PersistentVolumeClaims their pod-spec name,
/// their `pvcRef`, and the figures of the filesystem they are on (upstream's `local` volumes
/// report statfs). A claim volume used in place (`hostPath`) has no entry, as upstream.
pub fn label_claim_volumes(summary: &mut Summary, claims: &[crate::volume::ClaimVolume]) {
    for pod in &mut summary.pods {
        for claim in claims.iter().filter(|c| c.uid.0 == pod.pod_ref.uid) {
            let Some(path) = &claim.mounted_at else {
                continue;
            };
            let dir_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let Some(entry) = pod
                .volume
                .iter_mut()
                .find(|v| Some(&v.name) == dir_name.as_ref() && v.pvc_ref.is_none())
            else {
                continue;
            };
            entry.fs = match (&claim.csi, &claim.usage) {
                (Some(_), Some(usage)) => fs_of_usage(usage, &entry.fs.time),
                // A CSI driver without volume statistics: the walked figures stay.
                (Some(_), None) => entry.fs.clone(),
                (None, _) => fs_of(path, &entry.fs.time),
            };
            entry.name = claim.volume.clone();
            entry.pvc_ref = Some(crate::server::summary::PvcReference {
                name: claim.claim.clone(),
                namespace: claim.namespace.clone(),
            });
        }
        pod.volume.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

/// `kubelet_volume_stats_*` for the claim volumes the kubelet mounts (upstream's volume stats
/// collector: one sample per claim, labels `namespace` and `persistentvolumeclaim`; nothing
/// when there is no such volume).
pub fn claim_volume_metrics(e: &mut Exposition, claims: &[crate::volume::ClaimVolume]) {
    let mut seen = std::collections::BTreeMap::new();
    for claim in claims {
        let fs = match (&claim.mounted_at, &claim.csi, &claim.usage) {
            // CSI volumes have figures only when their driver reports them.
            (_, Some(_), Some(usage)) => fs_of_usage(usage, ""),
            (_, Some(_), None) | (None, _, _) => continue,
            (Some(path), None, _) => fs_of(path, ""),
        };
        seen.entry((claim.namespace.clone(), claim.claim.clone()))
            .or_insert(fs);
    }
    if seen.is_empty() {
        return;
    }
    type Field = fn(&FsStats) -> Option<u64>;
    let families: [(&str, &str, Field); 6] = [
        (
            "kubelet_volume_stats_capacity_bytes",
            "Capacity in bytes of the volume",
            |f| f.capacity_bytes,
        ),
        (
            "kubelet_volume_stats_available_bytes",
            "Number of available bytes in the volume",
            |f| f.available_bytes,
        ),
        (
            "kubelet_volume_stats_used_bytes",
            "Number of used bytes in the volume",
            |f| f.used_bytes,
        ),
        (
            "kubelet_volume_stats_inodes",
            "Maximum number of inodes in the volume",
            |f| f.inodes,
        ),
        (
            "kubelet_volume_stats_inodes_free",
            "Number of free inodes in the volume",
            |f| f.inodes_free,
        ),
        (
            "kubelet_volume_stats_inodes_used",
            "Number of used inodes in the volume",
            |f| f.inodes_used,
        ),
    ];
    for (name, help, field) in families {
        e.family(name, &format!("[ALPHA] {help}"), "gauge");
        for ((namespace, claim), fs) in &seen {
            if let Some(v) = field(fs) {
                e.sample(
                    name,
                    &["namespace", "persistentvolumeclaim"],
                    &[namespace.clone(), claim.clone()],
                    v as f64,
                );
            }
        }
    }
}

/// The figures a CSI driver reported (`NodeGetVolumeStats`).
fn fs_of_usage(usage: &crate::volume::VolumeUsage, time: &str) -> FsStats {
    FsStats {
        time: time.into(),
        available_bytes: usage.available_bytes,
        capacity_bytes: usage.capacity_bytes,
        used_bytes: usage.used_bytes,
        inodes_free: usage.inodes_free,
        inodes: usage.inodes,
        inodes_used: usage.inodes_used,
    }
}
