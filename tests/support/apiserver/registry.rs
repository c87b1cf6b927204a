//! The API rules of create, update, patch and binding, after kube-apiserver's generic
//! registry and the pod, node and namespace strategies: what create fills in, what update may
//! change (status subresource split, immutable metadata, pod spec immutability,
//! resourceVersion and UID preconditions, no-op updates) and merge patch. Deletion is in
//! `deletion.rs`. Runs on the calling thread, inside [`Store::write`] so each decision sees
//! the current object.

use serde_json::{json, Value};

use super::defaults::{default_pod_spec, initial_pod_status};
use super::meta::{format_time, merge_patch, metadata_mut, name_suffix, new_uid, str_at, unix_now};
use super::resources::Resource;
use super::status::ApiError;
use super::store::{Store, Write, Written};
use super::token::base64;
use rkubelet::api::strategic;

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The resource itself: may not change `.status`.
    Main,
    /// The `status` subresource: changes nothing but `.status`.
    Status,
}

pub(super) fn key(resource: Resource, namespace: &str, name: &str) -> (Resource, String, String) {
    let namespace = if resource.namespaced() { namespace } else { "" };
    (resource, namespace.to_string(), name.to_string())
}

/// `POST` to a collection: fills in identity and defaults, 409 if the name is taken.
pub fn create(
    store: &Store,
    resource: Resource,
    namespace: &str,
    body: Value,
    admit: &Admit<'_>,
) -> Result<Value, ApiError> {
    let object = prepare_create(store, resource, namespace, body)?;
    admit(Operation::Create, None, Some(&object))?;
    let name = str_at(&object, "/metadata/name").to_string();
    let written = store.write(key(resource, namespace, &name), |current| match current {
        Some(_) => Err(ApiError::already_exists(resource, &name)),
        None => Ok(Write::Put(object)),
    })?;
    Ok(written.object)
}

/// Validates a new object and sets what the server owns: name from `generateName`,
/// namespace from the URL, `uid`, `creationTimestamp`, defaults and initial status.
fn prepare_create(
    store: &Store,
    resource: Resource,
    namespace: &str,
    mut object: Value,
) -> Result<Value, ApiError> {
    check_type(resource, &object)?;
    check_namespace(resource, namespace, &object)?;
    if resource.namespaced()
        && store
            .get(&key(Resource::Namespaces, "", namespace))
            .is_none()
    {
        return Err(ApiError::not_found(Resource::Namespaces, namespace));
    }
    if !str_at(&object, "/metadata/resourceVersion").is_empty() {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let mut name = str_at(&object, "/metadata/name").to_string();
    let generate_name = str_at(&object, "/metadata/generateName");
    if name.is_empty() && !generate_name.is_empty() {
        name = format!("{generate_name}{}", name_suffix());
    }
    check_name(resource, &name)?;
    object["kind"] = json!(resource.kind());
    object["apiVersion"] = json!(resource.api_version());
    let meta = metadata_mut(&mut object);
    meta.insert("name".into(), json!(name));
    if resource.namespaced() {
        meta.insert("namespace".into(), json!(namespace));
    }
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(format_time(unix_now())));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    match resource {
        Resource::Pods => {
            default_pod_spec(&mut object);
            object["status"] = initial_pod_status(&object);
        }
        Resource::Namespaces => {
            object["spec"] = json!({ "finalizers": ["kubernetes"] });
            object["status"] = json!({ "phase": "Active" });
        }
        Resource::Secrets => {
            fold_string_data(&mut object)?;
            if str_at(&object, "/type").is_empty() {
                object["type"] = json!("Opaque");
            }
        }
        Resource::PersistentVolumeClaims => check_claim(&object, &name)?,
        Resource::PersistentVolumes => check_persistent_volume(&object, &name)?,
        Resource::CsiDrivers => default_csi_driver(&mut object),
        Resource::CsiNodes => check_csi_node(&object, &name)?,
        _ => {}
    }
    Ok(object)
}

