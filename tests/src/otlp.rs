//! A tiny OpenTelemetry collector for tests: accepts OTLP trace exports over HTTP
//! (`POST /v1/traces`, protobuf) and gRPC (`TraceService/Export`, h2c) on a free
//! loopback port, decodes them with `opentelemetry-proto`, and keeps the spans and
//! the request headers. It runs on its own thread and runtime, so tests that block
//! (process waits) never stall it. Stopped when dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use prost::Message;

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP `SpanKind`: 1 internal, 2 server, 3 client.
    pub kind: i32,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    /// Attribute values rendered as text (ints and bools too).
    pub attributes: HashMap<String, String>,
    /// The resource's `service.name`.
    pub service_name: String,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// How an export arrived.
#[derive(Debug, Clone)]
pub struct Export {
    /// "http" or "grpc".
    pub transport: &'static str,
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
struct Store {
    spans: Vec<Span>,
    exports: Vec<Export>,
}

pub struct Receiver {
    pub port: u16,
    store: Arc<Mutex<Store>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind OTLP receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let store = Arc::new(Mutex::new(Store::default()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = store.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            rt.block_on(serve(listener, shared, stop_rx));
        });
        Receiver {
            port,
            store,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Base URL for `otlp_endpoint` (http: `/v1/traces` is appended by the gateway).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.store.lock().unwrap().spans.clone()
    }

    pub fn exports(&self) -> Vec<Export> {
        self.store.lock().unwrap().exports.clone()
    }

    /// Waits until the spans received satisfy `pred`; returns them.
    pub fn wait(&self, timeout: Duration, pred: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "the OTLP receiver did not get the expected spans in {timeout:?}; got:\n{spans:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    store: Arc<Mutex<Store>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let store = store.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(store.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            _ = &mut stop => return,
        }
    }
}

type RespBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn handle(
    store: Arc<Mutex<Store>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<RespBody>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let grpc = path == "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    if path != "/v1/traces" && !grpc {
        return Ok(status(404, Bytes::new()));
    }
    let payload = if grpc {
        // Length-prefixed message: 1 byte compressed flag, 4 bytes length.
        let mut b = body.clone();
        if b.len() < 5 || b[0] != 0 {
            return Ok(status(400, Bytes::new()));
        }
        b.advance(1);
        let len = b.get_u32() as usize;
        b.slice(..len.min(b.len()))
    } else {
        body
    };
    let Ok(request) = ExportTraceServiceRequest::decode(payload) else {
        return Ok(status(400, Bytes::new()));
    };
    {
        let mut s = store.lock().unwrap();
        s.spans.extend(flatten(request));
        s.exports.push(Export {
            transport: if grpc { "grpc" } else { "http" },
            headers,
        });
    }
    let reply = ExportTraceServiceResponse::default().encode_to_vec();
    if !grpc {
        let mut resp = status(200, Bytes::from(reply));
        resp.headers_mut()
            .insert("content-type", "application/x-protobuf".parse().unwrap());
        return Ok(resp);
    }
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(reply.len() as u32).to_be_bytes());
    framed.extend_from_slice(&reply);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    let frames = vec![
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(framed))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let mut resp = hyper::Response::new(BodyExt::boxed(body));
    resp.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    Ok(resp)
}

fn status(code: u16, body: Bytes) -> hyper::Response<RespBody> {
    let mut resp = hyper::Response::new(BodyExt::boxed(Full::new(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
    resp
}

fn flatten(req: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let service_name = rs
            .resource
            .as_ref()
            .and_then(|r| attrs(&r.attributes).remove("service.name"))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(Span {
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: hex::encode(&s.parent_span_id),
                    name: s.name,
                    kind: s.kind,
                    status: s.status.map(|st| st.code).unwrap_or(0),
                    attributes: attrs(&s.attributes),
                    service_name: service_name.clone(),
                });
            }
        }
    }
    out
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
