//! Prometheus metrics (`prometheus-client`), exposed at `/metrics` on the admin
//! listener in the OpenMetrics text format.
//!
//! Counters and histograms live in one process-wide registry updated on the request
//! path (a few atomic operations each). Values that already exist elsewhere (active
//! sessions, the audit queue) are read at scrape time. Label values come from the
//! config (methods, connectors, policies, orgs) or small fixed sets (statuses, error
//! kinds), never from what agents send.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    connector: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
    hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    policy: String,
    hook: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    connector: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeldLabels {
    connector: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    connector: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    org: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<MethodLabels>,
    policy_evaluations: Family<VerdictLabels, Counter>,
    policy_duration: HistogramFamily<PolicyLabels>,
    upstream_duration: HistogramFamily<UpstreamLabels>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    quota_rejections: Family<QuotaLabels, Counter>,
    policy_reloads: Family<ResultLabels, Counter>,
    config_reloads: Family<ResultLabels, Counter>,
    tools_held: Family<HeldLabels, Gauge>,
}

/// 0.25 ms to ~33 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 18))
}

/// 10 µs to ~80 ms: policy evaluations are short.
fn policy_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 2.0, 14))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("portcullis");
    let m = Metrics {
        requests: Family::default(),
        request_duration: Family::new_with_constructor(latency_histogram),
        policy_evaluations: Family::default(),
        policy_duration: Family::new_with_constructor(policy_histogram),
        upstream_duration: Family::new_with_constructor(latency_histogram),
        upstream_errors: Family::default(),
        quota_rejections: Family::default(),
        policy_reloads: Family::default(),
        config_reloads: Family::default(),
        tools_held: Family::default(),
        registry: Registry::default(),
    };
    registry.register(
        "build",
        "Portcullis build information",
        Info::new(BuildLabels {
            version: env!("CARGO_PKG_VERSION").into(),
        }),
    );
    registry.register(
        "requests",
        "Audited MCP requests (tools/list, tools/call) by method, connector (\"-\" when none) and audit status",
        m.requests.clone(),
    );
    registry.register_with_unit(
        "request_duration",
        "Time to answer an audited MCP request, by method",
        Unit::Seconds,
        m.request_duration.clone(),
    );
    registry.register(
        "policy_evaluations",
        "Policy evaluations by policy, hook (filter_tools, check_call, check_result) and verdict (allow, deny, error)",
        m.policy_evaluations.clone(),
    );
    registry.register_with_unit(
        "policy_duration",
        "Time of one policy evaluation, by policy and hook",
        Unit::Seconds,
        m.policy_duration.clone(),
    );
    registry.register_with_unit(
        "upstream_duration",
        "Time of a forwarded request at the upstream, by connector and method",
        Unit::Seconds,
        m.upstream_duration.clone(),
    );
    registry.register(
        "upstream_errors",
        "Failed upstream exchanges by connector and kind (http_status, transport, protocol, timeout, cancelled)",
        m.upstream_errors.clone(),
    );
    registry.register(
        "quota_rejections",
        "tools/call refused by the quota, by org and reason (exceeded, unavailable)",
        m.quota_rejections.clone(),
    );
    registry.register(
        "policy_reloads",
        "Policy hot-reload attempts by result (ok, failed)",
        m.policy_reloads.clone(),
    );
    registry.register(
        "config_reloads",
        "Config reload attempts by result (ok, failed); a failed one keeps the last good config",
        m.config_reloads.clone(),
    );
    registry.register(
        "tools_held",
        "Tools a connector lists but the gateway withholds until approved, by reason (new, changed), as of its last listing",
        m.tools_held.clone(),
    );
    Metrics { registry, ..m }
});

fn s(v: impl Into<String>) -> String {
    v.into()
}

/// One audited request (called for every audit row).
pub(crate) fn request(method: &str, connector: Option<&str>, status: u16, latency_ms: f64) {
    let m = &*METRICS;
    m.requests
        .get_or_create(&RequestLabels {
            method: s(method),
            connector: s(connector.unwrap_or("-")),
            status: status.to_string(),
        })
        .inc();
    m.request_duration
        .get_or_create(&MethodLabels { method: s(method) })
        .observe(latency_ms / 1000.0);
}

/// One policy evaluation.
pub(crate) fn policy(policy: &str, hook: &str, verdict: &str, elapsed: Duration) {
    let m = &*METRICS;
    m.policy_evaluations
        .get_or_create(&VerdictLabels {
            policy: s(policy),
            hook: s(hook),
            verdict: s(verdict),
        })
        .inc();
    m.policy_duration
        .get_or_create(&PolicyLabels {
            policy: s(policy),
            hook: s(hook),
        })
        .observe(elapsed.as_secs_f64());
}

