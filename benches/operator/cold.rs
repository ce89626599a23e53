//! Cold convergence: N releases created while the operator is stopped, then the operator started.
//! Then weight shifts again with the N releases resident.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::figures::{ApiRequests, Cpu, MemoryMib, Requests};
use crate::process::CpuSpan;
use crate::{
    Bench, ShiftRun, api_snapshot, cluster, poll, poll_every, progress_interval, say, settle,
};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Cold {
    /// Creating the N CanaryReleases (the bench's writes, before the operator starts).
    pub create_seconds: f64,
    pub ready_seconds: Option<f64>,
    pub first_converged_seconds: Option<f64>,
    /// Every release with all its children and `observedGeneration` current.
    pub converged_seconds: Option<f64>,
    pub converged: usize,
    pub releases_per_s: Option<f64>,
    pub operator_requests: Requests,
    pub operator_writes_per_s: Option<f64>,
    pub apiserver: ApiRequests,
    pub cpu_until_converged: Cpu,
    /// Every release Ready (its pods Ready through kwok, or none wanted).
    pub all_ready_seconds: Option<f64>,
    /// When the operator last did any work, once it settled.
    pub settled_seconds: f64,
    pub operator_requests_settled: Requests,
    pub apiserver_settled: ApiRequests,
    pub memory_at_converged: MemoryMib,
    pub memory_end: MemoryMib,
}

/// Cold convergence, then weight shifts with the N releases resident.
pub async fn run(bench: &mut Bench) -> (Cold, ShiftRun) {
    let n = bench.settings.releases;
    let timeout = bench.settings.timeout();
    say(format!(
        "creating {n} releases while the operator is stopped"
    ));
    let releases: Vec<Value> = (0..n)
        .map(|i| {
            let ns = &bench.namespaces[i % bench.namespaces.len()];
            cluster::release(&bench.template, ns, &format!("release-{i:05}"))
        })
        .collect();
    let created_in = cluster::apply_releases(&bench.client, releases, 32).await;
    let all = bench.namespace_set();
    let _ = poll(Duration::from_secs(60), async || {
        (bench.observer.progress(&all).releases == n).then_some(())
    })
    .await;

    say("starting the operator: cold convergence");
    let api_before = api_snapshot(&bench.client).await;
    let span = CpuSpan::start(bench.ticks);
    let operator = bench.start_operator("operator-cold.log");
    let mut ready_at = None;
    let mut first_at = None;
    let mut last_report = Instant::now();
    let every = progress_interval(n);
    let converged_at = poll_every(every, timeout, async || {
        let elapsed = operator.started.elapsed().as_secs_f64();
        if ready_at.is_none() && operator.ready().await {
            ready_at = Some(elapsed);
        }
        let p = bench.observer.progress(&all);
        if first_at.is_none() && p.converged > 0 {
            first_at = Some(elapsed);
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            let failed = operator.counters().await.map_or(0.0, |c| c.errors);
            say(format!(
                "  {elapsed:.0} s: {}/{n} converged; {failed} failed reconciles so far",
                p.converged
            ));
            last_report = Instant::now();
        }
        (p.converged == n).then_some(elapsed)
    })
    .await;
    let counters = operator.counters().await.unwrap_or_default();
    // Where the CPU went while the releases converged: what bounds the figure on this machine.
    let cpu = span.finish(&[(
        "canary-operator",
        operator.cpu_seconds(bench.ticks).unwrap_or_default(),
    )]);
    let api = api_snapshot(&bench.client).await.since(&api_before);
    let memory_at_converged = operator.memory().unwrap_or_default().into();
    let converged = bench.observer.progress(&all).converged;
    say(match converged_at {
        Some(s) => format!("cold convergence: {n} releases in {s:.1} s"),
        None => format!("cold convergence: only {converged}/{n} after {timeout:?}"),
    });

    // Pods become Ready through kwok after the convergence proper; the releases follow. Light
    // releases have no pods, but their Deployments' first status comes from the
    // controller-manager's deployment controller, and the releases' status follows it; at its
    // default 20 requests a second that took over 30 minutes at 10,000 releases, so
    // hack/cluster.sh gives it more. The later phases start once that is done.
    let all_ready_seconds = poll_every(every, timeout, async || {
        (bench.observer.progress(&all).ready == n).then(|| operator.started.elapsed().as_secs_f64())
    })
    .await;
    let (settled, last_work) = settle(&operator, Duration::from_secs(5), timeout).await;
    let api_settled = api_snapshot(&bench.client).await.since(&api_before);

    let edits = bench.settings.weight_shift_edits;
    say(format!(
        "{edits} weight shifts and floor patches with {n} releases resident"
    ));
    let loaded = bench.shifts(&operator, edits).await;
    let memory_end = operator.memory().unwrap_or_default().into();
    operator.stop();

    let converged_seconds = converged_at;
    let cold = Cold {
        create_seconds: created_in.as_secs_f64(),
        ready_seconds: ready_at,
        first_converged_seconds: first_at,
        converged_seconds,
        converged,
        releases_per_s: converged_seconds.map(|s| n as f64 / s),
        operator_requests: counters.into(),
        operator_writes_per_s: converged_seconds.map(|s| counters.writes / s),
        apiserver: ApiRequests::from(&api),
        cpu_until_converged: Cpu::from(&cpu),
        all_ready_seconds,
        settled_seconds: last_work.as_secs_f64(),
        operator_requests_settled: settled.into(),
        apiserver_settled: ApiRequests::from(&api_settled),
        memory_at_converged,
        memory_end,
    };
    (cold, loaded)
}