/// `PUT`: replaces the object (or its status). Events and leases are created if missing.
pub fn update(
    store: &Store,
    resource: Resource,
    namespace: &str,
    name: &str,
    body: Value,
    part: Part,
    admit: &Admit<'_>,
) -> Result<Written, ApiError> {
    check_type(resource, &body)?;
    check_namespace(resource, namespace, &body)?;
    let body_name = str_at(&body, "/metadata/name");
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let create_on_update = part == Part::Main && resource.allow_create_on_update();
    let new_object = if create_on_update && store.get(&key(resource, namespace, name)).is_none() {
        Some(prepare_create(store, resource, namespace, body.clone())?)
    } else {
        None
    };
    store.write(key(resource, namespace, name), |current| {
        let write = match (current, new_object) {
            (Some(current), _) => updated(resource, current, body, part)?,
            (None, Some(object)) => Write::Put(object),
            (None, None) => return Err(ApiError::not_found(resource, name)),
        };
        if let Write::Put(next) = &write {
            let op = if current.is_some() {
                Operation::Update
            } else {
                Operation::Create
            };
            admit(op, current, Some(next))?;
        }
        Ok(write)
    })
}

/// The patch formats the double applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`: lists with a patch merge key (pod and node
    /// conditions by `type`, ...) merge element by element, with the directives
    /// (`$setElementOrder`, `$patch`, `$retainKeys`, `$deleteFromPrimitiveList`) and the
    /// checks kube-apiserver applies.
    Strategic,
}

impl PatchType {
    /// The patch type of a `Content-Type`; other types (JSON patch, apply) get 415.
    pub fn from_content_type(content_type: &str) -> Result<PatchType, ApiError> {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        match media_type {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            _ => Err(ApiError::unsupported_media_type(content_type)),
        }
    }
}

/// `PATCH`: merges `patch` into the current object, then applies the update rules (with
/// `admit` seeing the current and the patched object). A `metadata.resourceVersion` or
/// `metadata.uid` in the patch acts as a precondition.
#[allow(clippy::too_many_arguments)]
pub fn patch(
    store: &Store,
    resource: Resource,
    namespace: &str,
    name: &str,
    patch_type: PatchType,
    patch: &[u8],
    part: Part,
    admit: &Admit<'_>,
) -> Result<Written, ApiError> {
    let patch: Value = serde_json::from_slice(patch)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if !patch.is_object() {
        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
    }
    store.write(key(resource, namespace, name), |current| {
        let current = current.ok_or_else(|| ApiError::not_found(resource, name))?;
        let merged = apply_patch(resource, current, patch_type, &patch)?;
        check_type(resource, &merged)?;
        let same_place = |field: &str| str_at(&merged, field) == str_at(current, field);
        if !same_place("/metadata/name") || !same_place("/metadata/namespace") {
            return Err(ApiError::bad_request(
                "a patch may not change metadata.name or metadata.namespace",
            ));
        }
        let write = updated(resource, current, merged, part)?;
        if let Write::Put(next) = &write {
            admit(Operation::Update, Some(current), Some(next))?;
        }
        Ok(write)
    })
}

/// `current` with `patch` applied as `patch_type` says (no update rules).
pub fn apply_patch(
    resource: Resource,
    current: &Value,
    patch_type: PatchType,
    patch: &Value,
) -> Result<Value, ApiError> {
    match patch_type {
        PatchType::Merge => {
            let mut merged = current.clone();
            merge_patch(&mut merged, patch);
            Ok(merged)
        }
        PatchType::Strategic => {
            strategic::apply(current, patch, strategic::schema_of(resource.plural()))
                .map_err(|e| ApiError::bad_request(e.to_string()))
        }
    }
}

/// What a write does, for admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST` to a collection (and a `PUT` that creates).
    Create,
    /// `PUT` or `PATCH` of an existing object.
    Update,
    /// `DELETE`.
    Delete,
}

/// An admission check of a write: the operation, the current object (`None` on create) and
/// the new one (`None` on delete).
pub type Admit<'a> = dyn Fn(Operation, Option<&Value>, Option<&Value>) -> Result<(), ApiError> + 'a;

/// Admits everything (writes made by the test itself).
pub fn admit_all(_: Operation, _: Option<&Value>, _: Option<&Value>) -> Result<(), ApiError> {
    Ok(())
}

