//! What the records and metrics of one protocol session's statements share, made once per
//! session: a busy session decides thousands of statements a second, and copying the same
//! names into every record, or hashing the same metric labels for every count, was a
//! measurable part of each statement's cost.

use std::{
    borrow::Cow,
    sync::{Arc, Mutex},
};

use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

use crate::{
    metrics::{Metrics, ResourceLabels, StatementLabels},
    policy::Resource,
    protocol::HandlerContext,
    record::StatementDecided,
};

/// Distinct (action, decision) pairs whose counters a session keeps at hand; any beyond
/// are still counted, looked up in the metric family each time.
const CACHED_COUNTERS: usize = 32;

pub struct SessionStatements {
    pub workload: Arc<str>,
    pub principal: Arc<str>,
    pub resource: Arc<str>,
    metrics: Arc<Metrics>,
    counters: Mutex<Vec<(String, String, Counter)>>,
    upstream: Histogram,
}

impl SessionStatements {
    pub fn new(ctx: &HandlerContext<'_>, resource: &Resource) -> Self {
        let upstream = ctx
            .metrics
            .upstream_seconds
            .get_or_create(&ResourceLabels {
                resource: resource.name.clone(),
            })
            .clone();
        SessionStatements {
            workload: ctx.workload.into(),
            principal: ctx.principal.name.as_str().into(),
            resource: resource.name.as_str().into(),
            metrics: Arc::clone(ctx.metrics),
            counters: Mutex::new(Vec::new()),
            upstream,
        }
    }

    /// A decision record for `statement`, everything else left empty.
    pub fn decided(
        &self,
        connection: u64,
        action: Cow<'static, str>,
        statement: String,
        decision: &'static str,
    ) -> StatementDecided {
        StatementDecided {
            connection,
            workload: Arc::clone(&self.workload),
            principal: Arc::clone(&self.principal),
            resource: Arc::clone(&self.resource),
            action,
            tables: Vec::new(),
            statement,
            decision: Cow::Borrowed(decision),
            policies: Vec::new(),
            grant: None,
            approval: None,
            reason: None,
            object: None,
            request: None,
        }
    }

    /// Counts one statement decided.
    pub fn count(&self, action: &str, decision: &str) {
        let mut counters = match self.counters.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some((_, _, counter)) = counters
            .iter()
            .find(|(a, d, _)| a == action && d == decision)
        {
            counter.inc();
            return;
        }
        let counter = self
            .metrics
            .statements
            .get_or_create(&StatementLabels {
                resource: self.resource.to_string(),
                action: action.to_owned(),
                decision: decision.to_owned(),
            })
            .clone();
        counter.inc();
        if counters.len() < CACHED_COUNTERS {
            counters.push((action.to_owned(), decision.to_owned(), counter));
        }
    }

    /// Observes how long the resource took over one statement.
    pub fn upstream_took(&self, duration_us: u64) {
        self.upstream.observe(duration_us as f64 / 1e6);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(metrics: &Arc<Metrics>) -> SessionStatements {
        SessionStatements {
            workload: "w".into(),
            principal: "local".into(),
            resource: "db".into(),
            metrics: Arc::clone(metrics),
            counters: Mutex::new(Vec::new()),
            upstream: metrics
                .upstream_seconds
                .get_or_create(&ResourceLabels {
                    resource: "db".into(),
                })
                .clone(),
        }
    }

    fn counted(metrics: &Metrics, action: &str, decision: &str) -> u64 {
        metrics
            .statements
            .get_or_create(&StatementLabels {
                resource: "db".into(),
                action: action.into(),
                decision: decision.into(),
            })
            .get()
    }

    #[test]
    fn cached_and_uncached_counts_reach_the_same_series() {
        let metrics = Arc::new(Metrics::new());
        let session = statements(&metrics);
        for n in 0..(CACHED_COUNTERS + 8) {
            let action = format!("k8s:verb{n}");
            session.count(&action, "allow");
            session.count(&action, "allow");
            session.count(&action, "deny");
        }
        for n in 0..(CACHED_COUNTERS + 8) {
            let action = format!("k8s:verb{n}");
            assert_eq!(counted(&metrics, &action, "allow"), 2, "{action}");
            assert_eq!(counted(&metrics, &action, "deny"), 1, "{action}");
        }
        assert!(
            session.counters.lock().expect("lock").len() <= CACHED_COUNTERS,
            "the cache stays bounded"
        );
        // A second session of the resource adds to the same series.
        statements(&metrics).count("k8s:verb0", "deny");
        assert_eq!(counted(&metrics, "k8s:verb0", "deny"), 2);
    }

    #[test]
    fn upstream_time_is_observed_in_seconds() {
        let metrics = Arc::new(Metrics::new());
        statements(&metrics).upstream_took(1_500);
        let text = metrics.encode_openmetrics().expect("encode");
        assert!(
            text.contains("enforcer_upstream_seconds_sum{resource=\"db\"} 0.0015"),
            "{text}"
        );
        assert!(
            text.contains("enforcer_upstream_seconds_count{resource=\"db\"} 1"),
            "{text}"
        );
    }
}
