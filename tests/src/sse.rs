//! Reading answers as they arrive: a POST whose SSE answer is read message by
//! message ([`post_streaming`], [`SseReader`]), and the status of a request whose
//! body may never end ([`request_status`]).

use std::time::Duration;

/// POSTs `body` with the session's usual headers and returns the response unread,
/// for reading an SSE answer as it arrives.
pub async fn post_streaming(
    mcp: &crate::Mcp,
    body: &str,
) -> hyper::Response<hyper::body::Incoming> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, http_body_util::Full<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::post(&mcp.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(k) = &mcp.key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if let Some(s) = &mcp.session {
        req = req
            .header("mcp-session-id", s.as_str())
            .header("mcp-protocol-version", mcp.version.as_str());
    }
    client
        .request(
            req.body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap(),
        )
        .await
        .expect("HTTP request")
}

/// Reads the JSON messages of an SSE body one at a time, as they arrive.
pub struct SseReader {
    body: hyper::body::Incoming,
    buf: String,
}

impl SseReader {
    pub fn new(body: hyper::body::Incoming) -> SseReader {
        SseReader {
            body,
            buf: String::new(),
        }
    }

    /// The next message with a JSON `data:` payload; `None` at the end of the stream
    /// or when `timeout` passes first.
    pub async fn next(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        use http_body_util::BodyExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let normalized = self.buf.replace("\r\n", "\n");
            if let Some(pos) = normalized.find("\n\n") {
                let event = normalized[..pos].to_string();
                self.buf = normalized[pos + 2..].to_string();
                let data = crate::client::sse_data(&format!("{event}\n\n"));
                if let Some(v) = data
                    .iter()
                    .find_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
                {
                    return Some(v);
                }
                continue;
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??
                .ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }
}

impl SseReader {
    /// Reads until the stream ends; false if it is still open after `timeout`.
    pub async fn wait_end(&mut self, timeout: Duration) -> bool {
        use http_body_util::BodyExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.push_str(&String::from_utf8_lossy(&data));
                    }
                }
            }
        }
    }
}

/// Sends a bodiless request and returns only the status (the body, which may be an
/// endless SSE stream, is not read).
pub async fn request_status(url: &str, method: &str, headers: &[(String, String)]) -> u16 {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, http_body_util::Full<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(
            req.body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        ),
    )
    .await
    .expect("response head within 30 s")
    .expect("HTTP request");
    resp.status().as_u16()
}
