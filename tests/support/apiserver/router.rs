//! Request dispatch on a connection thread: authentication (client certificate or bearer
//! token), request counting, injected stalls and failures, then the URL → resource → verb
//! mapping of kube-apiserver's REST paths and the JSON (or `Table`) answer.

use std::io;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::authz::{self, Ask};
use super::csr;
use super::deletion::{self, DeleteOptions};
use super::discovery;
use super::http::{write_response, Request, Response};
use super::kubelet;
use super::meta::str_at;
use super::noderestriction;
use super::registry::{self, Part, PatchType};
use super::resources::{Resource, GROUPS};
use super::selectors::Filter;
use super::server::{Conn, Shared};
use super::status::{delete_success, ApiError};
use super::table::table;
use super::token;
use super::watch::{self, WatchParams};

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Version,
    Health,
    Api,
    ApiV1,
    Apis,
    Group(&'static str),
    GroupVersion(&'static str),
    /// A collection: all namespaces when `namespace` is `None` (or cluster-scoped).
    Collection {
        resource: Resource,
        namespace: Option<String>,
    },
    /// One object or one of its subresources.
    Item {
        resource: Resource,
        namespace: String,
        name: String,
        sub: Sub,
    },
    /// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
    TokenReview,
    /// `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`.
    SubjectAccessReview,
    /// `pods/{name}/{log,exec,attach,portforward}`, forwarded to the node's kubelet.
    PodProxy {
        namespace: String,
        name: String,
        sub: String,
    },
    /// `namespaces/{ns}/serviceaccounts/{name}/token` (service accounts are not stored).
    Token {
        namespace: String,
        name: String,
    },
    Unknown,
}

/// The subresources served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    None,
    Status,
    Binding,
    Approval,
    EphemeralContainers,
}

fn parse_route(path: &str) -> Route {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => Route::TokenReview,
        ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"] => {
            Route::SubjectAccessReview
        }
        ["api", "v1", "namespaces", ns, "pods", name, sub @ ("log" | "exec" | "attach" | "portforward")] => {
            Route::PodProxy {
                namespace: ns.to_string(),
                name: name.to_string(),
                sub: sub.to_string(),
            }
        }
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["api"] => Route::Api,
        ["api", "v1"] => Route::ApiV1,
        ["apis"] => Route::Apis,
        ["api", "v1", rest @ ..] => resource_route("", rest),
        ["apis", group, tail @ ..] => match GROUPS.iter().find(|g| *g == group) {
            Some(group) => match tail {
                [] => Route::Group(group),
                ["v1"] => Route::GroupVersion(group),
                ["v1", rest @ ..] => resource_route(group, rest),
                _ => Route::Unknown,
            },
            None => Route::Unknown,
        },
        _ => Route::Unknown,
    }
}

