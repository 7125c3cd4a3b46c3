//! The `[telemetry]` section of the config file and its validation. The standard
//! `OTEL_*` environment variables are read later, when the exporter starts
//! (`traces::start`), so that `config check` does not depend on the environment.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TelemetryRaw {
    /// Export traces. Default: on when an endpoint is set here or in
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    pub traces: Option<bool>,
    /// The collector: for `http`, the base URL (`/v1/traces` is appended unless the
    /// path already ends with it); for `grpc`, the URL as is.
    pub otlp_endpoint: Option<String>,
    /// "http" (OTLP/HTTP protobuf, the default) or "grpc".
    pub otlp_protocol: Option<String>,
    /// Extra headers (or gRPC metadata) sent with every export, e.g. an API key.
    #[serde(default)]
    pub otlp_headers: BTreeMap<String, String>,
    /// Per-export timeout (default 10 s).
    pub otlp_timeout_ms: Option<u64>,
    /// `service.name` of the resource (default: `OTEL_SERVICE_NAME`, else "portcullis").
    pub service_name: Option<String>,
}

/// How spans are sent to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// OTLP over HTTP, protobuf bodies (`http/protobuf`).
    Http,
    /// OTLP over gRPC.
    Grpc,
}

impl Protocol {
    /// Parses a config or `OTEL_EXPORTER_OTLP_PROTOCOL` value.
    pub(crate) fn parse(s: &str) -> Option<Protocol> {
        match s.trim().to_ascii_lowercase().as_str() {
            "http" | "http/protobuf" => Some(Protocol::Http),
            "grpc" => Some(Protocol::Grpc),
            _ => None,
        }
    }
}

/// The validated `[telemetry]` section (everything optional; env fills the gaps).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TelemetrySettings {
    pub traces: Option<bool>,
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Option<Protocol>,
    pub otlp_headers: BTreeMap<String, String>,
    pub otlp_timeout: Option<Duration>,
    pub service_name: Option<String>,
}

pub(super) fn validate(raw: Option<TelemetryRaw>) -> Result<TelemetrySettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(TelemetrySettings::default());
    };
    if let Some(e) = &raw.otlp_endpoint {
        check_url(e).map_err(|reason| ConfigError::new("telemetry.otlp_endpoint", reason))?;
    }
    let otlp_protocol = match &raw.otlp_protocol {
        None => None,
        Some(p) => Some(Protocol::parse(p).ok_or_else(|| {
            ConfigError::new(
                "telemetry.otlp_protocol",
                format!("{p:?}: must be \"http\" (OTLP/HTTP protobuf) or \"grpc\""),
            )
        })?),
    };
    for (k, v) in &raw.otlp_headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(ConfigError::new(
                format!("telemetry.otlp_headers.{k}"),
                "not a valid header name",
            ));
        }
        if http::HeaderValue::from_str(v).is_err() {
            return Err(ConfigError::new(
                format!("telemetry.otlp_headers.{k}"),
                "not a valid header value",
            ));
        }
    }
    if raw.otlp_timeout_ms == Some(0) {
        return Err(ConfigError::new(
            "telemetry.otlp_timeout_ms",
            "must be at least 1",
        ));
    }
    if raw
        .service_name
        .as_deref()
        .is_some_and(|s| s.trim().is_empty())
    {
        return Err(ConfigError::new(
            "telemetry.service_name",
            "must not be empty",
        ));
    }
    Ok(TelemetrySettings {
        traces: raw.traces,
        otlp_endpoint: raw.otlp_endpoint,
        otlp_protocol,
        otlp_headers: raw.otlp_headers,
        otlp_timeout: raw.otlp_timeout_ms.map(Duration::from_millis),
        service_name: raw.service_name,
    })
}

/// An exporter endpoint must be an absolute http(s) URL with a host.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http") | Some("https")) {
        return Err("must start with http:// or https://".into());
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TelemetrySettings, ConfigError> {
        validate(Some(toml::from_str(text).expect("toml")))
    }

    #[test]
    fn values_are_checked_and_named() {
        let s = parse(
            r#"
            otlp_endpoint = "http://127.0.0.1:4318"
            otlp_protocol = "grpc"
            otlp_headers = { "x-api-key" = "k" }
            service_name = "gw"
            "#,
        )
        .unwrap();
        assert_eq!(s.otlp_protocol, Some(Protocol::Grpc));
        assert_eq!(s.otlp_headers["x-api-key"], "k");
        assert_eq!(
            parse(r#"otlp_endpoint = "collector:4318""#)
                .unwrap_err()
                .key,
            "telemetry.otlp_endpoint"
        );
        assert_eq!(
            parse(r#"otlp_protocol = "http/json""#).unwrap_err().key,
            "telemetry.otlp_protocol"
        );
        assert_eq!(
            parse(r#"otlp_headers = { "bad header" = "v" }"#)
                .unwrap_err()
                .key,
            "telemetry.otlp_headers.bad header"
        );
        assert_eq!(
            parse(r#"otlp_timeout_ms = 0"#).unwrap_err().key,
            "telemetry.otlp_timeout_ms"
        );
        assert_eq!(validate(None).unwrap(), TelemetrySettings::default());
    }
}