/// The shared update rules: preconditions, then the new object with the server-owned parts
/// kept from `current`. Unchanged objects are kept as they are (no new resourceVersion).
fn updated(resource: Resource, current: &Value, new: Value, part: Part) -> Result<Write, ApiError> {
    let name = str_at(current, "/metadata/name");
    let sent_rv = str_at(&new, "/metadata/resourceVersion");
    if !sent_rv.is_empty() && sent_rv != str_at(current, "/metadata/resourceVersion") {
        return Err(ApiError::stale(resource, name));
    }
    let (sent_uid, uid) = (
        str_at(&new, "/metadata/uid"),
        str_at(current, "/metadata/uid"),
    );
    if !sent_uid.is_empty() && sent_uid != uid {
        return Err(ApiError::conflict(
            resource,
            name,
            &format!(
                "Precondition failed: UID in precondition: {sent_uid}, UID in object meta: {uid}"
            ),
        ));
    }
    let mut next = match part {
        Part::Status => with_status_of(current.clone(), &new),
        Part::Main => {
            let mut next = new;
            if resource.has_status() {
                next = with_status_of(next, current);
            }
            if resource == Resource::Pods {
                check_pod_spec_update(current, &next)?;
            }
            if resource == Resource::Secrets {
                fold_string_data(&mut next)?;
                if str_at(&next, "/type").is_empty() {
                    next["type"] = current["type"].clone();
                }
                if next["type"] != current["type"] {
                    return Err(ApiError::invalid(
                        resource,
                        name,
                        "type: Invalid value: field is immutable",
                    ));
                }
            }
            if matches!(resource, Resource::ConfigMaps | Resource::Secrets) {
                check_immutable_data(resource, current, &next)?;
            }
            if resource == Resource::CsiNodes {
                check_csi_node(&next, name)?;
            }
            if resource == Resource::CsiDrivers {
                default_csi_driver(&mut next);
            }
            let meta = metadata_mut(&mut next);
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
            ] {
                match current["metadata"].get(field) {
                    Some(value) => meta.insert(field.into(), value.clone()),
                    None => meta.remove(field),
                };
            }
            next
        }
    };
    next["kind"] = json!(resource.kind());
    next["apiVersion"] = json!(resource.api_version());
    metadata_mut(&mut next).insert(
        "resourceVersion".into(),
        current["metadata"]["resourceVersion"].clone(),
    );
    if next == *current {
        return Ok(Write::Keep);
    }
    // The last finalizer of an object whose deletion it held is gone: the deletion completes.
    let finalized = next
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let deleted = !str_at(&next, "/metadata/deletionTimestamp").is_empty()
        && next["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(0)
            == 0;
    if deleted && !finalized {
        return Ok(Write::Remove);
    }
    Ok(Write::Put(next))
}

/// A secret's write-only `stringData` merged into `data` (base64), as upstream's conversion
/// does; `stringData` wins on shared keys.
fn fold_string_data(secret: &mut Value) -> Result<(), ApiError> {
    let Some(map) = secret.as_object_mut() else {
        return Ok(());
    };
    let Some(string_data) = map.remove("stringData") else {
        return Ok(());
    };
    let Value::Object(string_data) = string_data else {
        return Err(ApiError::bad_request("stringData must be a map of strings"));
    };
    let data = map.entry("data").or_insert_with(|| json!({}));
    if data.is_null() {
        *data = json!({});
    }
    for (k, v) in string_data {
        let text = v
            .as_str()
            .ok_or_else(|| ApiError::bad_request(format!("stringData.{k} must be a string")))?;
        data[k.as_str()] = json!(base64(text.as_bytes()));
    }
    Ok(())
}

/// Config maps and secrets with `immutable: true` keep their data and stay immutable (422).
fn check_immutable_data(resource: Resource, current: &Value, next: &Value) -> Result<(), ApiError> {
    if current.get("immutable") != Some(&Value::Bool(true)) {
        return Ok(());
    }
    let name = str_at(current, "/metadata/name");
    let fields = ["data", "binaryData", "immutable"];
    match fields.into_iter().find(|f| current.get(*f) != next.get(*f)) {
        None => Ok(()),
        Some(field) => Err(ApiError::invalid(
            resource,
            name,
            &format!("{field}: Forbidden: field is immutable when `immutable` is set"),
        )),
    }
}

