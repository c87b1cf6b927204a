//! The resources the double serves, with the per-resource facts kube-apiserver's registry
//! strategies encode: names, kinds, scope, status subresource, graceful deletion and the field
//! labels a field selector may use. Plain data, used from every request thread.

use serde_json::Value;

/// One served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// core/v1 pods (status subresource, graceful deletion).
    Pods,
    /// core/v1 nodes (cluster-scoped, status subresource).
    Nodes,
    /// core/v1 events.
    Events,
    /// core/v1 namespaces (cluster-scoped, status subresource).
    Namespaces,
    /// coordination.k8s.io/v1 leases.
    Leases,
    /// core/v1 configmaps.
    ConfigMaps,
    /// core/v1 secrets (`stringData` folded into `data`, `type` defaulted to `Opaque`).
    Secrets,
    /// core/v1 services (stored as given; no cluster IP allocation).
    Services,
    /// node.k8s.io/v1 runtimeclasses (cluster-scoped).
    RuntimeClasses,
    /// certificates.k8s.io/v1 certificatesigningrequests (cluster-scoped, status and
    /// approval subresources; see `csr.rs`).
    CertificateSigningRequests,
    /// core/v1 persistentvolumeclaims (status subresource).
    PersistentVolumeClaims,
    /// core/v1 persistentvolumes (cluster-scoped, status subresource).
    PersistentVolumes,
    /// storage.k8s.io/v1 csidrivers (cluster-scoped; `spec` defaulted as the registry does).
    CsiDrivers,
    /// storage.k8s.io/v1 csinodes (cluster-scoped; `spec.drivers` validated).
    CsiNodes,
    /// storage.k8s.io/v1 volumeattachments (cluster-scoped, status subresource).
    VolumeAttachments,
}

/// The API group of coordination.k8s.io leases.
pub const COORDINATION_GROUP: &str = "coordination.k8s.io";
/// The API group of node.k8s.io runtime classes.
pub const NODE_GROUP: &str = "node.k8s.io";
/// The API group of certificates.k8s.io CSRs.
pub const CERTIFICATES_GROUP: &str = "certificates.k8s.io";
/// The API group of storage.k8s.io CSI objects.
pub const STORAGE_GROUP: &str = "storage.k8s.io";
/// The named API groups served (each at `v1`).
pub const GROUPS: [&str; 4] = [
    COORDINATION_GROUP,
    NODE_GROUP,
    CERTIFICATES_GROUP,
    STORAGE_GROUP,
];

impl Resource {
    /// Every served resource, in discovery order.
    pub const ALL: [Resource; 15] = [
        Resource::Pods,
        Resource::Nodes,
        Resource::Events,
        Resource::Namespaces,
        Resource::Leases,
        Resource::ConfigMaps,
        Resource::Secrets,
        Resource::Services,
        Resource::RuntimeClasses,
        Resource::CertificateSigningRequests,
        Resource::PersistentVolumeClaims,
        Resource::PersistentVolumes,
        Resource::CsiDrivers,
        Resource::CsiNodes,
        Resource::VolumeAttachments,
    ];

