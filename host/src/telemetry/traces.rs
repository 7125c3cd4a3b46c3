//! OpenTelemetry traces: the `tracing` layer, the OTLP exporter (HTTP/protobuf over
//! the gateway's own hyper client, or gRPC over tonic) and W3C trace-context
//! propagation.
//!
//! The layer is installed with the log subscriber at process start (`logging::init`),
//! before the config is read; it exports nothing until [`start`] plugs a batch span
//! processor into it (a late-bound processor) and turns it on. While it is off, the
//! spans of this crate (target [`TARGET`]) are disabled at their callsites, so tracing
//! costs nothing. Spans never go to the log output: the log lines stay as they were.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanProcessor};
use tracing::Span;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

use crate::config::{Protocol, TelemetrySettings, check_url};
use crate::mcp::params::{Members, to_raw};

/// The `tracing` target of every span meant for OpenTelemetry.
pub(crate) const TARGET: &str = "portcullis::trace";

/// Default per-export timeout.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest collector response read.
const MAX_RESPONSE: usize = 4 * 1024 * 1024;

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROCESSOR: OnceLock<BatchSpanProcessor> = OnceLock::new();
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans are being exported.
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The OpenTelemetry layer for the log subscriber: this crate's spans (target
/// [`TARGET`]) and its warnings and errors (as span events), once [`start`]ed.
pub(crate) fn layer<S>() -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Late)
        .build();
    let tracer = provider.tracer("portcullis");
    let _ = PROVIDER.set(provider);
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_filter(
            filter_fn(|meta| {
                enabled()
                    && if meta.is_span() {
                        meta.target() == TARGET
                    } else {
                        meta.target().starts_with("portcullis")
                            && *meta.level() <= tracing::Level::WARN
                    }
            })
            .with_max_level_hint(LevelFilter::INFO),
        )
}

/// Spans of [`TARGET`] are for OpenTelemetry only, never for the log output.
pub(crate) fn is_trace_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.target() == TARGET
}

/// Forwards to the batch processor once there is one.
#[derive(Debug)]
struct Late;

impl SpanProcessor for Late {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        if let Some(p) = PROCESSOR.get() {
            p.on_start(span, cx);
        }
    }

    fn on_end(&self, span: SpanData) {
        if let Some(p) = PROCESSOR.get() {
            p.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        PROCESSOR.get().map_or(Ok(()), SpanProcessor::force_flush)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        PROCESSOR
            .get()
            .map_or(Ok(()), |p| p.shutdown_with_timeout(timeout))
    }
}

/// Where spans go, resolved from the config and the standard environment variables.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Exporter {
    pub protocol: Protocol,
    pub endpoint: String,
    pub headers: HashMap<String, String>,
    pub timeout: Option<Duration>,
    pub service_name: String,
}

