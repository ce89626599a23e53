//! Automatic rollouts at scale: R of the N resident releases (`BENCH_ROLLING`, default 100) turned
//! into automatic ones analysed by a real Prometheus, and what their analysis costs over
//! `BENCH_ROLLING_SECONDS` (default 60): the operator's CPU, Prometheus queries per second (as
//! Prometheus counts them, and as the operator does), writes per minute (as the operator counts
//! them, and its status writes as the apiserver counts them), measurements by verdict, memory.
//!
//! Each rolling release gets, by a merge patch while the operator is stopped: no `weight`, two
//! steps of an hour each (10 %, then 100 %: the window stays in step 1), and an analysis every
//! 10 s with no warmup and two checks on Prometheus's scrape of itself, one compared with the
//! stable. Both use placeholders in a matcher that filters nothing out, so both versions have a
//! value and every measurement passes. Light releases (`replicas: 0`) get one canary replica,
//! which the rollout waits for before it applies a weight; autoscaled ones have it already.
//! The operator runs with its default `--min-analysis-interval` (10s): `Bench::start_operator`
//! passes no flag.
//!
//! Expected per interval and rolling release: one query per check for the canary, one more for
//! the stable of the compared check (3), and one status write. In a window of W s, a release
//! measured every I s is measured W/I times, or once more when both ends of the window fall on a
//! measurement: the goals allow that one more.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use canary_operator::api::CanaryRelease;
use futures::{StreamExt, TryStreamExt, stream};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde_json::{Value, json};

use crate::figures::{ApiRequests, Cpu, MemoryMib, Requests};
use crate::process::{CpuSpan, cpu_seconds};
use crate::prometheus;
use crate::{Bench, api_snapshot, cluster, poll_every, progress_interval, say, settle};

/// The analysis interval, at the operator's default minimum.
pub const INTERVAL_SECONDS: u64 = 10;
/// Checks per release, and how many of them compare with the stable.
pub const CHECKS: usize = 2;
pub const COMPARED: usize = 1;

/// 1 for both versions: Prometheus's own target is up. The matcher on the placeholders filters
/// nothing out (no instance has that name), so canary and stable both get 1: a ratio of 1.
const UP: &str = r#"count(up{job="canary",instance!="{{namespace}}/{{release}}/{{version}}"})"#;
/// The instant queries Prometheus answers per second over the interval: the analysis's own load.
const QUERY_RATE: &str = r#"sum(rate(prometheus_http_requests_total{job="canary",handler="/api/v1/query",instance!="{{namespace}}/{{version}}/{{model}}"}[{{interval}}]))"#;

/// The N releases created and converged without the other phases (`BENCH_ONLY=rolling`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Prepared {
    pub create_seconds: f64,
    pub converged_seconds: Option<f64>,
    pub all_ready_seconds: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Rolling {
    /// Why the phase did not run (no `prometheus` on PATH), if it did not.
    pub skipped: Option<String>,
    pub releases: usize,
    pub rolling: usize,
    pub checks: usize,
    pub compared_to_stable: usize,
    pub interval_seconds: u64,
    /// Set when `BENCH_ONLY=rolling` created the releases.
    pub prepared: Option<Prepared>,
    /// The merge patches turning R releases automatic (the bench's writes, operator stopped).
    pub patch_seconds: f64,
    /// From the operator's start until every rolling release was Progressing with its weight
    /// applied and a measurement made.
    pub all_measuring_seconds: Option<f64>,
    pub measuring: usize,
    /// From the operator's start until the window: the rollouts' start.
    pub before_window: BeforeWindow,
    /// The measured window.
    pub window_seconds: f64,
    pub operator_cpu_seconds: f64,
    pub operator_cpu_percent_of_core: f64,
    pub prometheus_cpu_seconds: f64,
    /// Instant queries per second as Prometheus counts them (its
    /// `prometheus_http_requests_total{handler="/api/v1/query"}`).
    pub prometheus_queries_per_s: Option<f64>,
    /// As the operator counts them (`canary_operator_prometheus_queries_total`, every outcome).
    pub operator_queries_per_s: f64,
    pub operator_queries_by_outcome: BTreeMap<String, f64>,
    /// (checks + compared) / interval × R.
    pub expected_queries_per_s: f64,
    /// The same with one more measurement per release for the window's edges: the goal.
    pub queries_per_s_limit: f64,
    pub operator_requests: Requests,
    pub operator_writes_per_min: f64,
    /// `canaryreleases/status` writes as the apiserver counts them (only the operator writes them).
    pub status_writes_per_min: f64,
    /// 60 / interval × R.
    pub expected_writes_per_min: f64,
    pub writes_per_min_limit: f64,
    /// Check measurements (one per check per measurement) by verdict.
    pub measurements: BTreeMap<String, f64>,
    pub expected_measurements: f64,
    /// Automatic releases by phase at the end (the operator's `canary_operator_rollout_phase`).
    pub phases_at_end: BTreeMap<String, f64>,
    pub apiserver: ApiRequests,
    pub cpu: Cpu,
    pub memory: MemoryMib,
}

