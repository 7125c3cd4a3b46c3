//! The operator's admin listener (loopback by default): health and catalog refresh.
//! It carries no agent traffic and never shows a secret.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::body::{Body, full};
use crate::gateway::Gateway;

pub async fn handle(gw: Arc<Gateway>, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".into()),
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
                    let ids: Vec<_> = gw.config.connectors.iter().map(|c| c.id.clone()).collect();
                    text(StatusCode::OK, json!({"refreshed": ids}).to_string())
                }
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}
