//! PersistentVolumeClaims (upstream's desired-state-of-world populator): which
//! PersistentVolume a pod's `persistentVolumeClaim` volume, or its generic `ephemeral`
//! volume, stands for, with upstream's errors while it cannot be used yet (claim missing,
//! not bound, being deleted, not the pod's), and the PV checks done before mounting (node
//! affinity). Pure functions over the API objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Volume};

use crate::util::node_selector::term_matches;

/// The claim a volume stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRef {
    /// The claim's name (`<pod>-<volume>` for a generic ephemeral volume).
    pub name: String,
    /// A generic ephemeral volume: the claim must belong to the pod.
    pub ephemeral: bool,
    /// `persistentVolumeClaim.readOnly`: the volume is mounted read-only.
    pub read_only: bool,
}

/// The claim of `volume` of `pod`, if it is a claim or generic ephemeral volume.
pub fn claim_of(pod: &Pod, volume: &Volume) -> Option<ClaimRef> {
    if let Some(src) = &volume.persistent_volume_claim {
        return Some(ClaimRef {
            name: src.claim_name.clone(),
            ephemeral: false,
            read_only: src.read_only.unwrap_or(false),
        });
    }
    volume.ephemeral.as_ref().map(|_| ClaimRef {
        name: format!(
            "{}-{}",
            pod.metadata.name.as_deref().unwrap_or_default(),
            volume.name
        ),
        ephemeral: true,
        read_only: false,
    })
}

/// Whether any container of `pod` (init, app or ephemeral) mounts volume `name`
/// (`volumeMounts`) and whether any uses it as a raw device (`volumeDevices`).
pub fn uses(pod: &Pod, name: &str) -> (bool, bool) {
    let Some(spec) = pod.spec.as_ref() else {
        return (false, false);
    };
    let mut as_mount = false;
    let mut as_device = false;
    let mut note =
        |mounts: Option<&Vec<k8s_openapi::api::core::v1::VolumeMount>>,
         devices: Option<&Vec<k8s_openapi::api::core::v1::VolumeDevice>>| {
            as_mount |= mounts.into_iter().flatten().any(|m| m.name == name);
            as_device |= devices.into_iter().flatten().any(|d| d.name == name);
        };
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        note(c.volume_mounts.as_ref(), c.volume_devices.as_ref());
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        note(c.volume_mounts.as_ref(), c.volume_devices.as_ref());
    }
    (as_mount, as_device)
}

/// Checks the claim as upstream's populator does (`getPVCExtractPV`): it exists, is not
/// being deleted, is bound and names its volume. `None` is a claim the API server does not
/// have. Errors are upstream's, wrapped as it wraps them.
pub fn check_claim(
    namespace: &str,
    name: &str,
    claim: Option<&PersistentVolumeClaim>,
) -> Result<String, String> {
    let wrap = |e: &str| format!("error processing PVC {namespace}/{name}: {e}");
    let Some(claim) = claim else {
        return Err(wrap(&format!(
            "failed to fetch PVC from API server: persistentvolumeclaims \"{name}\" not found"
        )));
    };
    if claim.metadata.deletion_timestamp.is_some() {
        return Err(wrap("PVC is being deleted"));
    }
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    if phase != Some("Bound") {
        return Err(wrap("PVC is not bound"));
    }
    match claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()) {
        Some(pv) if !pv.is_empty() => Ok(pv.to_string()),
        _ => Err(wrap("PVC has empty pvc.Spec.VolumeName")),
    }
}

/// A generic ephemeral volume's claim must be controlled by the pod (upstream
/// `VolumeIsForPod`); a claim of the same name made by someone else is not used.
pub fn check_owner(pod: &Pod, claim: &PersistentVolumeClaim) -> Result<(), String> {
    let pod_namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let claim_namespace = claim.metadata.namespace.as_deref().unwrap_or("default");
    let pod_uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let controlled = claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == pod_uid);
    if claim_namespace == pod_namespace && controlled {
        return Ok(());
    }
    Err(format!(
        "PVC {claim_namespace}/{} was not created for pod {pod_namespace}/{} (pod is not owner)",
        claim.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
    ))
}

/// Checks the volume the claim names (upstream `getPVSpec`): it exists and its `claimRef`
/// points back at this claim.
pub fn check_volume(
    namespace: &str,
    claim_name: &str,
    claim: &PersistentVolumeClaim,
    pv_name: &str,
    pv: Option<&PersistentVolume>,
) -> Result<(), String> {
    let wrap = |e: &str| format!("error processing PVC {namespace}/{claim_name}: {e}");
    let Some(pv) = pv else {
        return Err(wrap(&format!(
            "failed to fetch PV {pv_name} from API server: persistentvolumes \"{pv_name}\" not found"
        )));
    };
    let Some(claim_ref) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return Err(wrap(&format!(
            "found PV object {pv_name} but it has a nil pv.Spec.ClaimRef indicating it is not yet bound to the claim"
        )));
    };
    let claim_uid = claim.metadata.uid.as_deref().unwrap_or_default();
    let ref_uid = claim_ref.uid.as_deref().unwrap_or_default();
    if ref_uid != claim_uid {
        return Err(wrap(&format!(
            "found PV object {pv_name} but its pv.Spec.ClaimRef.UID {ref_uid} does not point to claim.UID {claim_uid}"
        )));
    }
    Ok(())
}

