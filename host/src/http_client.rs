//! The gateway's outgoing HTTP client (upstream sessions, OTLP export, the CLI's
//! refresh request): keep-alive, HTTP/1.1 and HTTP/2, HTTPS
//! through rustls with the webpki roots. Each thread has its own connection pool,
//! because a pooled connection is driven by a task on the runtime that opened it: with
//! one pool per worker thread (`server::workers`), a request and the upstream
//! connection it uses are on the same thread. [`HttpClient`] is a handle to "this
//! thread's pool", so it can be cloned and stored anywhere.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;

type Pool = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

thread_local! {
    static POOL: Pool = build();
}

/// Sends requests through the calling thread's connection pool.
#[derive(Clone, Debug, Default)]
pub(crate) struct HttpClient {
    _private: (),
}

impl HttpClient {
    pub(crate) fn request(&self, req: Request<Full<Bytes>>) -> ResponseFuture {
        POOL.with(|pool| pool.request(req))
    }
}

/// A handle to the per-thread pools.
pub(crate) fn new_client() -> HttpClient {
    HttpClient::default()
}

fn build() -> Pool {
    // One crypto provider for the process; ignore "already installed".
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(https)
}