fn resource_route(group: &str, rest: &[&str]) -> Route {
    if let ("", ["namespaces", namespace, "serviceaccounts", name, "token"]) = (group, rest) {
        return Route::Token {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
    }
    if let ["namespaces", namespace, plural, tail @ ..] = rest {
        if let Some(resource) = Resource::from_path(group, plural).filter(|r| r.namespaced()) {
            return item_or_collection(resource, Some(namespace), tail);
        }
    }
    let [plural, tail @ ..] = rest else {
        return Route::Unknown;
    };
    match Resource::from_path(group, plural) {
        Some(resource) if resource.namespaced() && tail.is_empty() => Route::Collection {
            resource,
            namespace: None,
        },
        Some(resource) if !resource.namespaced() => item_or_collection(resource, None, tail),
        _ => Route::Unknown,
    }
}

fn item_or_collection(resource: Resource, namespace: Option<&str>, tail: &[&str]) -> Route {
    let (name, sub) = match tail {
        [] => {
            return Route::Collection {
                resource,
                namespace: namespace.map(str::to_string),
            }
        }
        [name] => (name, Sub::None),
        [name, "status"] if resource.has_status() => (name, Sub::Status),
        [name, "binding"] if resource == Resource::Pods => (name, Sub::Binding),
        [name, "ephemeralcontainers"] if resource == Resource::Pods => {
            (name, Sub::EphemeralContainers)
        }
        [name, "approval"] if resource == Resource::CertificateSigningRequests => {
            (name, Sub::Approval)
        }
        _ => return Route::Unknown,
    };
    Route::Item {
        resource,
        namespace: namespace.unwrap_or("").to_string(),
        name: name.to_string(),
        sub,
    }
}

/// The (verb, resource) a request is counted under, as in kube-apiserver's audit log.
fn verb_and_resource(request: &Request, route: &Route) -> Option<(&'static str, String)> {
    let (resource, sub, collection) = match route {
        Route::Token { .. } => {
            let verb = if request.method == "POST" {
                "create"
            } else {
                "unknown"
            };
            return Some((verb, "serviceaccounts/token".to_string()));
        }
        Route::Collection { resource, .. } => (*resource, Sub::None, true),
        Route::Item { resource, sub, .. } => (*resource, *sub, false),
        _ => return None,
    };
    let verb = match (request.method.as_str(), collection) {
        ("GET", true) if request.query_flag("watch") => "watch",
        ("GET", true) => "list",
        ("GET", false) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "deletecollection",
        ("DELETE", false) => "delete",
        _ => "unknown",
    };
    let label = match sub {
        Sub::None => resource.plural().to_string(),
        Sub::Status => format!("{}/status", resource.plural()),
        Sub::Binding => format!("{}/binding", resource.plural()),
        Sub::Approval => format!("{}/approval", resource.plural()),
        Sub::EphemeralContainers => format!("{}/ephemeralcontainers", resource.plural()),
    };
    Some((verb, label))
}

/// What a handler produced.
enum Outcome {
    /// A response to write.
    Respond(Response),
    /// A watch stream, already written and ended cleanly.
    Streamed,
    /// A stream that broke off: the connection must close.
    Close,
}

/// Handles one request on `conn`. `Ok(false)` asks the caller to close the connection.
pub fn handle(
    shared: &Shared,
    request: &Request,
    user: Option<&str>,
    conn: &mut Conn,
) -> io::Result<bool> {
    let route = parse_route(&request.path);
    if let Some((verb, resource)) = verb_and_resource(request, &route) {
        shared.count_request(verb, &resource);
    }
    let token_ok = match (&shared.config.bearer_token, request.header("authorization")) {
        (Some(token), Some(header)) => header.strip_prefix("Bearer ") == Some(token.as_str()),
        _ => false,
    };
    let bootstrap_user = match user {
        None => csr::bootstrap_user(
            &shared.config.bootstrap_tokens,
            request.header("authorization"),
        ),
        Some(_) => None,
    };
    let user = user.or(bootstrap_user.as_deref());
    let public = matches!(route, Route::Health | Route::Version);
    log::debug!(
        "apiserver double: user={} {} {}",
        user.unwrap_or(if token_ok { "<token>" } else { "<anonymous>" }),
        request.method,
        request.path
    );
    let outcome = if user.is_none() && !token_ok && !public {
        Outcome::Respond(Response::error(&ApiError::unauthorized()))
    } else {
        stall(shared);
        match shared.faults.take_failure() {
            Some(code) => Outcome::Respond(Response::error(&ApiError::injected(code))),
            None => match dispatch(shared, request, route, user, conn) {
                Ok(outcome) => outcome,
                Err(error) => Outcome::Respond(Response::error(&error)),
            },
        }
    };
    match outcome {
        Outcome::Respond(response) => {
            write_response(conn, &response, request.keep_alive)?;
            Ok(true)
        }
        Outcome::Streamed => Ok(true),
        Outcome::Close => Ok(false),
    }
}

/// Waits out an injected stall, giving up early if the server goes down.
fn stall(shared: &Shared) {
    let deadline = Instant::now() + shared.faults.stall();
    while !shared.is_closing() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        thread::sleep(left.min(Duration::from_millis(20)));
    }
}