impl Exporter {
    /// `None` when traces are off. Config values win over `OTEL_*` variables.
    pub(crate) fn resolve(
        s: &TelemetrySettings,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<Exporter>> {
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let protocol = match s.otlp_protocol {
            Some(p) => p,
            None => {
                let var = [
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                ]
                .into_iter()
                .find_map(|k| env(k).map(|v| (k, v)));
                match var {
                    None => Protocol::Http,
                    Some((k, v)) => Protocol::parse(&v).ok_or_else(|| {
                        anyhow::anyhow!("{k}={v:?}: only http/protobuf and grpc are supported")
                    })?,
                }
            }
        };
        let with_path = |base: &str| match protocol {
            Protocol::Grpc => base.to_string(),
            Protocol::Http if base.trim_end_matches('/').ends_with("/v1/traces") => {
                base.to_string()
            }
            Protocol::Http => format!("{}/v1/traces", base.trim_end_matches('/')),
        };
        let configured = match &s.otlp_endpoint {
            Some(e) => Some((with_path(e), "telemetry.otlp_endpoint")),
            None => match env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                Some(e) => Some((e, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")),
                None => env("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .map(|e| (with_path(&e), "OTEL_EXPORTER_OTLP_ENDPOINT")),
            },
        };
        let disabled_by_env = env("OTEL_SDK_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let on = s.traces.unwrap_or(configured.is_some() && !disabled_by_env);
        if !on {
            return Ok(None);
        }
        let (endpoint, source) = configured.unwrap_or_else(|| {
            let default = match protocol {
                Protocol::Http => "http://localhost:4318/v1/traces",
                Protocol::Grpc => "http://localhost:4317",
            };
            (default.to_string(), "the default endpoint")
        });
        check_url(&endpoint).map_err(|e| anyhow::anyhow!("{source}: {endpoint:?} {e}"))?;
        let service_name = s
            .service_name
            .clone()
            .or_else(|| env("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| "portcullis".into());
        Ok(Some(Exporter {
            protocol,
            endpoint,
            headers: s.otlp_headers.clone().into_iter().collect(),
            timeout: s.otlp_timeout,
            service_name,
        }))
    }

    /// The endpoint without credentials or query, for the log.
    pub(crate) fn shown(&self) -> String {
        match self.endpoint.parse::<http::Uri>() {
            Ok(u) => format!(
                "{}://{}{}{}",
                u.scheme_str().unwrap_or("http"),
                u.host().unwrap_or(""),
                u.port_u16().map(|p| format!(":{p}")).unwrap_or_default(),
                u.path()
            ),
            Err(_) => "(invalid)".into(),
        }
    }
}

/// Starts exporting spans when the config or the environment asks for it. Needs a
/// Tokio runtime. Errors (bad endpoint, bad protocol) refuse to start the gateway.
pub(crate) fn start(settings: &TelemetrySettings) -> anyhow::Result<()> {
    let Some(exp) = Exporter::resolve(settings, |k| std::env::var(k).ok())? else {
        return Ok(());
    };
    if PROCESSOR.get().is_some() {
        return Ok(());
    }
    let timeout = exp.timeout;
    let exporter = match exp.protocol {
        Protocol::Http => {
            let client = OtlpHttp {
                client: crate::http_client::new_client(),
                runtime: tokio::runtime::Handle::current(),
                timeout: timeout.unwrap_or(EXPORT_TIMEOUT),
            };
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(exp.endpoint.clone())
                .with_headers(exp.headers.clone())
                .with_http_client(client);
            if let Some(t) = timeout {
                b = b.with_timeout(t);
            }
            b.build()?
        }
        Protocol::Grpc => {
            let mut headers = HeaderMap::new();
            for (k, v) in &exp.headers {
                headers.insert(
                    http::HeaderName::from_bytes(k.as_bytes())?,
                    http::HeaderValue::from_str(v)?,
                );
            }
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_protocol(opentelemetry_otlp::Protocol::Grpc)
                .with_endpoint(exp.endpoint.clone())
                .with_metadata(
                    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers),
                );
            if exp.endpoint.starts_with("https://") {
                b = b.with_tls_config(
                    opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new()
                        .with_webpki_roots(),
                );
            }
            if let Some(t) = timeout {
                b = b.with_timeout(t);
            }
            b.build()?
        }
    };
    let resource = Resource::builder()
        .with_service_name(exp.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let mut processor = BatchSpanProcessor::builder(exporter).build();
    processor.set_resource(&resource);
    if PROCESSOR.set(processor).is_err() {
        return Ok(());
    }
    ENABLED.store(true, Ordering::Relaxed);
    tracing::callsite::rebuild_interest_cache();
    tracing::info!(
        protocol = ?exp.protocol,
        endpoint = %exp.shown(),
        service_name = %exp.service_name,
        headers = exp.headers.len(),
        "exporting traces (OTLP)"
    );
    Ok(())
}

/// Exports what is buffered and stops the exporter. Blocks; call outside async code
/// (the runtime must still be alive).
pub(crate) fn shutdown() {
    if let Some(p) = PROCESSOR.get() {
        ENABLED.store(false, Ordering::Relaxed);
        let _ = p.force_flush();
        let _ = p.shutdown_with_timeout(Duration::from_secs(5));
    }
}

fn propagator() -> &'static TraceContextPropagator {
    static P: OnceLock<TraceContextPropagator> = OnceLock::new();
    P.get_or_init(TraceContextPropagator::new)
}

/// Continues the trace of an incoming `traceparent` (and `tracestate`) on `span`.
pub(crate) fn continue_remote(span: &Span, headers: &HeaderMap) {
    if !enabled() || !headers.contains_key("traceparent") {
        return;
    }
    let cx = propagator().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Adds `traceparent` (and `tracestate`) for the current span to an upstream request.
pub(crate) fn inject_headers(headers: Option<&mut HeaderMap>) {
    let Some(headers) = headers else { return };
    if !enabled() {
        return;
    }
    let cx = Span::current().context();
    if cx.span().span_context().is_valid() {
        propagator().inject_context(&cx, &mut NonEmpty(HeaderInjector(headers)));
    }
}

/// Skips empty values (an empty `tracestate`).
struct NonEmpty<I>(I);

impl<I: Injector> Injector for NonEmpty<I> {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.set(key, value);
        }
    }
}

/// Sets `params._meta.traceparent` (and `tracestate`) for `span`, keeping the agent's
/// other `_meta` fields as they were written. A `_meta` that is not an object is left
/// alone.
pub(crate) fn inject_meta(span: &Span, params: &mut Members) {
    if !enabled() {
        return;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    let mut fields = NonEmpty(HashMap::<String, String>::new());
    propagator().inject_context(&cx, &mut fields);
    merge_meta(params, fields.0);
}

fn merge_meta(params: &mut Members, fields: HashMap<String, String>) {
    let mut meta = match params.get("_meta") {
        None => Members::new(),
        Some(raw) => match serde_json::from_str::<Members>(raw.get()) {
            Ok(meta) if raw.get().starts_with('{') => meta,
            _ => return,
        },
    };
    for (k, v) in fields {
        meta.insert(k, to_raw(&v));
    }
    params.insert("_meta".to_string(), to_raw(&meta));
}

/// OTLP/HTTP over the gateway's pooled hyper client. The batch processor exports from
/// its own thread, so requests run as tasks of the gateway's runtime.
#[derive(Debug)]
struct OtlpHttp {
    client: crate::http_client::HttpClient,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttp {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(body));
        let task = self.runtime.spawn(async move {
            let exchange = async {
                let resp = client.request(request).await?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
                Ok::<_, HttpError>(http::Response::from_parts(parts, body))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(r) => r,
                Err(_) => Err(format!("OTLP export timed out after {timeout:?}").into()),
            }
        });
        task.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(s: &TelemetrySettings, env: &[(&str, &str)]) -> Option<Exporter> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Exporter::resolve(s, |k| env.get(k).cloned()).unwrap()
    }

    #[test]
    fn off_by_default_on_with_an_endpoint() {
        let none = TelemetrySettings::default();
        assert_eq!(resolve(&none, &[]), None);
        let e = resolve(&none, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]).unwrap();
        assert_eq!(e.endpoint, "http://c:4318/v1/traces");
        assert_eq!(e.protocol, Protocol::Http);
        assert_eq!(e.service_name, "portcullis");
        let e = resolve(
            &none,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_SERVICE_NAME", "gw-a"),
            ],
        )
        .unwrap();
        assert_eq!(
            (e.endpoint.as_str(), e.protocol),
            ("http://c:4317", Protocol::Grpc)
        );
        assert_eq!(e.service_name, "gw-a");
        let e = resolve(
            &none,
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:9/custom")],
        )
        .unwrap();
        assert_eq!(e.endpoint, "http://c:9/custom");
        assert_eq!(
            resolve(
                &none,
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_SDK_DISABLED", "true")
                ]
            ),
            None
        );
    }

    #[test]
    fn config_wins_over_env() {
        let s = TelemetrySettings {
            otlp_endpoint: Some("https://collector.example:4318/v1/traces".into()),
            service_name: Some("gw".into()),
            ..Default::default()
        };
        let e = resolve(&s, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:1")]).unwrap();
        assert_eq!(e.endpoint, "https://collector.example:4318/v1/traces");
        assert_eq!(e.service_name, "gw");
        let off = TelemetrySettings {
            traces: Some(false),
            ..s
        };
        assert_eq!(resolve(&off, &[]), None);
        let bad = Exporter::resolve(&TelemetrySettings::default(), |k| {
            (k == "OTEL_EXPORTER_OTLP_PROTOCOL").then(|| "http/json".to_string())
        });
        assert!(bad.is_err());
    }

    #[test]
    fn shown_endpoint_hides_credentials() {
        let e = Exporter {
            protocol: Protocol::Http,
            endpoint: "https://user:secret@c.example:4318/v1/traces?key=secret".into(),
            headers: HashMap::new(),
            timeout: None,
            service_name: "x".into(),
        };
        assert_eq!(e.shown(), "https://c.example:4318/v1/traces");
    }

    #[test]
    fn meta_keeps_the_agents_fields_as_written() {
        let members = |text: &str| serde_json::from_str::<Members>(text).unwrap();
        let trace = HashMap::from([("traceparent".to_string(), "00-ab-cd-01".to_string())]);
        // Without an exporting span nothing is added.
        let mut params = members(r#"{"name":"t","_meta":{"progressToken":1e2}}"#);
        inject_meta(&Span::none(), &mut params);
        assert_eq!(
            serde_json::to_string(&params).unwrap(),
            r#"{"name":"t","_meta":{"progressToken":1e2}}"#
        );
        merge_meta(&mut params, trace.clone());
        assert_eq!(
            serde_json::to_string(&params).unwrap(),
            r#"{"name":"t","_meta":{"progressToken":1e2,"traceparent":"00-ab-cd-01"}}"#
        );
        let mut params = members(r#"{"name":"t"}"#);
        merge_meta(&mut params, trace.clone());
        assert_eq!(
            serde_json::to_string(&params).unwrap(),
            r#"{"name":"t","_meta":{"traceparent":"00-ab-cd-01"}}"#
        );
        let mut params = members(r#"{"name":"t","_meta":[1]}"#);
        merge_meta(&mut params, trace);
        assert_eq!(
            serde_json::to_string(&params).unwrap(),
            r#"{"name":"t","_meta":[1]}"#
        );
    }
}