/// `object` with its `.status` replaced by that of `source` (removed if `source` has none).
fn with_status_of(mut object: Value, source: &Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        match source.get("status") {
            Some(status) => map.insert("status".into(), status.clone()),
            None => map.remove("status"),
        };
    }
    object
}

/// Upstream allows few pod spec changes after create: container images, active deadline,
/// tolerations, the grace period and removing scheduling gates. Anything else is 422.
fn check_pod_spec_update(current: &Value, next: &Value) -> Result<(), ApiError> {
    let mutable_masked = |pod: &Value| {
        let mut spec = pod.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(map) = spec.as_object_mut() {
            for field in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
                "schedulingGates",
            ] {
                map.remove(field);
            }
            for list in ["containers", "initContainers"] {
                for container in map
                    .get_mut(list)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(container) = container.as_object_mut() {
                        container.remove("image");
                    }
                }
            }
        }
        spec
    };
    if mutable_masked(current) == mutable_masked(next) {
        return Ok(());
    }
    Err(ApiError::invalid(
        Resource::Pods,
        str_at(current, "/metadata/name"),
        "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
    ))
}

/// `POST .../pods/{name}/binding`: sets `spec.nodeName` of an unscheduled pod.
pub fn bind(store: &Store, namespace: &str, name: &str, node: &str) -> Result<Value, ApiError> {
    if node.is_empty() {
        return Err(ApiError::bad_request("binding target name is required"));
    }
    let written = store.write(key(Resource::Pods, namespace, name), |current| {
        let current = current.ok_or_else(|| ApiError::not_found(Resource::Pods, name))?;
        let assigned = str_at(current, "/spec/nodeName");
        if !assigned.is_empty() {
            let why = format!("pod {name} is already assigned to node \"{assigned}\"");
            return Err(ApiError::conflict(Resource::Pods, name, &why));
        }
        if !str_at(current, "/metadata/deletionTimestamp").is_empty() {
            let why = format!("pod {name} is being deleted, cannot be assigned to a host");
            return Err(ApiError::conflict(Resource::Pods, name, &why));
        }
        let mut next = current.clone();
        next["spec"]["nodeName"] = json!(node);
        Ok(Write::Put(next))
    })?;
    Ok(written.object)
}

/// The body must be a JSON object of this resource's kind and apiVersion (when it says).
fn check_type(resource: Resource, body: &Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let kind = str_at(body, "/kind");
    let api_version = str_at(body, "/apiVersion");
    if (!kind.is_empty() && kind != resource.kind())
        || (!api_version.is_empty() && api_version != resource.api_version())
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) or kind ({kind}) does not match the expected {} {}",
            resource.api_version(),
            resource.kind()
        )));
    }
    Ok(())
}