fn dispatch(
    shared: &Shared,
    request: &Request,
    route: Route,
    user: Option<&str>,
    conn: &mut Conn,
) -> Result<Outcome, ApiError> {
    authorize_read(shared, request, &route, user)?;
    authorize_rbac(request, &route, user)?;
    let get_only = |body: Value| match request.method.as_str() {
        "GET" => Ok(Outcome::Respond(Response::json(200, &body))),
        _ => Err(ApiError::method_not_allowed()),
    };
    match route {
        Route::Version => get_only(discovery::version()),
        Route::Health => Ok(Outcome::Respond(Response::text(200, "ok"))),
        Route::Api => get_only(discovery::api_versions(&shared.addr.to_string())),
        Route::ApiV1 => get_only(discovery::resource_list("")),
        Route::Apis => get_only(discovery::api_groups()),
        Route::Group(group) => get_only(discovery::group(group)),
        Route::GroupVersion(group) => get_only(discovery::resource_list(group)),
        Route::Unknown => Err(ApiError::no_route()),
        Route::TokenReview | Route::SubjectAccessReview => {
            if request.method != "POST" {
                return Err(ApiError::method_not_allowed());
            }
            let body = parse_body(request)?;
            let answer = if route == Route::TokenReview {
                shared.reviews.token_review(body)
            } else {
                shared.reviews.subject_access_review(body)
            };
            Ok(Outcome::Respond(Response::json(201, &answer)))
        }
        Route::PodProxy {
            namespace,
            name,
            sub,
        } => {
            kubelet::proxy(shared, request, &namespace, &name, &sub, conn)?;
            Ok(Outcome::Close)
        }
        // Dry runs would need a second, throw-away write path; refuse rather than write.
        _ if request.query("dryRun").is_some() => Err(ApiError::bad_request(
            "dryRun is not supported by the API server test double",
        )),
        Route::Token { namespace, name } => {
            if request.method != "POST" {
                return Err(ApiError::method_not_allowed());
            }
            let body = parse_body(request)?;
            let ask = Ask::Token {
                namespace: &namespace,
                service_account: &name,
                body: &body,
            };
            authz::authorize(&shared.store, user, &ask)?;
            let answer = token::create_token(&shared.store, &namespace, &name, body)?;
            shared.tokens_issued.fetch_add(1, Ordering::SeqCst);
            Ok(Outcome::Respond(Response::json(201, &answer)))
        }
        Route::Collection {
            resource,
            namespace,
        } => collection(shared, request, resource, namespace, conn, user),
        Route::Item {
            resource,
            namespace,
            name,
            sub,
        } => item(shared, request, resource, &namespace, &name, sub, user).map(Outcome::Respond),
    }
}

/// The verb of a request on a resource, as authorizers name it.
fn request_verb(request: &Request, named: bool) -> &'static str {
    match (request.method.as_str(), named) {
        ("GET", true) => "get",
        ("GET", false) if request.query_flag("watch") => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        _ => "delete",
    }
}

/// kubeadm's RBAC for bootstrap identities and for nodes on CSRs (see `csr.rs`).
fn authorize_rbac(request: &Request, route: &Route, user: Option<&str>) -> Result<(), ApiError> {
    let (resource, name, sub) = match route {
        Route::Item {
            resource,
            name,
            sub,
            ..
        } => {
            let sub = match sub {
                Sub::None => None,
                Sub::Status => Some("status"),
                Sub::Binding => Some("binding"),
                Sub::Approval => Some("approval"),
                Sub::EphemeralContainers => Some("ephemeralcontainers"),
            };
            (Some(*resource), name.as_str(), sub)
        }
        Route::Collection { resource, .. } => (Some(*resource), "", None),
        Route::Token { .. } => (None, "", None),
        Route::PodProxy { .. } => (None, "", None),
        Route::TokenReview | Route::SubjectAccessReview => (None, "", None),
        _ => return Ok(()),
    };
    let verb = request_verb(request, !name.is_empty());
    csr::authorize(user, resource, verb, sub, name)
}

/// The node authorizer's rule for ConfigMaps, Secrets, claims and volumes (see `authz.rs`).
fn authorize_read(
    shared: &Shared,
    request: &Request,
    route: &Route,
    user: Option<&str>,
) -> Result<(), ApiError> {
    let (resource, namespace, name) = match route {
        Route::Item {
            resource,
            namespace,
            name,
            ..
        } => (*resource, namespace.as_str(), Some(name.as_str())),
        Route::Collection {
            resource,
            namespace,
        } => (*resource, namespace.as_deref().unwrap_or(""), None),
        _ => return Ok(()),
    };
    if !matches!(
        resource,
        Resource::ConfigMaps
            | Resource::Secrets
            | Resource::PersistentVolumeClaims
            | Resource::PersistentVolumes
            | Resource::CsiNodes
            | Resource::VolumeAttachments
    ) {
        return Ok(());
    }
    let verb = request_verb(request, name.is_some());
    let ask = Ask::Read {
        resource,
        namespace,
        name,
        verb,
    };
    authz::authorize(&shared.store, user, &ask)
}