/// What the operator did from its start until the window: each rolling release started, got its
/// step's weight and its first measurement (one per check: 1 per release and check expected).
#[derive(Clone, Debug, Default, Serialize)]
pub struct BeforeWindow {
    pub operator_writes: f64,
    pub measurements_per_release_and_check: f64,
    pub measurements: BTreeMap<String, f64>,
}

/// Creates the N releases and lets the operator converge them, then stops it: what `cold` does,
/// without its weight shifts (which need the weight-shift release of `one_release`).
pub async fn prepare(bench: &mut Bench) -> Prepared {
    let n = bench.settings.releases;
    let timeout = bench.settings.timeout();
    say(format!("BENCH_ONLY=rolling: creating {n} releases"));
    let releases: Vec<Value> = (0..n)
        .map(|i| {
            let (ns, name) = release_name(bench, i);
            cluster::release(&bench.template, &ns, &name)
        })
        .collect();
    let created = cluster::apply_releases(&bench.client, releases, 32).await;
    let all = bench.namespace_set();
    let every = progress_interval(n);
    let operator = bench.start_operator("operator-prepare.log");
    let converged_seconds = poll_every(every, timeout, async || {
        (bench.observer.progress(&all).converged == n)
            .then(|| operator.started.elapsed().as_secs_f64())
    })
    .await;
    let all_ready_seconds = poll_every(every, timeout, async || {
        (bench.observer.progress(&all).ready == n).then(|| operator.started.elapsed().as_secs_f64())
    })
    .await;
    let p = bench.observer.progress(&all);
    say(format!(
        "{}/{n} converged, {}/{n} Ready after {:.1} s",
        p.converged,
        p.ready,
        operator.started.elapsed().as_secs_f64()
    ));
    settle(&operator, Duration::from_secs(3), timeout).await;
    operator.stop();
    Prepared {
        create_seconds: created.as_secs_f64(),
        converged_seconds,
        all_ready_seconds,
    }
}

fn release_name(bench: &Bench, i: usize) -> (String, String) {
    (
        bench.namespaces[i % bench.namespaces.len()].clone(),
        format!("release-{i:05}"),
    )
}

/// What turns a release automatic (a JSON merge patch).
fn automatic(prometheus: &str, light: bool) -> Value {
    let mut spec = json!({
        "weight": null,
        "strategy": {"steps": [
            {"weight": 10, "duration": "1h"},
            {"weight": 100, "duration": "1h"},
        ]},
        "analysis": {
            "prometheus": {"address": prometheus, "timeout": "5s"},
            "interval": format!("{INTERVAL_SECONDS}s"),
            "warmup": "0s",
            "failureLimit": 1,
            "inconclusiveLimit": 5,
            "errorLimit": 3,
            "checks": [
                {"name": "self-scraped", "query": UP, "min": 1, "compareToStable": {"maxRatio": 2}},
                {"name": "query-rate", "query": QUERY_RATE, "min": 0},
            ],
        },
    });
    if light {
        // The stable stays at 0: only the canary's replica is needed for the rollout's capacity.
        spec["canary"] = json!({"replicas": 1});
    }
    json!({"spec": spec})
}

