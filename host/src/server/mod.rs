//! HTTP serving: the agent-facing MCP listener (`transport`, `listen`, `body`) and
//! the operator's admin listener (`admin`). HTTP/1.1 with keep-alive; connections
//! drain gracefully on shutdown.

pub mod admin;
mod body;
mod listen;
mod transport;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub use body::Body;

use crate::gateway::Gateway;

/// How long open connections may take to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(5);

/// Accepts connections until `shutdown` resolves, then drains them.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    gw: Arc<Gateway>,
    handler: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(Arc<Gateway>, hyper::Request<hyper::body::Incoming>) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = hyper::Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let gw = gw.clone();
                let handler = handler.clone();
                let svc = service_fn(move |req| {
                    let fut = handler(gw.clone(), req);
                    async move { Ok::<_, std::convert::Infallible>(fut.await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within the drain period");
    }
}

/// The MCP handler, for `serve`.
pub async fn mcp(
    gw: Arc<Gateway>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Body> {
    transport::handle(gw, req).await
}
