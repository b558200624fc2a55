//! Prometheus metrics (prometheus-client), scraped from the admin listener's `/metrics`.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// resource | egress | deny
    pub route: String,
    /// allow | deny
    pub decision: String,
    /// resource or egress rule name; empty for a default deny.
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// to_upstream | to_client
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KernelLabels {
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    /// requested | issued | pending | denied | expired | revoked | used_up
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApprovalLabels {
    /// approved | denied | timed_out
    pub outcome: String,
}

/// Every metric enforcer exports.
pub struct Metrics {
    pub registry: Registry,
    pub connections: Family<ConnectionLabels, Counter>,
    pub active_connections: Gauge,
    pub relay_bytes: Family<DirectionLabels, Counter>,
    pub orig_dst_misses: Counter,
    pub accept_latency: Histogram,
    /// Mirrors the kernel programs' counters; refreshed on each scrape.
    pub kernel_events: Family<KernelLabels, Counter>,
    pub grants: Family<GrantLabels, Counter>,
    /// Pending approvals in the store (shared by every host using it).
    pub approvals_pending: Gauge,
    pub approval_decision_seconds: Family<ApprovalLabels, Histogram>,
    pub masked_values: Family<DetectorLabels, Counter>,
    pub statements: Family<StatementLabels, Counter>,
    /// How long held statements waited for a decision.
    pub hold_seconds: Histogram,
    /// From forwarding a statement upstream to its completion, by resource.
    pub upstream_seconds: Family<ResourceLabels, Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatementLabels {
    pub resource: String,
    /// e.g. sql:write
    pub action: String,
    /// allow | deny
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetectorLabels {
    pub detector: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("enforcer");
        let connections = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "connections",
            "Connections from the workload, by route (resource, egress, deny) and decision",
            connections.clone(),
        );
        let active_connections = Gauge::default();
        registry.register(
            "active_connections",
            "Connections currently relayed",
            active_connections.clone(),
        );
        let relay_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "relay_bytes",
            "Bytes relayed for allowed connections, by direction",
            relay_bytes.clone(),
        );
        let orig_dst_misses = Counter::default();
        registry.register(
            "orig_dst_lookup_misses",
            "Accepted connections with no kernel record of their original destination (denied)",
            orig_dst_misses.clone(),
        );
        // 10 µs to ~0.3 s: the lookup is a map read, the tail is a starved runtime.
        let accept_latency = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(1e-5, 2.0, 15),
        );
        registry.register(
            "proxy_accept_latency_seconds",
            "Time from accept() to the routing decision (original-destination lookup and policy)",
            accept_latency.clone(),
        );
        let kernel_events = Family::<KernelLabels, Counter>::default();
        registry.register(
            "redirect_events",
            "Events counted by the kernel programs (connects redirected, sockets denied, ...)",
            kernel_events.clone(),
        );
        let grants = Family::<GrantLabels, Counter>::default();
        registry.register(
            "grants",
            "JIT grant lifecycle events (requested, issued, pending, denied, expired, revoked, used_up)",
            grants.clone(),
        );
        let approvals_pending = Gauge::default();
        registry.register(
            "approvals_pending",
            "Approval requests waiting for an operator",
            approvals_pending.clone(),
        );
        // 1 s to ~4.5 h: people decide, not machines.
        let approval_decision_seconds =
            Family::<ApprovalLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    1.0, 2.0, 15,
                ))
            });
        registry.register(
            "approval_decision_seconds",
            "Time from an approval request to its decision, by outcome",
            approval_decision_seconds.clone(),
        );
        let masked_values = Family::<DetectorLabels, Counter>::default();
        registry.register(
            "masked_values",
            "Values masked in answers to the workload, by content detector",
            masked_values.clone(),
        );
        let statements = Family::<StatementLabels, Counter>::default();
        registry.register(
            "statements",
            "Statements and requests decided, by resource, action and decision",
            statements.clone(),
        );
        let hold_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.5, 2.0, 14),
        );
        registry.register(
            "hold_seconds",
            "Time held statements waited for an operator's decision",
            hold_seconds.clone(),
        );
        // 50 µs to ~0.8 s.
        let upstream_seconds = Family::<ResourceLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                5e-5, 2.0, 15,
            ))
        });
        registry.register(
            "upstream_seconds",
            "Time from forwarding a statement to the resource until it completed",
            upstream_seconds.clone(),
        );
        Metrics {
            upstream_seconds,
            statements,
            hold_seconds,
            masked_values,
            grants,
            approvals_pending,
            approval_decision_seconds,
            registry,
            connections,
            active_connections,
            relay_bytes,
            orig_dst_misses,
            accept_latency,
            kernel_events,
        }
    }

    pub fn masked_n(&self, detector: &str, n: u64) {
        self.masked_values
            .get_or_create(&DetectorLabels {
                detector: detector.to_owned(),
            })
            .inc_by(n);
    }

    pub fn grant_event(&self, event: &str) {
        self.grants
            .get_or_create(&GrantLabels {
                event: event.to_owned(),
            })
            .inc();
    }

    /// Copies the kernel's running totals into the exported counters.
    pub fn set_kernel_counters(&self, counters: &[(enforcer_common::Counter, u64)]) {
        for (counter, value) in counters {
            let metric = self.kernel_events.get_or_create(&KernelLabels {
                event: counter.label().to_owned(),
            });
            metric
                .inner()
                .store(*value, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// OpenMetrics text, what prometheus-client writes.
    pub fn encode_openmetrics(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Prometheus text format 0.0.4, for scrapers and linters (promtool) that do not ask for
    /// OpenMetrics.
    pub fn encode_prometheus(&self) -> Result<String, std::fmt::Error> {
        Ok(openmetrics_to_prometheus(&self.encode_openmetrics()?))
    }
}

/// The two formats differ, for what enforcer exports, only in that OpenMetrics names a
/// counter family without its `_total` suffix and ends with `# EOF`; prometheus-client has no
/// 0.0.4 encoder, so translate those two things.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_help: Option<&str> = None;
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            if let Some(help) = pending_help.replace(line) {
                out.push_str(help);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let renamed = if kind == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some(help) = pending_help.take() {
                let help_text = help
                    .strip_prefix("# HELP ")
                    .and_then(|h| h.split_once(' '))
                    .map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {renamed} {help_text}\n"));
            }
            out.push_str(&format!("# TYPE {renamed} {kind}\n"));
            continue;
        }
        if let Some(help) = pending_help.take() {
            out.push_str(help);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(help) = pending_help {
        out.push_str(help);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_name_and_eof_goes() {
        let om = "# HELP a_b Things.\n# TYPE a_b counter\na_b_total{x=\"1\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(om),
            "# HELP a_b_total Things.\n# TYPE a_b_total counter\na_b_total{x=\"1\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }

    #[test]
    fn real_registry_translates_every_counter() {
        let metrics = Metrics::new();
        metrics.orig_dst_misses.inc();
        let text = metrics.encode_prometheus().expect("encode");
        assert!(text.contains("# TYPE enforcer_orig_dst_lookup_misses_total counter\nenforcer_orig_dst_lookup_misses_total 1\n"), "{text}");
        assert!(!text.contains("# EOF"));
    }
}