/// The PV's required node affinity against this node (upstream `CheckNodeAffinity`): no
/// affinity passes; otherwise one term must match. The error is upstream's mount-time
/// event text.
pub fn check_node_affinity(
    pv: &PersistentVolume,
    labels: &BTreeMap<String, String>,
    node: &str,
) -> Result<(), String> {
    let required = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref());
    let Some(required) = required else {
        return Ok(());
    };
    if required
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, labels, node))
    {
        return Ok(());
    }
    Err(format!(
        "MountVolume.NodeAffinity check failed for volume \"{}\" : no matching NodeSelectorTerms",
        pv.metadata.name.as_deref().unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(v: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(v).unwrap()
    }

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "apps", "uid": "pod-uid"},
            "spec": {"containers": [], "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "c1", "readOnly": true}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                {"name": "tmp", "emptyDir": {}}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn volumes_name_their_claims() {
        let p = pod();
        let volumes = p.spec.as_ref().unwrap().volumes.clone().unwrap();
        assert_eq!(
            claim_of(&p, &volumes[0]),
            Some(ClaimRef {
                name: "c1".into(),
                ephemeral: false,
                read_only: true
            })
        );
        assert_eq!(claim_of(&p, &volumes[1]).unwrap().name, "web-scratch");
        assert!(claim_of(&p, &volumes[1]).unwrap().ephemeral);
        assert_eq!(claim_of(&p, &volumes[2]), None);
    }

    #[test]
    fn claims_fail_with_upstreams_errors_until_bound() {
        let missing = check_claim("apps", "c1", None).unwrap_err();
        assert_eq!(
            missing,
            "error processing PVC apps/c1: failed to fetch PVC from API server: persistentvolumeclaims \"c1\" not found"
        );
        let pending = claim(serde_json::json!({"metadata": {"name": "c1"}, "spec": {},
            "status": {"phase": "Pending"}}));
        assert_eq!(
            check_claim("apps", "c1", Some(&pending)).unwrap_err(),
            "error processing PVC apps/c1: PVC is not bound"
        );
        let deleting = claim(serde_json::json!({"metadata": {"name": "c1",
            "deletionTimestamp": "2026-12-04T10:00:00Z"}, "spec": {"volumeName": "pv1"},
            "status": {"phase": "Bound"}}));
        assert_eq!(
            check_claim("apps", "c1", Some(&deleting)).unwrap_err(),
            "error processing PVC apps/c1: PVC is being deleted"
        );
        let bound = claim(
            serde_json::json!({"metadata": {"name": "c1", "uid": "claim-uid"},
            "spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}}),
        );
        assert_eq!(check_claim("apps", "c1", Some(&bound)).unwrap(), "pv1");

        let pv = |claim_ref: serde_json::Value| -> PersistentVolume {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "pv1"},
                "spec": {"claimRef": claim_ref}}))
            .unwrap()
        };
        assert!(check_volume("apps", "c1", &bound, "pv1", None)
            .unwrap_err()
            .ends_with(
                "failed to fetch PV pv1 from API server: persistentvolumes \"pv1\" not found"
            ));
        let other = pv(serde_json::json!({"name": "c1", "uid": "other"}));
        assert_eq!(
            check_volume("apps", "c1", &bound, "pv1", Some(&other)).unwrap_err(),
            "error processing PVC apps/c1: found PV object pv1 but its pv.Spec.ClaimRef.UID other does not point to claim.UID claim-uid"
        );
        let unbound: PersistentVolume =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "pv1"}, "spec": {}}))
                .unwrap();
        assert!(check_volume("apps", "c1", &bound, "pv1", Some(&unbound))
            .unwrap_err()
            .contains("has a nil pv.Spec.ClaimRef"));
        let mine = pv(serde_json::json!({"name": "c1", "uid": "claim-uid"}));
        assert_eq!(
            check_volume("apps", "c1", &bound, "pv1", Some(&mine)),
            Ok(())
        );
    }

    #[test]
    fn ephemeral_claims_must_be_controlled_by_the_pod() {
        let p = pod();
        let owned = claim(serde_json::json!({"metadata": {"name": "web-scratch",
            "namespace": "apps", "ownerReferences": [{"apiVersion": "v1", "kind": "Pod",
            "name": "web", "uid": "pod-uid", "controller": true}]}}));
        assert_eq!(check_owner(&p, &owned), Ok(()));
        let foreign = claim(serde_json::json!({"metadata": {"name": "web-scratch",
            "namespace": "apps"}}));
        assert_eq!(
            check_owner(&p, &foreign).unwrap_err(),
            "PVC apps/web-scratch was not created for pod apps/web (pod is not owner)"
        );
    }

    #[test]
    fn mounts_and_devices_are_told_apart() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a",
                "volumeMounts": [{"name": "fs", "mountPath": "/fs"}],
                "volumeDevices": [{"name": "raw", "devicePath": "/dev/xvda"}]}],
                "initContainers": [{"name": "i",
                "volumeMounts": [{"name": "both", "mountPath": "/b"}]}]}
        }))
        .unwrap();
        assert_eq!(uses(&p, "fs"), (true, false));
        assert_eq!(uses(&p, "raw"), (false, true));
        assert_eq!(uses(&p, "both"), (true, false));
        assert_eq!(uses(&p, "none"), (false, false));
    }

    #[test]
    fn node_affinity_of_the_volume_must_match_this_node() {
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "local-1"},
            "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-a"]}]}]}}}
        }))
        .unwrap();
        let labels =
            |host: &str| BTreeMap::from([("kubernetes.io/hostname".to_string(), host.to_string())]);
        assert_eq!(
            check_node_affinity(&pv, &labels("node-a"), "node-a"),
            Ok(())
        );
        assert_eq!(
            check_node_affinity(&pv, &labels("node-b"), "node-b").unwrap_err(),
            "MountVolume.NodeAffinity check failed for volume \"local-1\" : no matching NodeSelectorTerms"
        );
    }
}
