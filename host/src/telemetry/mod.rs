//! Observability: OpenTelemetry traces and Prometheus metrics.
//!
//! - `config`: the `[telemetry]` section (OTLP endpoint, protocol, headers, service name).
//! - `traces`: the `tracing` → OpenTelemetry layer, the OTLP exporter (HTTP/protobuf or
//!   gRPC), W3C trace-context propagation (incoming `traceparent`, upstream HTTP
//!   headers, `params._meta` of forwarded calls). Off unless an endpoint is configured
//!   here or in `OTEL_EXPORTER_OTLP_*`.
//! - `spans`: the spans of a request (server, policy, quota, upstream) and their
//!   attributes; each also feeds the matching metrics.
//! - `metrics`: the Prometheus registry behind `/metrics` on the admin listener.
//!
//! Health endpoints (`/healthz`, `/readyz`) are in `server::admin`.

pub(crate) mod metrics;
pub(crate) mod spans;
pub(crate) mod traces;

pub(crate) use spans::PolicySpan;
pub(crate) use traces::{shutdown, start};