/// Whether a release's rollout is under way: Progressing, its step's weight applied, measured.
fn measuring(release: &CanaryRelease) -> bool {
    release
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .is_some_and(|r| {
            r.phase == "Progressing"
                && r.weight_applied_time.is_some()
                && r.last_measurement_time.is_some()
        })
}

/// Counts the rolling releases that are measuring, and all of them by rollout phase.
fn count(bench: &Bench, rolling: &HashSet<(String, String)>) -> (usize, BTreeMap<String, usize>) {
    let mut measuring_count = 0;
    let mut phases = BTreeMap::new();
    for release in bench.observer.releases() {
        let key = (release.namespace().unwrap_or_default(), release.name_any());
        if !rolling.contains(&key) {
            continue;
        }
        let phase = release
            .status
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .map_or("(none)".to_owned(), |r| {
                match (&r.pause_reason, r.weight_applied_time.is_some()) {
                    (Some(why), _) => format!("{}({why})", r.phase),
                    (None, false) if r.phase == "Progressing" => {
                        "Progressing(awaiting replicas)".to_owned()
                    }
                    _ => r.phase.clone(),
                }
            });
        *phases.entry(phase).or_insert(0) += 1;
        if measuring(&release) {
            measuring_count += 1;
        }
    }
    (measuring_count, phases)
}