fn check_namespace(resource: Resource, namespace: &str, body: &Value) -> Result<(), ApiError> {
    let sent = str_at(body, "/metadata/namespace");
    if resource.namespaced() && !sent.is_empty() && sent != namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// Names must be DNS-1123 subdomains (lowercase alphanumerics, `-` and `.`, at most 253),
/// except CSR names, which only have to be usable as a path segment (upstream's
/// `ValidateCertificateRequestName` accepts any name; `node-csr-<base64url>` has capitals).
fn check_name(resource: Resource, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::invalid(
            resource,
            name,
            "metadata.name: Required value: name or generateName is required",
        ));
    }
    if resource == Resource::CertificateSigningRequests {
        if name == "." || name == ".." || name.contains(['/', '%']) {
            return Err(ApiError::invalid(
                resource,
                name,
                &format!("metadata.name: Invalid value: {name:?}: may not be '.' or '..' and may not contain '/' or '%'"),
            ));
        }
        return Ok(());
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name.len() > 253
        || !name.chars().all(allowed)
        || !edge_ok(name.chars().next())
        || !edge_ok(name.chars().last())
    {
        return Err(ApiError::invalid(
            resource,
            name,
            &format!("metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
        ));
    }
    Ok(())
}

/// The CSIDriver registry's defaults (`SetDefaults_CSIDriverSpec`).
fn default_csi_driver(object: &mut Value) {
    if !object["spec"].is_object() {
        object["spec"] = json!({});
    }
    let spec = &mut object["spec"];
    for (field, value) in [
        ("attachRequired", json!(true)),
        ("podInfoOnMount", json!(false)),
        ("storageCapacity", json!(false)),
        ("requiresRepublish", json!(false)),
        ("fsGroupPolicy", json!("ReadWriteOnceWithFSType")),
        ("volumeLifecycleModes", json!(["Persistent"])),
    ] {
        if spec[field].is_null() {
            spec[field] = value;
        }
    }
}

/// CSINode validation: each driver has a name and a node ID, names are unique, topology
/// keys are unique and an allocatable count is not negative.
fn check_csi_node(object: &Value, name: &str) -> Result<(), ApiError> {
    let invalid = |why: String| Err(ApiError::invalid(Resource::CsiNodes, name, &why));
    let Some(drivers) = object["spec"]["drivers"].as_array() else {
        return invalid("spec.drivers: Required value".into());
    };
    let mut seen = std::collections::HashSet::new();
    for (i, driver) in drivers.iter().enumerate() {
        let driver_name = driver["name"].as_str().unwrap_or_default();
        if driver_name.is_empty() {
            return invalid(format!("spec.drivers[{i}].name: Required value"));
        }
        if !seen.insert(driver_name) {
            return invalid(format!(
                "spec.drivers[{i}].name: Duplicate value: \"{driver_name}\""
            ));
        }
        if driver["nodeID"].as_str().unwrap_or_default().is_empty() {
            return invalid(format!(
                "spec.drivers[{i}].nodeID: Required value: nodeID must be provided"
            ));
        }
        let keys: Vec<&str> = driver["topologyKeys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let unique: std::collections::HashSet<&str> = keys.iter().copied().collect();
        if unique.len() != keys.len() {
            return invalid(format!("spec.drivers[{i}].topologyKeys: Duplicate value"));
        }
        if driver["allocatable"]["count"]
            .as_i64()
            .is_some_and(|c| c < 0)
        {
            return invalid(format!(
                "spec.drivers[{i}].allocatable.count: Invalid value: must be greater than or equal to 0"
            ));
        }
    }
    Ok(())
}

/// PersistentVolumeClaim validation on create: access modes and a storage request.
fn check_claim(object: &Value, name: &str) -> Result<(), ApiError> {
    let spec = &object["spec"];
    if spec["accessModes"].as_array().is_none_or(Vec::is_empty) {
        return Err(ApiError::invalid(
            Resource::PersistentVolumeClaims,
            name,
            "spec.accessModes: Required value: at least 1 access mode is required",
        ));
    }
    if spec["resources"]["requests"]["storage"].is_null() {
        return Err(ApiError::invalid(
            Resource::PersistentVolumeClaims,
            name,
            "spec.resources[storage]: Required value",
        ));
    }
    Ok(())
}

/// The volume sources a PersistentVolume may name (one, exactly).
const PV_SOURCES: [&str; 19] = [
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "glusterfs",
    "hostPath",
    "iscsi",
    "local",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
];

/// PersistentVolume validation on create: capacity, access modes and exactly one source.
fn check_persistent_volume(object: &Value, name: &str) -> Result<(), ApiError> {
    let spec = &object["spec"];
    let invalid = |why: &str| Err(ApiError::invalid(Resource::PersistentVolumes, name, why));
    if spec["capacity"]["storage"].is_null() {
        return invalid("spec.capacity: Required value");
    }
    if spec["accessModes"].as_array().is_none_or(Vec::is_empty) {
        return invalid("spec.accessModes: Required value: must specify at least 1 access mode");
    }
    let sources = PV_SOURCES.iter().filter(|s| spec[**s].is_object()).count();
    match sources {
        0 => invalid("spec: Required value: must specify a volume type"),
        1 => Ok(()),
        _ => invalid("spec: Forbidden: may not specify more than 1 volume type"),
    }
}
