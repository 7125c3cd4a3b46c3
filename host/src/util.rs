//! Small helpers shared by CLI commands.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// Sends `method` with an empty body; the status and body text.
pub(crate) async fn http_call(method: &str, url: &str) -> anyhow::Result<(u16, String)> {
    let client = crate::http_client::new_client();
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::new()))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
