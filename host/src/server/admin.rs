//! The operator's admin listener (loopback by default): health, readiness, metrics
//! and catalog refresh. It carries no agent traffic and never shows a secret.
//!
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 when the gateway can do its job: the policy chain is loaded,
//!   the quota backend answers, the KMS answers (when connectors use the vault), the
//!   state store (tool pins) answers, and at least one connector's upstream accepts a
//!   connection; else 503. Both answer a JSON body naming every check.
//! - `GET /metrics`: Prometheus metrics (OpenMetrics text; see `telemetry::metrics`).
//! - `POST /admin/connectors/refresh[?id=<connector>]`: drop cached tool lists.
//! - `GET /admin/connectors/pending[?id=<connector>]`: tools held by pinning, and
//!   pins of tools gone upstream, with diffs (JSON).
//! - `POST /admin/connectors/approve?id=<connector>[&tool=<name>...]` and
//!   `.../reject?...`: decide held tools (all of the connector's without `tool`).
//! - `POST /admin/reload`: reload the config file now (`gateway::reload`); 200 with
//!   what changed, or 422 with why the last good config stays.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::body::{Body, full};
use crate::gateway::Gateway;
use crate::telemetry::metrics;

/// How long one readiness probe (quota backend, upstream connect) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) async fn handle(gw: Arc<Gateway>, req: Request<Incoming>) -> Response<Body> {
    // The agent listener's DNS-rebinding rules: a page elsewhere can neither read
    // `/metrics` through a rebound name nor POST a refresh cross-site.
    if let Some(admin) = &gw.config.admin
        && let Err(msg) = super::transport::check_host_origin(
            &admin.allowed_hosts,
            &admin.allowed_origins,
            req.headers(),
        )
    {
        return text(StatusCode::FORBIDDEN, format!("{msg}\n"));
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/readyz") => {
            let (ready, body) = readiness(&gw).await;
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            with_type(status, body.to_string(), "application/json")
        }
        (&Method::GET, "/metrics") => {
            let live = metrics::Live {
                active_sessions: gw.sessions.len() as u64,
                audit_queue_depth: gw.audit.queue_depth() as u64,
                audit_dropped_rows: gw.audit.dropped(),
                policy_cached_decisions: crate::policy::cached_decisions(),
            };
            with_type(StatusCode::OK, metrics::render(live), metrics::CONTENT_TYPE)
        }
        (&Method::GET, "/admin/connectors/pending") => {
            let query = Query::parse(req.uri().query());
            json_outcome(gw.pending(query.first("id")).await)
        }
        (&Method::POST, path @ ("/admin/connectors/approve" | "/admin/connectors/reject")) => {
            let query = Query::parse(req.uri().query());
            let Some(id) = query.first("id") else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "id=<connector> is required\n".into(),
                );
            };
            let approve = path.ends_with("approve");
            json_outcome(gw.decide_pins(id, &query.all("tool"), approve).await)
        }
        (&Method::POST, "/admin/reload") => {
            let live = gw.clone();
            match tokio::task::spawn_blocking(move || live.reload_config()).await {
                Ok(Ok(done)) => with_type(
                    StatusCode::OK,
                    done.to_json().to_string(),
                    "application/json",
                ),
                Ok(Err(error)) => with_type(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"result": "failed", "error": error}).to_string(),
                    "application/json",
                ),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("reload panicked: {e}\n"),
                ),
            }
        }
        (&Method::POST, "/admin/connectors/refresh") => {
            let only = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("id="))
                .map(str::to_string);
            match only {
                Some(id) if gw.connector(&id).is_none() => {
                    text(StatusCode::NOT_FOUND, format!("unknown connector {id}\n"))
                }
                Some(id) => {
                    gw.catalog.invalidate(&id);
                    text(StatusCode::OK, json!({"refreshed": [id]}).to_string())
                }
                None => {
                    gw.catalog.invalidate_all();
                    let ids: Vec<_> = gw.all_connectors().iter().map(|c| c.id.clone()).collect();
                    text(StatusCode::OK, json!({"refreshed": ids}).to_string())
                }
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// The answer to an operator request: 200 with its JSON, or 422 with the error.
fn json_outcome(outcome: anyhow::Result<Value>) -> Response<Body> {
    match outcome {
        Ok(v) => with_type(StatusCode::OK, v.to_string(), "application/json"),
        Err(e) => with_type(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": format!("{e:#}")}).to_string(),
            "application/json",
        ),
    }
}

/// A query string's `key=value` pairs, percent-decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        let pairs = query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        Query(pairs)
    }

    fn first(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// Percent-decoding (`+` is a space); an invalid escape is kept as written. Written
/// here: the admin listener's three query keys need nothing more.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs every readiness check (concurrently); whether all passed, and the report.
async fn readiness(gw: &Gateway) -> (bool, Value) {
    let chain = gw.policy.current();
    let mut policies = json!({
        "ready": true,
        "chain": chain.names,
        "digest": chain.digest,
    });
    // A failed reload keeps the last good config: still ready, but said.
    if let Some(failure) = gw.last_reload_failure() {
        policies["last_reload_failure"] = failure;
    }
    let quota = async {
        let ok = tokio::time::timeout(PROBE_TIMEOUT, gw.quota.ready())
            .await
            .unwrap_or(false);
        let backend = if gw.config.quota.redis_url.is_some() {
            "redis"
        } else {
            "memory"
        };
        let mut v = json!({"ready": ok, "backend": backend});
        if !ok {
            v["error"] = json!("the quota backend does not answer");
        }
        v
    };
    let upstreams = async {
        let connectors = gw.all_connectors();
        // A stdio connector is not started to be probed: its program must be found.
        let probes = connectors.iter().map(|c| async move {
            let result = match &c.transport {
                crate::config::Transport::Stdio(spec) => crate::upstream::findable(spec),
                _ => probe(&c.target_url).await,
            };
            (c.id.clone(), result)
        });
        let results = join_all(probes).await;
        let reachable: Vec<&str> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(id, _)| id.as_str())
            .collect();
        let unreachable: serde_json::Map<String, Value> = results
            .iter()
            .filter_map(|(id, r)| r.as_ref().err().map(|e| (id.clone(), json!(e))))
            .collect();
        let mut v = json!({
            "ready": !reachable.is_empty(),
            "reachable": reachable,
            "unreachable": unreachable,
        });
        if results.is_empty() {
            v["error"] = json!("no connector is configured");
        } else if reachable.is_empty() {
            v["error"] = json!("no connector's upstream accepts connections");
        }
        v
    };
    let kms = async {
        let Some(vault) = gw.vault() else {
            return json!({"ready": true, "used": false});
        };
        let provider = vault.kms_provider();
        match tokio::time::timeout(PROBE_TIMEOUT, vault.kms_ready()).await {
            Ok(Ok(())) => json!({"ready": true, "provider": provider}),
            Ok(Err(e)) => json!({"ready": false, "provider": provider, "error": e.to_string()}),
            Err(_) => {
                json!({"ready": false, "provider": provider, "error": "the KMS did not answer in time"})
            }
        }
    };
    let state = async {
        match tokio::time::timeout(PROBE_TIMEOUT, gw.pinning.ready()).await {
            Ok(Ok(())) => json!({"ready": true}),
            Ok(Err(e)) => json!({"ready": false, "error": e}),
            Err(_) => json!({"ready": false, "error": "the state store did not answer in time"}),
        }
    };
    let (quota, upstreams, kms, state) = tokio::join!(quota, upstreams, kms, state);
    let checks = json!({
        "policies": policies,
        "quota": quota,
        "kms": kms,
        "state": state,
        "upstreams": upstreams,
    });
    let not_ready: Vec<&str> = checks
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, c)| c["ready"] != Value::Bool(true))
        .map(|(name, _)| name.as_str())
        .collect();
    let ready = not_ready.is_empty();
    (
        ready,
        json!({"ready": ready, "not_ready": not_ready, "checks": checks}),
    )
}

/// Whether an upstream URL's host accepts a TCP connection (no request is sent, so
/// no credential is involved and the upstream sees no MCP traffic).
async fn probe(target_url: &str) -> Result<(), String> {
    let uri: http::Uri = target_url.parse().map_err(|_| "invalid URL".to_string())?;
    let host = uri.host().ok_or("no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("connect failed: {e}")),
        Err(_) => Err("connect timed out".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

fn with_type(status: StatusCode, body: String, content_type: &'static str) -> Response<Body> {
    let mut resp = text(status, body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    resp
}