pub async fn run(bench: &mut Bench, prepared: Option<Prepared>) -> Rolling {
    let n = bench.settings.releases;
    let r = bench.settings.rolling;
    let window = Duration::from_secs(bench.settings.rolling_seconds);
    let timeout = bench.settings.timeout();
    let mut result = Rolling {
        releases: n,
        rolling: r,
        checks: CHECKS,
        compared_to_stable: COMPARED,
        interval_seconds: INTERVAL_SECONDS,
        prepared,
        ..Rolling::default()
    };
    let Some(binary) = prometheus::binary() else {
        let why = "prometheus is not on PATH (hack/build-tools.sh links it; `make bench` puts its bin dir on PATH)";
        say(format!("warning: rolling phase skipped: {why}"));
        result.skipped = Some(why.to_owned());
        return result;
    };
    say(format!(
        "{n} resident, {r} rolling: starting Prometheus ({})",
        binary.display()
    ));
    let prometheus = prometheus::start(&binary).await;
    // The query-rate check has a series once Prometheus has answered a query and scraped its count
    // twice; the bench's own queries here make it exist before the first measurement.
    let sample = QUERY_RATE
        .replace("{{namespace}}", "bench")
        .replace("{{version}}", "v")
        .replace("{{model}}", "m")
        .replace("{{interval}}", &format!("{INTERVAL_SECONDS}s"));
    let has_data = poll_every(
        Duration::from_millis(500),
        Duration::from_secs(60),
        async || prometheus.query(&sample).await,
    )
    .await;
    if has_data.is_none() {
        say("warning: Prometheus has no samples of its own query count after 60 s");
    }

    say(format!(
        "turning {r} releases automatic (analysis every {INTERVAL_SECONDS} s on {})",
        prometheus.url()
    ));
    let patch = automatic(&prometheus.url(), bench.settings.light);
    let names: Vec<(String, String)> = (0..r).map(|i| release_name(bench, i)).collect();
    let started = Instant::now();
    stream::iter(names.iter().cloned())
        .map(|(ns, name)| {
            let api: Api<CanaryRelease> = Api::namespaced(bench.client.clone(), &ns);
            let patch = &patch;
            async move {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map_err(|e| format!("{ns}/{name}: {e}"))
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_or_else(|e| panic!("turning a release automatic: {e}"));
    result.patch_seconds = started.elapsed().as_secs_f64();
    let rolling: HashSet<(String, String)> = names.into_iter().collect();

    say("starting the operator: waiting for every rolling release to be measured");
    let operator = bench.start_operator("operator-rolling.log");
    let mut last_report = Instant::now();
    result.all_measuring_seconds = poll_every(Duration::from_secs(1), timeout, async || {
        let (measuring, phases) = count(bench, &rolling);
        if last_report.elapsed() >= Duration::from_secs(5) {
            say(format!(
                "  {:.0} s: {measuring}/{r} measuring; {phases:?}",
                operator.started.elapsed().as_secs_f64()
            ));
            last_report = Instant::now();
        }
        (measuring == r).then(|| operator.started.elapsed().as_secs_f64())
    })
    .await;
    let (measuring, phases) = count(bench, &rolling);
    result.measuring = measuring;
    if result.all_measuring_seconds.is_none() {
        say(format!(
            "warning: only {measuring}/{r} rolling releases measuring after {timeout:?} ({phases:?}); measuring anyway"
        ));
    }

    // Releases started together are measured together: the window starts half an interval after
    // they all were, between two rounds of measurements, so that it holds W / I rounds.
    tokio::time::sleep(Duration::from_secs(INTERVAL_SECONDS) / 2).await;
    say(format!(
        "{n} resident, {r} rolling: measuring for {} s",
        window.as_secs()
    ));
    let ticks = bench.ticks;
    let prometheus_pid = prometheus.pid();
    let prometheus_cpu = || {
        prometheus_pid
            .and_then(|pid| cpu_seconds(pid, ticks))
            .unwrap_or_default()
    };
    let counters_before = operator.counters().await.unwrap_or_default();
    let analysis_before = operator.analysis().await.unwrap_or_default();
    let served_before = prometheus.queries_served().await;
    let api_before = api_snapshot(&bench.client).await;
    let operator_cpu_before = operator.cpu_seconds(ticks).unwrap_or_default();
    let prometheus_cpu_before = prometheus_cpu();
    // The operator started with the phase: its counters so far are the rollouts' start.
    result.before_window = BeforeWindow {
        operator_writes: counters_before.writes,
        measurements_per_release_and_check: analysis_before.measurements.values().sum::<f64>()
            / (CHECKS * r.max(1)) as f64,
        measurements: analysis_before.measurements.clone(),
    };
    let span = CpuSpan::start(ticks);
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let operator_cpu = operator.cpu_seconds(ticks).unwrap_or_default() - operator_cpu_before;
    let prometheus_cpu = prometheus_cpu() - prometheus_cpu_before;
    let served_after = prometheus.queries_served().await;
    let counters = operator
        .counters()
        .await
        .unwrap_or_default()
        .since(&counters_before);
    let analysis = operator
        .analysis()
        .await
        .unwrap_or_default()
        .since(&analysis_before);
    let elapsed = start.elapsed().as_secs_f64();
    let api = api_snapshot(&bench.client).await.since(&api_before);
    let cpu = span.finish(&[
        ("canary-operator", operator_cpu),
        ("prometheus", prometheus_cpu),
    ]);
    result.memory = operator.memory().unwrap_or_default().into();
    operator.stop();
    drop(prometheus);

    let per_interval = (CHECKS + COMPARED) as f64 * r as f64;
    let interval = INTERVAL_SECONDS as f64;
    // One more measurement per release than W / I when both ends of the window fall on one.
    let edges = (elapsed / interval + 1.0) / (elapsed / interval);
    result.window_seconds = elapsed;
    result.operator_cpu_seconds = operator_cpu;
    result.operator_cpu_percent_of_core = 100.0 * operator_cpu / elapsed;
    result.prometheus_cpu_seconds = prometheus_cpu;
    result.prometheus_queries_per_s = served_before
        .zip(served_after)
        .map(|(before, after)| (after - before) / elapsed);
    result.operator_queries_per_s = analysis.queries.values().sum::<f64>() / elapsed;
    result.operator_queries_by_outcome = analysis.queries;
    result.expected_queries_per_s = per_interval / interval;
    result.queries_per_s_limit = result.expected_queries_per_s * edges;
    result.operator_requests = counters.into();
    result.operator_writes_per_min = counters.writes * 60.0 / elapsed;
    result.status_writes_per_min =
        api.writes_to("canaryreleases", "status") as f64 * 60.0 / elapsed;
    result.expected_writes_per_min = 60.0 / interval * r as f64;
    result.writes_per_min_limit = result.expected_writes_per_min * edges;
    result.measurements = analysis.measurements;
    result.expected_measurements = CHECKS as f64 * r as f64 * elapsed / interval;
    result.phases_at_end = analysis.phases;
    result.apiserver = ApiRequests::from(&api);
    result.cpu = Cpu::from(&cpu);
    result
}
