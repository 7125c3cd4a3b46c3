//! HTTP serving: the agent-facing MCP listener (`transport`, `listen`, `body`), the
//! worker threads that serve its connections (`workers`) and the operator's admin
//! listener (`admin`). HTTP/1.1 with keep-alive, and HTTP/2 for clients that open
//! the connection with its preface (h2c with prior knowledge; TLS is terminated in
//! front of the gateway); connections drain gracefully on shutdown.

pub(crate) mod admin;
mod batch;
mod body;
mod listen;
mod shed;
mod spin;
mod transport;
mod workers;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};

pub(crate) use body::Body;
pub(crate) use shed::{Connections, descriptor_limit};
pub(crate) use workers::Workers;

use crate::gateway::Gateway;

/// How long open connections may take to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(5);

/// Accepts connections until `shutdown` resolves, then drains them. With `workers`,
/// each connection is served on the next worker thread; without, on this runtime.
pub(crate) async fn serve<F, Fut>(
    listener: TcpListener,
    gw: Arc<Gateway>,
    handler: F,
    workers: Option<Arc<Workers>>,
    connections: Arc<Connections>,
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
            accepted = async {
                connections.room().await;
                listener.accept().await
            } => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let conn = Connection {
                    gw: gw.clone(),
                    handler: handler.clone(),
                    watcher: graceful.watcher(),
                    tracked: Arc::new(connections.accepted()),
                };
                match &workers {
                    None => {
                        tokio::spawn(conn.serve(stream));
                    }
                    Some(workers) => match stream.into_std() {
                        Ok(std) => {
                            workers.next().spawn(async move {
                                match TcpStream::from_std(std) {
                                    Ok(stream) => conn.serve(stream).await,
                                    Err(e) => tracing::warn!(error = %e, "cannot hand over a connection"),
                                }
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot hand over a connection"),
                    },
                }
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

/// What a connection's requests know of it (in their extensions): its place in the
/// descriptor budget (`shed`), and the per-agent connection permit it holds from its
/// first authenticated request until it closes (`transport::attribute_connection`).
#[derive(Clone)]
struct ConnectionSlot {
    tracked: Arc<shed::Tracked>,
    permit: Arc<std::sync::Mutex<Option<crate::gateway::limits::Permit>>>,
}

/// One accepted connection and what serving it needs.
struct Connection<F> {
    gw: Arc<Gateway>,
    handler: F,
    watcher: Watcher,
    tracked: Arc<shed::Tracked>,
}

impl<F, Fut> Connection<F>
where
    F: Fn(Arc<Gateway>, hyper::Request<hyper::body::Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = hyper::Response<Body>> + Send + 'static,
{
    /// Serves HTTP/1.1 with keep-alive, or HTTP/2 when the client's first bytes are
    /// its preface, until the peer closes or shutdown drains it. HTTP/2 streams are
    /// tasks of this worker's runtime, like the connection.
    async fn serve(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let Connection {
            gw,
            handler,
            watcher,
            tracked,
        } = self;
        let header_timeout = gw.config.server.header_read_timeout;
        // A client that connects and sends nothing is closed after the same time (hyper's
        // HTTP/1 timer only starts once its version has been told from the first bytes).
        let mut first = [0u8; 1];
        match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
        let slot = ConnectionSlot {
            tracked: tracked.clone(),
            permit: Arc::default(),
        };
        let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(slot.clone());
            let fut = handler(gw.clone(), req);
            async move { Ok::<_, std::convert::Infallible>(fut.await) }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // A connection that does not send a complete request head within the timeout
        // (slow headers, or idle after its previous response) is closed; a response
        // being streamed (the GET stream) is not affected.
        builder
            .http1()
            .keep_alive(true)
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        // HTTP/2 has no request head to time: a peer that stops answering pings within
        // the same time (gone, or never a real client) is closed instead.
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(header_timeout)
            .keep_alive_timeout(header_timeout);
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        tokio::select! {
            served = watcher.watch(conn) => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            // Over the descriptor budget and this is the heaviest agent's newest:
            // dropping the connection closes it.
            () = tracked.shed() => {}
        }
    }
}

/// The MCP handler, for `serve`.
pub(crate) async fn mcp(
    gw: Arc<Gateway>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Body> {
    transport::handle(gw, req).await
}
