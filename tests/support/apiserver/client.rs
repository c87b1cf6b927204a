//! A small blocking HTTPS client for tests that talk to the double directly: JSON calls that
//! return (status code, body) and a line reader for watch streams, plus the JSON those tests
//! share (a pod, the names in a list, an object's resourceVersion). Runs on the test thread;
//! every request has a 10 s timeout so a misbehaving test cannot hang.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

use super::ApiServer;

/// The pods of namespace `default`.
pub const PODS: &str = "/api/v1/namespaces/default/pods";

/// A one-container pod labelled `app: web`, on `node` if given.
pub fn pod(name: &str, node: Option<&str>) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": "web" } },
        "spec": { "containers": [{ "name": "c", "image": "busybox:1.36" }] },
    });
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    pod
}

/// An object's `metadata.resourceVersion` as a number.
pub fn rv_of(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .expect("a numeric metadata.resourceVersion")
}

/// The names of a list's items, in order.
pub fn names(list: &Value) -> Vec<&str> {
    let items = list["items"].as_array().expect("a list with items");
    items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().expect("a named item"))
        .collect()
}

/// A reqwest client bound to one double.
pub struct Api {
    /// The underlying client, for requests the helpers do not cover.
    pub http: Client,
    /// `https://127.0.0.1:<port>`.
    pub base: String,
}

impl Api {
    /// A client presenting the double's default client certificate.
    pub fn new(server: &ApiServer) -> Api {
        Api::with_tls(server, server.tls_client_config())
    }

    /// A client with its own TLS settings (e.g. no client certificate).
    pub fn with_tls(server: &ApiServer, tls: rustls::ClientConfig) -> Api {
        let http = Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("build the test HTTP client");
        Api {
            http,
            base: server.url(),
        }
    }

    /// Sends `body` (if any) with `content_type`.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<Value>,
    ) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("Content-Type", content_type)
                .body(body.to_string());
        }
        request.send().expect("the double answers")
    }

    /// A JSON call (PATCH bodies are merge patches): the status code and the JSON answer.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let content_type = match method {
            "PATCH" => "application/merge-patch+json",
            _ => "application/json",
        };
        let response = self.send(method, path, content_type, body);
        let code = response.status().as_u16();
        let bytes = response.bytes().expect("read the response body");
        (code, serde_json::from_slice(&bytes).expect("a JSON answer"))
    }

    /// `GET`.
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None)
    }

    /// Opens a watch (`path_and_query` includes `watch=1`); panics unless the answer is 200.
    pub fn watch(&self, path_and_query: &str) -> Watch {
        let response = self.send("GET", path_and_query, "", None);
        assert_eq!(response.status().as_u16(), 200, "watch {path_and_query}");
        Watch(BufReader::new(response))
    }
}

/// The events of one watch, read line by line.
pub struct Watch(BufReader<Response>);

impl Watch {
    /// The next event, `None` when the stream ended (or the 10 s timeout passed).
    pub fn next_event(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.0.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("a JSON watch event")),
        }
    }

    /// Every event until the stream ends, as (type, object name or resourceVersion).
    pub fn drain(mut self) -> Vec<(String, String)> {
        let mut events = Vec::new();
        while let Some(event) = self.next_event() {
            let kind = event["type"].as_str().unwrap_or("").to_string();
            let meta = &event["object"]["metadata"];
            let detail = meta["name"].as_str().or(meta["resourceVersion"].as_str());
            events.push((kind, detail.unwrap_or("").to_string()));
        }
        events
    }
}