fn collection(
    shared: &Shared,
    request: &Request,
    resource: Resource,
    namespace: Option<String>,
    conn: &mut Conn,
    user: Option<&str>,
) -> Result<Outcome, ApiError> {
    match request.method.as_str() {
        "GET" => {}
        "POST" if resource.namespaced() && namespace.is_none() => {
            return Err(ApiError::method_not_allowed())
        }
        "POST" => {
            let mut body = parse_body(request)?;
            if resource == Resource::CertificateSigningRequests {
                body = csr::prepare_create(body, user)?;
            }
            let namespace = namespace.as_deref().unwrap_or("");
            let name = str_at(&body, "/metadata/name").to_string();
            let node = node_of(shared, user);
            let restriction = noderestriction::Request {
                user,
                resource,
                status: false,
                name: &name,
                namespace,
                node: node.as_ref(),
            };
            let admit = |op, old: Option<&Value>, new: Option<&Value>| {
                noderestriction::admit(&restriction, op, old, new)
            };
            let created = registry::create(&shared.store, resource, namespace, body, &admit)?;
            if resource == Resource::CertificateSigningRequests {
                csr::reconcile(shared, str_at(&created, "/metadata/name"));
            }
            return Ok(Outcome::Respond(Response::json(201, &created)));
        }
        _ => return Err(ApiError::method_not_allowed()),
    }
    let filter = Filter::parse(
        resource,
        namespace.as_deref(),
        request.query("fieldSelector"),
        request.query("labelSelector"),
    )?;
    if request.query_flag("watch") {
        let params = WatchParams::from_request(shared, request, resource, filter)?;
        // The 200 head is out once streaming starts: a failed stream can only close.
        return Ok(match watch::serve(shared, conn, params) {
            Ok(()) => Outcome::Streamed,
            Err(e) => {
                log::debug!("apiserver double: watch ended: {e}");
                Outcome::Close
            }
        });
    }
    // The current state, whatever `resourceVersion` the list names.
    let (items, rv) = shared.store.list(resource, namespace.as_deref());
    let items: Vec<Value> = items.into_iter().filter(|o| filter.matches(o)).collect();
    if let Some(table_version) = table_version(request)? {
        let body = table(
            resource,
            &items,
            rv,
            request.query("includeObject"),
            table_version,
        );
        return Ok(Outcome::Respond(table_response(&body, table_version)));
    }
    let items: Vec<Value> = items.into_iter().map(strip_type).collect();
    let list = json!({
        "kind": format!("{}List", resource.kind()),
        "apiVersion": resource.api_version(),
        "metadata": { "resourceVersion": rv.to_string() },
        "items": items,
    });
    Ok(Outcome::Respond(Response::json(200, &list)))
}

/// List items carry no `kind` / `apiVersion`, as in upstream's typed lists.
fn strip_type(mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
    object
}

/// The Node of a node user (`system:node:<name>`), as NodeRestriction reads it.
fn node_of(shared: &Shared, user: Option<&str>) -> Option<Value> {
    let node = user?.strip_prefix("system:node:")?;
    shared
        .store
        .get(&(Resource::Nodes, String::new(), node.to_string()))
}