    /// The plural name used in URLs (`pods`).
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::Nodes => "nodes",
            Resource::Events => "events",
            Resource::Namespaces => "namespaces",
            Resource::Leases => "leases",
            Resource::ConfigMaps => "configmaps",
            Resource::Secrets => "secrets",
            Resource::Services => "services",
            Resource::RuntimeClasses => "runtimeclasses",
            Resource::CertificateSigningRequests => "certificatesigningrequests",
            Resource::PersistentVolumeClaims => "persistentvolumeclaims",
            Resource::PersistentVolumes => "persistentvolumes",
            Resource::CsiDrivers => "csidrivers",
            Resource::CsiNodes => "csinodes",
            Resource::VolumeAttachments => "volumeattachments",
        }
    }

    /// The singular name shown in discovery (`pod`).
    pub fn singular(self) -> &'static str {
        let plural = self.plural();
        &plural[..plural.len() - 1]
    }

    /// The object kind (`Pod`).
    pub fn kind(self) -> &'static str {
        match self {
            Resource::Pods => "Pod",
            Resource::Nodes => "Node",
            Resource::Events => "Event",
            Resource::Namespaces => "Namespace",
            Resource::Leases => "Lease",
            Resource::ConfigMaps => "ConfigMap",
            Resource::Secrets => "Secret",
            Resource::Services => "Service",
            Resource::RuntimeClasses => "RuntimeClass",
            Resource::CertificateSigningRequests => "CertificateSigningRequest",
            Resource::PersistentVolumeClaims => "PersistentVolumeClaim",
            Resource::PersistentVolumes => "PersistentVolume",
            Resource::CsiDrivers => "CSIDriver",
            Resource::CsiNodes => "CSINode",
            Resource::VolumeAttachments => "VolumeAttachment",
        }
    }

    /// The API group, empty for core.
    pub fn group(self) -> &'static str {
        match self {
            Resource::Leases => COORDINATION_GROUP,
            Resource::RuntimeClasses => NODE_GROUP,
            Resource::CertificateSigningRequests => CERTIFICATES_GROUP,
            Resource::CsiDrivers | Resource::CsiNodes | Resource::VolumeAttachments => {
                STORAGE_GROUP
            }
            _ => "",
        }
    }

    /// `apiVersion` of the objects (`v1`, `coordination.k8s.io/v1`).
    pub fn api_version(self) -> &'static str {
        match self {
            Resource::Leases => "coordination.k8s.io/v1",
            Resource::RuntimeClasses => "node.k8s.io/v1",
            Resource::CertificateSigningRequests => "certificates.k8s.io/v1",
            Resource::CsiDrivers | Resource::CsiNodes | Resource::VolumeAttachments => {
                "storage.k8s.io/v1"
            }
            _ => "v1",
        }
    }

    /// Whether objects live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(
            self,
            Resource::Nodes
                | Resource::Namespaces
                | Resource::RuntimeClasses
                | Resource::CertificateSigningRequests
                | Resource::PersistentVolumes
                | Resource::CsiDrivers
                | Resource::CsiNodes
                | Resource::VolumeAttachments
        )
    }

    /// Whether the resource has a `status` subresource (then the main resource cannot
    /// change `.status`, and `.../status` can change nothing else).
    pub fn has_status(self) -> bool {
        matches!(
            self,
            Resource::Pods
                | Resource::Nodes
                | Resource::Namespaces
                | Resource::CertificateSigningRequests
                | Resource::PersistentVolumeClaims
                | Resource::PersistentVolumes
                | Resource::VolumeAttachments
        )
    }

    /// kubectl's short names.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Resource::Pods => &["po"],
            Resource::Nodes => &["no"],
            Resource::Events => &["ev"],
            Resource::Namespaces => &["ns"],
            Resource::ConfigMaps => &["cm"],
            Resource::Services => &["svc"],
            Resource::CertificateSigningRequests => &["csr"],
            Resource::PersistentVolumeClaims => &["pvc"],
            Resource::PersistentVolumes => &["pv"],
            Resource::Leases
            | Resource::Secrets
            | Resource::RuntimeClasses
            | Resource::CsiDrivers
            | Resource::CsiNodes
            | Resource::VolumeAttachments => &[],
        }
    }

    /// PUT on a missing object creates it (the strategies' `AllowCreateOnUpdate`).
    pub fn allow_create_on_update(self) -> bool {
        matches!(self, Resource::Events | Resource::Leases)
    }

    /// A delete answers with the object (the registry's `ReturnDeletedObject`) instead of a
    /// `Status`.
    pub fn returns_deleted_object(self) -> bool {
        self == Resource::Pods
    }

    /// The resource named by a URL segment within an API group (`""` for core).
    pub fn from_path(group: &str, plural: &str) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| r.group() == group && r.plural() == plural)
    }

    /// `plural` or `plural.group`, as error messages name a resource.
    pub fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_string(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// The value of a field label for field selectors, or `None` if the resource does not
    /// support that label (kube-apiserver answers 400 then). Missing fields read as `""`,
    /// missing booleans as `false`.
    pub fn field_value(self, obj: &Value, label: &str) -> Option<String> {
        let path = field_path(self, label)?;
        let value = obj.pointer(path.pointer).unwrap_or(&Value::Null);
        Some(match (value, path.boolean) {
            (Value::String(s), _) => s.clone(),
            (Value::Bool(b), _) => b.to_string(),
            (Value::Null, true) => "false".to_string(),
            (Value::Null, false) => String::new(),
            (other, _) => other.to_string(),
        })
    }
}

/// Where a field label's value lives in the object.
struct FieldPath {
    pointer: &'static str,
    /// Booleans default to `false` when absent.
    boolean: bool,
}

/// The field labels of each resource (the registries' `GetAttrs` / field label conversions).
fn field_path(resource: Resource, label: &str) -> Option<FieldPath> {
    let string = |pointer| {
        Some(FieldPath {
            pointer,
            boolean: false,
        })
    };
    let boolean = |pointer| {
        Some(FieldPath {
            pointer,
            boolean: true,
        })
    };
    match (label, resource) {
        ("metadata.name", _) => string("/metadata/name"),
        ("metadata.namespace", r) if r.namespaced() => string("/metadata/namespace"),
        ("spec.nodeName", Resource::Pods) => string("/spec/nodeName"),
        ("spec.restartPolicy", Resource::Pods) => string("/spec/restartPolicy"),
        ("spec.schedulerName", Resource::Pods) => string("/spec/schedulerName"),
        ("spec.serviceAccountName", Resource::Pods) => string("/spec/serviceAccountName"),
        ("spec.hostNetwork", Resource::Pods) => boolean("/spec/hostNetwork"),
        ("status.phase", Resource::Pods | Resource::Namespaces) => string("/status/phase"),
        ("status.podIP", Resource::Pods) => string("/status/podIP"),
        ("status.nominatedNodeName", Resource::Pods) => string("/status/nominatedNodeName"),
        ("spec.unschedulable", Resource::Nodes) => boolean("/spec/unschedulable"),
        ("spec.clusterIP", Resource::Services) => string("/spec/clusterIP"),
        ("spec.type", Resource::Services) => string("/spec/type"),
        ("spec.signerName", Resource::CertificateSigningRequests) => string("/spec/signerName"),
        ("involvedObject.kind", Resource::Events) => string("/involvedObject/kind"),
        ("involvedObject.namespace", Resource::Events) => string("/involvedObject/namespace"),
        ("involvedObject.name", Resource::Events) => string("/involvedObject/name"),
        ("involvedObject.uid", Resource::Events) => string("/involvedObject/uid"),
        ("involvedObject.apiVersion", Resource::Events) => string("/involvedObject/apiVersion"),
        ("involvedObject.fieldPath", Resource::Events) => string("/involvedObject/fieldPath"),
        ("reason", Resource::Events) => string("/reason"),
        ("reportingComponent", Resource::Events) => string("/reportingComponent"),
        ("source", Resource::Events) => string("/source/component"),
        ("type", Resource::Events | Resource::Secrets) => string("/type"),
        _ => None,
    }
}