/// One forwarded call's time at the upstream.
pub(crate) fn upstream_call(connector: &str, method: &'static str, elapsed: Duration) {
    METRICS
        .upstream_duration
        .get_or_create(&UpstreamLabels {
            connector: s(connector),
            method: method.to_string(),
        })
        .observe(elapsed.as_secs_f64());
}

/// A failed upstream exchange (`UpstreamError::kind`).
pub(crate) fn upstream_error(connector: &str, kind: &str) {
    METRICS
        .upstream_errors
        .get_or_create(&UpstreamErrorLabels {
            connector: s(connector),
            kind: s(kind),
        })
        .inc();
}

/// A call refused by the quota (`exceeded` or `unavailable`).
pub(crate) fn quota_rejection(org: &str, reason: &str) {
    METRICS
        .quota_rejections
        .get_or_create(&QuotaLabels {
            org: s(org),
            reason: s(reason),
        })
        .inc();
}

/// A config reload attempt (`gateway::reload`). Every reload rebuilds the policy
/// chain, so it counts as a policy reload too (the older of the two counters).
pub(crate) fn config_reload(ok: bool) {
    let labels = ResultLabels {
        result: s(if ok { "ok" } else { "failed" }),
    };
    METRICS.config_reloads.get_or_create(&labels).inc();
    METRICS.policy_reloads.get_or_create(&labels).inc();
}

/// How many tools of a connector's last listing are held (`gateway::pinning`).
pub(crate) fn tools_held(connector: &str, new: u64, changed: u64) {
    for (reason, n) in [("new", new), ("changed", changed)] {
        METRICS
            .tools_held
            .get_or_create(&HeldLabels {
                connector: s(connector),
                reason: s(reason),
            })
            .set(n as i64);
    }
}

/// Values read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Live {
    pub active_sessions: u64,
    pub audit_queue_depth: u64,
    pub audit_dropped_rows: u64,
    /// Policy decisions reused from the decision cache since start.
    pub policy_cached_decisions: u64,
}

/// The exposition: every registered metric plus the live values.
pub(crate) fn render(live: Live) -> String {
    let mut live_registry = Registry::with_prefix("portcullis");
    live_registry.register(
        "active_sessions",
        "Open agent sessions",
        ConstGauge::new(live.active_sessions as i64),
    );
    live_registry.register(
        "audit_queue_depth",
        "Audit rows waiting for the sink",
        ConstGauge::new(live.audit_queue_depth as i64),
    );
    live_registry.register(
        "audit_dropped_rows",
        "Audit rows not stored (queue full with on_full = \"drop\", or after shutdown)",
        ConstCounter::new(live.audit_dropped_rows),
    );
    live_registry.register(
        "policy_cached_decisions",
        "Policy decisions reused from the decision cache instead of evaluated",
        ConstCounter::new(live.policy_cached_decisions),
    );
    let mut out = String::with_capacity(8192);
    // Writing to a String cannot fail.
    let _ = encode_registry(&mut out, &METRICS.registry);
    let _ = encode_registry(&mut out, &live_registry);
    let _ = encode_eof(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family() {
        request("tools/call", Some("conn_a"), 200, 12.0);
        request("tools/call", None, 404, 1.0);
        policy(
            "blocklist",
            "check_call",
            "allow",
            Duration::from_micros(40),
        );
        upstream_call("conn_a", "resources/read", Duration::from_millis(3));
        upstream_error("conn_a", "timeout");
        quota_rejection("acme", "exceeded");
        config_reload(true);
        tools_held("conn_a", 2, 1);
        let text = render(Live {
            active_sessions: 3,
            audit_queue_depth: 2,
            audit_dropped_rows: 1,
            policy_cached_decisions: 7,
        });
        for needle in [
            r#"portcullis_requests_total{method="tools/call",connector="conn_a",status="200"} 1"#,
            r#"portcullis_requests_total{method="tools/call",connector="-",status="404"} 1"#,
            "portcullis_request_duration_seconds_bucket{",
            r#"portcullis_policy_evaluations_total{policy="blocklist",hook="check_call",verdict="allow"} 1"#,
            "portcullis_policy_duration_seconds_count{",
            r#"portcullis_upstream_duration_seconds_sum{connector="conn_a",method="resources/read"}"#,
            r#"portcullis_upstream_errors_total{connector="conn_a",kind="timeout"} 1"#,
            r#"portcullis_quota_rejections_total{org="acme",reason="exceeded"} 1"#,
            r#"portcullis_policy_reloads_total{result="ok"} 1"#,
            r#"portcullis_config_reloads_total{result="ok"} 1"#,
            r#"portcullis_tools_held{connector="conn_a",reason="new"} 2"#,
            r#"portcullis_tools_held{connector="conn_a",reason="changed"} 1"#,
            "portcullis_active_sessions 3",
            "portcullis_audit_queue_depth 2",
            "portcullis_audit_dropped_rows_total 1",
            "portcullis_policy_cached_decisions_total 7",
            "portcullis_build_info{version=",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
