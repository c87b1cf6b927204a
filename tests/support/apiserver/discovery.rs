//! Discovery documents in their plain (non-aggregated) forms: `/version`, `/api`, `/api/v1`,
//! `/apis`, `/apis/<group>[/v1]` for coordination.k8s.io and node.k8s.io. kubectl asks for the aggregated
//! `apidiscovery.k8s.io/v2` form first but lists `application/json` as a fallback, and falls
//! back to these documents when the answer is plain JSON.

use serde_json::{json, Value};

use super::resources::{Resource, GROUPS};

/// The version the double claims to be.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z",
        "goVersion": "go1.23.3",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`: the core group's versions.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            { "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }
        ],
    })
}

fn group_version(group: &str) -> Value {
    json!({ "groupVersion": format!("{group}/v1"), "version": "v1" })
}

/// `/apis/<group>` of a served group (`coordination.k8s.io`, `node.k8s.io`).
pub fn group(name: &str) -> Value {
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": [group_version(name)],
        "preferredVersion": group_version(name),
    })
}

/// `/apis`: the named groups.
pub fn api_groups() -> Value {
    let groups: Vec<Value> = GROUPS
        .iter()
        .map(|name| {
            let mut g = group(name);
            if let Some(map) = g.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            g
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

const ITEM_VERBS: [&str; 7] = [
    "create", "delete", "get", "list", "patch", "update", "watch",
];

fn api_resource(resource: Resource) -> Value {
    let mut entry = json!({
        "name": resource.plural(),
        "singularName": resource.singular(),
        "namespaced": resource.namespaced(),
        "kind": resource.kind(),
        "verbs": ITEM_VERBS,
    });
    if !resource.short_names().is_empty() {
        entry["shortNames"] = json!(resource.short_names());
    }
    if resource == Resource::Pods {
        entry["categories"] = json!(["all"]);
    }
    entry
}

fn subresource(resource: Resource, sub: &str, kind: &str, verbs: &[&str]) -> Value {
    json!({
        "name": format!("{}/{sub}", resource.plural()),
        "singularName": "",
        "namespaced": resource.namespaced(),
        "kind": kind,
        "verbs": verbs,
    })
}

/// `/api/v1` or `/apis/coordination.k8s.io/v1`: the resources of one group version.
pub fn resource_list(group: &str) -> Value {
    let mut resources = Vec::new();
    for resource in Resource::ALL.into_iter().filter(|r| r.group() == group) {
        resources.push(api_resource(resource));
        if resource == Resource::Pods {
            resources.push(subresource(resource, "binding", "Binding", &["create"]));
        }
        if resource.has_status() {
            let verbs = ["get", "patch", "update"];
            resources.push(subresource(resource, "status", resource.kind(), &verbs));
        }
    }
    if group.is_empty() {
        // Service accounts are not served, only their token subresource.
        resources.push(json!({
            "name": "serviceaccounts/token",
            "singularName": "",
            "namespaced": true,
            "group": "authentication.k8s.io",
            "version": "v1",
            "kind": "TokenRequest",
            "verbs": ["create"],
        }));
    }
    let group_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}
