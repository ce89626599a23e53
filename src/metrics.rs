//! Prometheus metrics of the operator, served at `/metrics`.
//!
//! Counters that the operator updates live in prometheus-client types. Figures that already exist
//! elsewhere (request counts in [`RequestCounts`], each release's applied weight in the release
//! cache) are read at scrape time by collectors, so they are never copied or left behind: a
//! deleted release simply stops appearing.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::CanaryRelease;
use crate::requests::RequestCounts;
use kube::ResourceExt;
use kube::runtime::reflector::Store;

type Labels = Vec<(&'static str, String)>;

/// Everything `/metrics` shows.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    failures: Family<Labels, Counter>,
    pub duration: Histogram,
    pub leader: Gauge,
    /// Measurements of checks, by verdict.
    measurements: Family<Labels, Counter>,
    /// Queries to Prometheus, by outcome.
    queries: Family<Labels, Counter>,
    releases: Arc<ReleaseWeights>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Metrics {
    /// `requests` names each client whose requests are counted (for example the controller's and
    /// the leader election's), so writes made to hold the Lease are told apart from reconcile writes.
    pub fn new(requests: Vec<(&'static str, Arc<RequestCounts>)>) -> Self {
        let mut registry = Registry::with_prefix("canary_operator");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        let failures = Family::<Labels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed and will be retried, by the pipeline step that failed and the kind of failure",
            failures.clone(),
        );
        // 1 ms .. ~16 s: a reconcile from caches takes well under a millisecond, one with writes
        // a few round trips.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this instance holds the leader Lease (or runs without leader election)",
            leader.clone(),
        );
        let measurements = Family::<Labels, Counter>::default();
        registry.register(
            "check_measurements",
            "Checks of automatic rollouts measured, by verdict (Pass, Fail, Inconclusive, Error)",
            measurements.clone(),
        );
        let queries = Family::<Labels, Counter>::default();
        registry.register(
            "prometheus_queries",
            "Queries sent to Prometheus for rollout analysis, by outcome (answered, failed)",
            queries.clone(),
        );
        registry.register_collector(Box::new(Requests(requests)));
        let releases = Arc::new(ReleaseWeights::default());
        registry.register_collector(Box::new(releases.clone()));
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            leader,
            measurements,
            queries,
            releases,
        }
    }

    /// A reconcile failed in `step` (observe, apply, prune, status) for `reason` (api,
    /// conflict, transport, ...).
    pub fn failed(&self, step: &str, reason: &str) {
        self.failures
            .get_or_create(&vec![
                ("step", step.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    pub fn measured(&self, verdict: &str) {
        self.measurements
            .get_or_create(&vec![("verdict", verdict.to_owned())])
            .inc();
    }

    pub fn queried(&self, answered: bool) {
        let outcome = if answered { "answered" } else { "failed" };
        self.queries
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    /// Makes the releases of a running controller visible to `/metrics`.
    pub fn watch_releases(&self, store: Store<CanaryRelease>) {
        if let Ok(mut stores) = self.releases.0.lock() {
            stores.push(store);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// API requests sent, by client and kind, read from the clients' own counters.
#[derive(Debug)]
struct Requests(Vec<(&'static str, Arc<RequestCounts>)>);

impl Collector for Requests {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "api_requests",
            "Requests sent to the API server, by client and kind (write: POST/PUT/PATCH/DELETE; read: GET/LIST; watch)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (client, counts) in &self.0 {
            for (kind, value) in [
                ("write", counts.writes()),
                ("read", counts.reads()),
                ("watch", counts.watches()),
            ] {
                let labels: Labels =
                    vec![("client", (*client).to_owned()), ("kind", kind.to_owned())];
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Each release's applied canary weight, from the controller's cache of releases.
#[derive(Debug, Default)]
struct ReleaseWeights(Mutex<Vec<Store<CanaryRelease>>>);

impl Collector for ReleaseWeights {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(stores) = self.0.lock() else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "release_canary_weight",
            "Percent of traffic the release's route (VirtualService or HTTPRoute) sends to the canary, per release",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for release in stores.iter().flat_map(Store::state) {
            let Some(weight) = release.status.as_ref().and_then(|s| s.canary_weight) else {
                continue;
            };
            let labels: Labels = vec![
                ("namespace", release.namespace().unwrap_or_default()),
                ("name", release.name_any()),
            ];
            ConstGauge::new(i64::from(weight)).encode(family.encode_family(&labels)?)?;
        }
        // Automatic releases only: one series per phase (1 for the current one), as kube-state-
        // metrics shows phases, so alerts can select `phase="RolledBack"`.
        let releases: Vec<_> = stores.iter().flat_map(Store::state).collect();
        let rolling: Vec<_> = releases
            .iter()
            .filter_map(|r| {
                let rollout = r.status.as_ref()?.rollout.as_ref()?;
                Some((r.namespace().unwrap_or_default(), r.name_any(), rollout))
            })
            .collect();
        let mut phases = encoder.encode_descriptor(
            "rollout_phase",
            "1 for the phase an automatic rollout is in, per release and phase",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (namespace, name, rollout) in &rolling {
            for phase in crate::rollout::Phase::ALL {
                let labels: Labels = vec![
                    ("namespace", namespace.clone()),
                    ("name", name.clone()),
                    ("phase", phase.as_str().to_owned()),
                ];
                let on = i64::from(rollout.phase == phase.as_str());
                ConstGauge::new(on).encode(phases.encode_family(&labels)?)?;
            }
        }
        let mut steps = encoder.encode_descriptor(
            "rollout_step",
            "Current step of an automatic rollout, counted from 1, per release",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (namespace, name, rollout) in &rolling {
            let labels: Labels = vec![("namespace", namespace.clone()), ("name", name.clone())];
            ConstGauge::new(i64::from(rollout.step)).encode(steps.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let metrics = Metrics::new(vec![("controller", Arc::new(RequestCounts::default()))]);
        metrics.reconciles.inc();
        metrics.failed("apply", "api");
        metrics.duration.observe(0.002);
        metrics.measured("Pass");
        metrics.queried(false);
        let text = metrics.encode().unwrap_or_default();
        for line in [
            "canary_operator_reconciles_total 1",
            "canary_operator_reconcile_errors_total{step=\"apply\",reason=\"api\"} 1",
            "canary_operator_reconcile_duration_seconds_count 1",
            "canary_operator_api_requests_total{client=\"controller\",kind=\"write\"} 0",
            "canary_operator_leader 0",
            "canary_operator_check_measurements_total{verdict=\"Pass\"} 1",
            "canary_operator_prometheus_queries_total{outcome=\"failed\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
