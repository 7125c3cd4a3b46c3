//! The 2024-11-05 HTTP+SSE transport as a pipe: one GET event stream per session,
//! whose first `endpoint` event names where messages are POSTed (same origin only);
//! every server message then arrives as a `message` event on that stream. A POST is
//! accepted with any 2xx (usually 202): its answer comes on the stream. The stream
//! ending ends the session (the channel session reconnects and re-initialises).

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::UpstreamError;
use super::channel::Inbound;
use super::session::{Credential, CredentialProvider};
use super::stream::parse_messages;
use crate::http_client::HttpClient;
use crate::mcp::sse::{Decoder, Event};

/// Where an SSE connector's event stream is.
pub(crate) struct SseTarget {
    pub client: HttpClient,
    pub uri: Uri,
    pub credential: CredentialProvider,
}

/// An open event stream and the endpoint it announced.
pub(crate) struct SseConnection {
    client: HttpClient,
    endpoint: Uri,
    credential: CredentialProvider,
    reader: AbortHandle,
}

impl SseTarget {
    /// Opens the event stream and waits for its `endpoint` event.
    pub(super) async fn connect(
        &self,
        limit: usize,
    ) -> Result<(SseConnection, mpsc::Receiver<Inbound>), UpstreamError> {
        let get = Request::builder()
            .method(Method::GET)
            .uri(self.uri.clone())
            .header(ACCEPT, "text/event-stream");
        let resp = send(&self.client, &self.credential, get, Bytes::new()).await?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Status(resp.status().as_u16()));
        }
        let mut events = Events {
            body: resp.into_body(),
            decoder: Decoder::new(),
            pending: Default::default(),
            limit,
        };
        let endpoint = loop {
            match events.next().await? {
                Some(e) if e.event.as_deref() == Some("endpoint") => {
                    break resolve(&self.uri, e.data.trim())?;
                }
                Some(_) => continue,
                None => {
                    return Err(UpstreamError::Protocol(
                        "the SSE stream ended before its endpoint event".into(),
                    ));
                }
            }
        };
        let (tx, rx) = mpsc::channel(64);
        let reader = tokio::spawn(read_events(events, tx)).abort_handle();
        let connection = SseConnection {
            client: self.client.clone(),
            endpoint,
            credential: self.credential.clone(),
            reader,
        };
        Ok((connection, rx))
    }
}

impl SseConnection {
    /// POSTs one message to the endpoint.
    pub(super) async fn send(&self, line: String) -> Result<(), UpstreamError> {
        let post = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json");
        let resp = send(&self.client, &self.credential, post, Bytes::from(line)).await?;
        let status = resp.status();
        // The body (usually "Accepted") is read so the connection can be reused.
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(UpstreamError::Status(status.as_u16()))
        }
    }

    /// Drops the event stream (the upstream sees the session end).
    pub(super) fn kill(&self) {
        self.reader.abort();
    }
}

impl Drop for SseConnection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Sends a request with the connector's credential and trace context.
async fn send(
    client: &HttpClient,
    credential: &CredentialProvider,
    mut b: http::request::Builder,
    body: Bytes,
) -> Result<hyper::Response<Incoming>, UpstreamError> {
    if let Some(Credential { header, value }) = credential.get().await? {
        b = b.header(header, value);
    }
    crate::telemetry::traces::inject_headers(b.headers_mut());
    let req = b.body(Full::new(body)).expect("valid request");
    client
        .request(req)
        .await
        .map_err(|e| UpstreamError::Transport(e.to_string()))
}

/// The endpoint an `endpoint` event names, resolved against the stream's URL; it
/// must be on the same origin (credentials are never sent elsewhere).
fn resolve(base: &Uri, endpoint: &str) -> Result<Uri, UpstreamError> {
    let bad = |why: &str| UpstreamError::Protocol(format!("SSE endpoint {endpoint:?}: {why}"));
    let origin = format!(
        "{}://{}",
        base.scheme_str().unwrap_or("http"),
        base.authority().map(|a| a.as_str()).unwrap_or("")
    );
    let full = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_string()
    } else if endpoint.starts_with('/') {
        format!("{origin}{endpoint}")
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{origin}{dir}/{endpoint}")
    };
    let uri: Uri = full.parse().map_err(|_| bad("not a URL"))?;
    let same = uri.scheme() == base.scheme() && uri.authority() == base.authority();
    if !same {
        return Err(bad("on another origin than the connector's target_url"));
    }
    Ok(uri)
}

struct Events {
    body: Incoming,
    decoder: Decoder,
    pending: std::collections::VecDeque<Event>,
    limit: usize,
}

impl Events {
    async fn next(&mut self) -> Result<Option<Event>, UpstreamError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(UpstreamError::Transport(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend(self.decoder.feed(&data));
                        if self.decoder.buffered() > self.limit {
                            return Err(UpstreamError::TooLarge(self.limit));
                        }
                    }
                }
            }
        }
    }
}

/// Hands each `message` event's messages to the session until the stream ends.
async fn read_events(mut events: Events, tx: mpsc::Sender<Inbound>) {
    let end = loop {
        let event = match events.next().await {
            Ok(Some(e)) => e,
            Ok(None) => break "the upstream's SSE stream ended".to_string(),
            Err(UpstreamError::TooLarge(limit)) => {
                // An event cannot be skipped without reading it: the stream ends.
                break format!(
                    "the upstream's SSE stream sent an event over max_result_bytes ({limit} bytes); the stream was closed"
                );
            }
            Err(e) => break format!("the upstream's SSE stream failed: {e}"),
        };
        if !matches!(event.event.as_deref(), None | Some("message")) || event.data.trim().is_empty()
        {
            continue;
        }
        let mut out = std::collections::VecDeque::new();
        let inbound: Vec<Inbound> = match parse_messages(&event.data, &mut out) {
            Ok(()) => out.into_iter().map(Inbound::Message).collect(),
            Err(_) => vec![Inbound::Garbage(event.data.len())],
        };
        for i in inbound {
            if tx.send(i).await.is_err() {
                return;
            }
        }
    };
    let _ = tx.send(Inbound::Closed(end)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_resolve_on_the_same_origin_only() {
        let base: Uri = "http://127.0.0.1:3001/sse".parse().unwrap();
        let r = |e: &str| resolve(&base, e).map(|u| u.to_string());
        assert_eq!(
            r("/message?sessionId=abc").unwrap(),
            "http://127.0.0.1:3001/message?sessionId=abc"
        );
        assert_eq!(
            r("messages/?s=1").unwrap(),
            "http://127.0.0.1:3001/messages/?s=1"
        );
        assert_eq!(
            r("http://127.0.0.1:3001/m").unwrap(),
            "http://127.0.0.1:3001/m"
        );
        assert!(r("http://evil.example/m").is_err());
        assert!(r("https://127.0.0.1:3001/m").is_err());
    }
}