fn item(
    shared: &Shared,
    request: &Request,
    resource: Resource,
    namespace: &str,
    name: &str,
    sub: Sub,
    user: Option<&str>,
) -> Result<Response, ApiError> {
    let store = &shared.store;
    let part = if sub == Sub::Status {
        Part::Status
    } else {
        Part::Main
    };
    let node = node_of(shared, user);
    let restriction = noderestriction::Request {
        user,
        resource,
        status: sub == Sub::Status,
        name,
        namespace,
        node: node.as_ref(),
    };
    let admit = |op, old: Option<&Value>, new: Option<&Value>| {
        noderestriction::admit(&restriction, op, old, new)
    };
    match (request.method.as_str(), sub) {
        ("GET", Sub::None | Sub::Status | Sub::EphemeralContainers) => {
            let key = (resource, namespace.to_string(), name.to_string());
            let object = store
                .get(&key)
                .ok_or_else(|| ApiError::not_found(resource, name))?;
            if let Some(table_version) = table_version(request)? {
                let rv = store.current_rv();
                let include = request.query("includeObject");
                let body = table(resource, &[object], rv, include, table_version);
                return Ok(table_response(&body, table_version));
            }
            Ok(Response::json(200, &object))
        }
        ("PUT", Sub::None | Sub::Status) => {
            let body = parse_body(request)?;
            let written = registry::update(store, resource, namespace, name, body, part, &admit)?;
            let created = written.change == Some(super::store::ChangeType::Added);
            Ok(Response::json(
                if created { 201 } else { 200 },
                &written.object,
            ))
        }
        ("PATCH", Sub::None | Sub::Status) => {
            let content_type = request.header("content-type").unwrap_or("");
            let patch_type = PatchType::from_content_type(content_type)?;
            let written = registry::patch(
                store,
                resource,
                namespace,
                name,
                patch_type,
                &request.body,
                part,
                &admit,
            )?;
            Ok(Response::json(200, &written.object))
        }
        ("DELETE", Sub::None) => {
            let grace = request.query("gracePeriodSeconds");
            let options = DeleteOptions::parse(&request.body, grace)?;
            let written = deletion::delete(store, resource, namespace, name, &options, &admit)?;
            if resource.returns_deleted_object() {
                return Ok(Response::json(200, &written.object));
            }
            let uid = str_at(&written.object, "/metadata/uid");
            Ok(Response::json(200, &delete_success(resource, name, uid)))
        }
        ("PUT" | "PATCH", Sub::EphemeralContainers) => {
            let change = if request.method == "PUT" {
                super::ephemeral::Change::Put(parse_body(request)?)
            } else {
                let content_type = request.header("content-type").unwrap_or("");
                let patch_type = PatchType::from_content_type(content_type)?;
                super::ephemeral::Change::Patch(patch_type, &request.body)
            };
            let written = super::ephemeral::update(store, namespace, name, change, &admit)?;
            Ok(Response::json(200, &written.object))
        }
        ("PUT", Sub::Approval) => {
            let body = parse_body(request)?;
            let approved = csr::approve(shared, name, &body)?;
            csr::reconcile(shared, name);
            Ok(Response::json(200, &approved))
        }
        ("GET", Sub::Approval) => {
            let key = (resource, namespace.to_string(), name.to_string());
            let object = store
                .get(&key)
                .ok_or_else(|| ApiError::not_found(resource, name))?;
            Ok(Response::json(200, &object))
        }
        ("POST", Sub::Binding) => {
            let body = parse_body(request)?;
            registry::bind(store, namespace, name, str_at(&body, "/target/name"))?;
            let status = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Success", "code": 201,
            });
            Ok(Response::json(201, &status))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn parse_body(request: &Request) -> Result<Value, ApiError> {
    serde_json::from_slice(&request.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
}

/// The `Table` version the client asks for first in `Accept`, if any; `None` for plain
/// JSON. Accept headers without any JSON option get 406.
fn table_version(request: &Request) -> Result<Option<&'static str>, ApiError> {
    let accept = request.header("accept").unwrap_or("");
    if accept.trim().is_empty() {
        return Ok(None);
    }
    for media_range in accept.split(',') {
        let mut parts = media_range.split(';').map(str::trim);
        let media_type = parts.next().unwrap_or("");
        let params: Vec<&str> = parts.collect();
        if media_type == "*/*" {
            return Ok(None);
        }
        if media_type != "application/json" {
            continue;
        }
        let has = |param: &str| params.contains(&param);
        if !params.iter().any(|p| p.starts_with("as=")) {
            return Ok(None);
        }
        if has("as=Table") && has("g=meta.k8s.io") {
            if has("v=v1") {
                return Ok(Some("meta.k8s.io/v1"));
            }
            if has("v=v1beta1") {
                return Ok(Some("meta.k8s.io/v1beta1"));
            }
        }
    }
    Err(ApiError {
        code: 406,
        reason: "NotAcceptable",
        message: format!(
            "only the following media types are accepted: application/json (asked for {accept})"
        ),
        details: None,
    })
}

fn table_response(body: &Value, version: &str) -> Response {
    let v = version.rsplit('/').next().unwrap_or("v1");
    Response::json_as(
        200,
        body,
        &format!("application/json;as=Table;v={v};g=meta.k8s.io"),
    )
}
