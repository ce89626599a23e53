//! `make bench`: how fast the operator moves traffic, how quickly it converges N releases, what it
//! costs the apiserver, and how much memory it holds, on the local control plane.
//!
//! The operator runs as a separate process built from this tree (release profile), against the
//! cluster named by `KUBECONFIG`. The phases, in order:
//!
//! 1. memory at idle (no releases);
//! 2. weight-shift latency with one release: edits of `spec.weight`, one at a time, each timed from
//!    the PATCH response to the VirtualService watch event carrying the new weights;
//! 3. cold convergence: N releases created while the operator is stopped, then the operator
//!    started; compared with the apiserver's write ceiling for a trivial writer, measured first;
//! 4. weight-shift latency again with N releases resident;
//! 5. warm restart with everything in place: time until every release is reconciled, and writes;
//! 6. steady state: a quiet minute at N (writes, reads, CPU), and memory at N.
//!
//! Figures go to stdout as a table and to `target/bench/report.json`. Nothing here asserts a time:
//! a missed goal is reported, never a failure. Every wait is bounded.
//!
//! Settings (environment): `BENCH_N` (releases, default 1000), `BENCH_SHIFTS` (edits per latency
//! run, 200), `BENCH_STEADY_SECONDS` (60), `BENCH_TIMEOUT_SECONDS` (longest wait for a phase, 900).

// The bench reports a broken setup (no cluster, a failed create) by panicking with a message.
#![allow(clippy::expect_used)]

mod apiserver;
mod cluster;
mod latency;
mod process;
mod report;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kube::Client;
use serde_json::{Value, json};

use crate::cluster::{Observer, Progress};
use crate::process::{Counters, CpuSpan, Operator};
use crate::report::Distribution;

/// Settings from the environment.
#[derive(Clone, Debug)]
struct Settings {
    n: usize,
    namespaces: usize,
    shifts: usize,
    steady: Duration,
    timeout: Duration,
}

impl Settings {
    fn from_env() -> Settings {
        let number = |key: &str, default: usize| -> usize {
            match std::env::var(key) {
                Ok(value) => value
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{key}={value} is not a number")),
                Err(_) => default,
            }
        };
        let n = number("BENCH_N", 1000).max(1);
        Settings {
            n,
            // Ten namespaces, more when needed so that no namespace holds more than 1,000 releases.
            namespaces: 10.max(n.div_ceil(1000)),
            shifts: number("BENCH_SHIFTS", 200),
            steady: Duration::from_secs(number("BENCH_STEADY_SECONDS", 60) as u64),
            timeout: Duration::from_secs(number("BENCH_TIMEOUT_SECONDS", 900) as u64),
        }
    }
}

/// Writes per release when it is created: ten children (two ConfigMaps, Deployments and HPAs,
/// a Service, DestinationRule, Gateway and VirtualService) and one status.
const WRITES_PER_RELEASE: usize = 11;

/// The trivial writer runs as many writers at once as the operator runs reconciles.
const CEILING_CONCURRENCY: usize = canary_operator::controller::CONCURRENT_RECONCILES as usize;

/// The release used for weight shifts, in a namespace of its own.
const LATENCY_NS: &str = "bench-latency";
const LATENCY_RELEASE: &str = "azureopenaichat";

fn main() -> ExitCode {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this target without it, and the
    // bench must not run (minutes long, needs its own cluster) as part of the tests.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("benches/operator: not run under `cargo test`; run it with `make bench`");
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        tokio::select! {
            () = run(Settings::from_env()) => ExitCode::SUCCESS,
            // Dropping the run kills the operator process it started.
            _ = tokio::signal::ctrl_c() => {
                eprintln!("bench: interrupted");
                ExitCode::from(130)
            }
        }
    })
}

fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench")
}

fn say(message: impl AsRef<str>) {
    eprintln!("bench: {}", message.as_ref());
}

/// Polls `check` every 100 ms until it returns `Some`, at most for `limit`.
async fn poll<T>(limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the operator's counters have not moved for `quiet`, at most for `limit`: the
/// operator then has no work in flight. Returns the counters and when they last moved.
async fn settle(operator: &Operator, quiet: Duration, limit: Duration) -> (Counters, Duration) {
    let deadline = Instant::now() + limit;
    let mut last = operator.counters().await.unwrap_or_default();
    let mut moved = operator.started.elapsed();
    let mut still_since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = operator.counters().await.unwrap_or(last);
        // Watch reconnects are not work; reconciles, reads and writes are.
        if (now.reconciles, now.writes, now.reads) != (last.reconciles, last.writes, last.reads) {
            moved = operator.started.elapsed();
            still_since = Instant::now();
        } else if still_since.elapsed() >= quiet {
            return (now, moved);
        }
        last = now;
    }
    say(format!(
        "the operator was still busy after {limit:?}; figures include that"
    ));
    (last, moved)
}

async fn api_snapshot(client: &Client) -> apiserver::Snapshot {
    apiserver::snapshot(client).await.unwrap_or_else(|| {
        say("warning: cannot read the apiserver's /metrics; its counts will read 0");
        apiserver::Snapshot::default()
    })
}

fn apiserver_json(delta: &apiserver::Delta) -> Value {
    json!({
        "operator_kind_writes": delta.operator_kind_writes(),
        "exclusive_kind_writes": delta.exclusive_kind_writes(),
        "operator_kind_reads": delta.operator_kind_reads(),
        "all_writes": delta.all_writes(),
        "by_series": delta.to_json(),
    })
}

fn counters_json(c: &Counters) -> Value {
    json!({
        "reconciles": c.reconciles,
        "failed_reconciles": c.errors,
        "writes": c.writes,
        "reads": c.reads,
        "watches": c.watches,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn memory_json(m: &process::Memory) -> Value {
    json!({
        "rss_mib": mib(m.rss_kib),
        "peak_rss_mib": mib(m.peak_kib),
        "anon_mib": mib(m.anon_kib),
        "file_mib": mib(m.file_kib),
    })
}

/// "13.4 MiB (anon 1.4, file 12.0)": what grows with releases and what is the mapped binary.
fn memory_text(m: &process::Memory) -> String {
    format!(
        "{:.1} MiB (anon {:.1}, file {:.1})",
        mib(m.rss_kib),
        mib(m.anon_kib),
        mib(m.file_kib)
    )
}

async fn run(settings: Settings) {
    let client = Client::try_default()
        .await
        .expect("a Kubernetes client from KUBECONFIG (run through `make bench`)");
    let version = client
        .apiserver_version()
        .await
        .expect("the apiserver answers (is the cluster up? `make bench` starts one)")
        .git_version;
    let out = out_dir();
    std::fs::create_dir_all(&out).expect("create target/bench");
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_canary-operator"));
    let ticks = process::clock_ticks();
    let load_before = report::load_average();
    let lab = cluster::lab();
    let version_names = (
        lab["spec"]["stable"]["name"]
            .as_str()
            .unwrap_or("v1")
            .to_owned(),
        lab["spec"]["canary"]["name"]
            .as_str()
            .unwrap_or("v2")
            .to_owned(),
    );
    let versions = (version_names.0.as_str(), version_names.1.as_str());
    let n = settings.n;
    say(format!(
        "N={n} releases over {} namespaces; operator {}; Kubernetes {version}",
        settings.namespaces,
        binary.display()
    ));

    // --- Setup --------------------------------------------------------------------------------
    if !cluster::remove_leftovers(&client, settings.timeout).await {
        panic!(
            "namespaces of an earlier run were still terminating after {:?}",
            settings.timeout
        );
    }
    let bench_namespaces: Vec<String> = (0..settings.namespaces)
        .map(|i| format!("bench-{i:02}"))
        .collect();
    for ns in bench_namespaces
        .iter()
        .map(String::as_str)
        .chain([LATENCY_NS, "bench-ceiling"])
    {
        cluster::namespace(&client, ns).await;
    }
    // Two pods per release (one per version), with room to spare.
    let pods_per_node = 500;
    let nodes = (2 * (n + 1) + 2).div_ceil(pods_per_node) + 1;
    cluster::fake_nodes(&client, nodes, pods_per_node).await;
    let mut observer = Observer::start(&client).await;

    // --- The apiserver's write ceiling, measured while nothing else runs ------------------------
    // As many writes as the operator sends for N releases (capped, so that N=10,000 does not
    // leave 110,000 ConfigMaps to delete), once with the operator's concurrency and once with one
    // writer per release, to show what a connection per request costs.
    let ceiling_total = (WRITES_PER_RELEASE * n).min(11_000);
    let same_per_worker = ceiling_total.div_ceil(CEILING_CONCURRENCY);
    say(format!(
        "trivial writer: {CEILING_CONCURRENCY} workers x {same_per_worker} server-side applies of new ConfigMaps"
    ));
    let same = cluster::write_ceiling(
        &client,
        "bench-ceiling",
        "same",
        CEILING_CONCURRENCY,
        same_per_worker,
    )
    .await;
    let wide_per_worker = (ceiling_total / n).max(1);
    say(format!(
        "trivial writer: {n} workers x {wide_per_worker} applies"
    ));
    let wide = cluster::write_ceiling(&client, "bench-ceiling", "wide", n, wide_per_worker).await;
    // Thousands of ConfigMaps would otherwise sit in every watch cache for the rest of the run.
    cluster::delete_namespace(&client, "bench-ceiling", settings.timeout).await;
    let rate = |(ok, _, seconds): (u64, u64, f64)| ok as f64 / seconds.max(1e-9);
    let ceiling = json!({
        "same_concurrency": {"workers": CEILING_CONCURRENCY, "writes": same.0, "failed": same.1, "seconds": same.2, "writes_per_s": rate(same)},
        "one_writer_per_release": {"workers": n, "writes": wide.0, "failed": wide.1, "seconds": wide.2, "writes_per_s": rate(wide)},
    });
    let ceiling_rate = rate(same);

    // --- The operator's writes without the operator --------------------------------------------
    // The children of N releases applied by a plain writer at the operator's concurrency: no reads,
    // no cache waits, no status. What the apiserver, controller-manager and kwok then do (ReplicaSets,
    // pods, endpoints) is the same as for the operator's writes, so this is about the best cold
    // convergence this machine allows; the CPU split shows what bounds it.
    let plain_namespaces: Vec<String> = (0..settings.namespaces)
        .map(|k| format!("bench-plain-{k}"))
        .collect();
    for ns in &plain_namespaces {
        cluster::namespace(&client, ns).await;
    }
    say(format!(
        "plain writer: the children of {n} releases, {CEILING_CONCURRENCY} releases at once"
    ));
    let plain_api_before = api_snapshot(&client).await;
    let plain_span = CpuSpan::start(ticks);
    let plain =
        cluster::write_children(&client, &lab, &plain_namespaces, n, CEILING_CONCURRENCY).await;
    let plain_cpu = plain_span.finish(&[]);
    let plain_api = api_snapshot(&client).await.since(&plain_api_before);
    say(format!(
        "plain writer: {} writes ({} failed) in {:.1} s",
        plain.0, plain.1, plain.2
    ));
    futures::future::join_all(
        plain_namespaces
            .iter()
            .map(|ns| cluster::delete_namespace(&client, ns, settings.timeout)),
    )
    .await;
    let plain_json = json!({
        "releases": n,
        "workers": CEILING_CONCURRENCY,
        "writes": plain.0,
        "failed": plain.1,
        "seconds": plain.2,
        "writes_per_s": rate(plain),
        "cpu_seconds": plain_cpu.json(),
        "apiserver": apiserver_json(&plain_api),
    });

    // --- 1. Idle: no releases -----------------------------------------------------------------
    say("starting the operator with no releases");
    let idle_op = Operator::start(&binary, &out.join("operator-idle.log"));
    let idle_ready = poll(Duration::from_secs(60), async || {
        idle_op.ready().await.then_some(())
    })
    .await
    .map(|()| idle_op.started.elapsed().as_secs_f64());
    // A few seconds for start-up allocations to settle into what the process keeps.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_memory = idle_op.memory().unwrap_or_default();

    // --- 2. Weight shifts, one release --------------------------------------------------------
    cluster::apply_releases(
        &client,
        vec![cluster::release(&lab, LATENCY_NS, LATENCY_RELEASE)],
        1,
    )
    .await;
    let latency_set: HashSet<String> = [LATENCY_NS.to_owned()].into();
    let in_place = poll(settings.timeout, async || {
        (observer.progress(&latency_set).converged == 1).then_some(())
    })
    .await;
    if in_place.is_none() {
        say("warning: the weight-shift release did not converge; latency figures will be timeouts");
    }
    say(format!("{} weight shifts, one release", settings.shifts));
    let before = (
        idle_op.counters().await.unwrap_or_default(),
        api_snapshot(&client).await,
    );
    let idle_shifts = latency::shift(
        &client,
        LATENCY_NS,
        LATENCY_RELEASE,
        versions,
        settings.shifts,
        0,
    )
    .await;
    let idle_shift_requests = (
        idle_op
            .counters()
            .await
            .unwrap_or_default()
            .since(&before.0),
        api_snapshot(&client).await.since(&before.1),
    );
    let idle_final_memory = idle_op.memory().unwrap_or_default();
    idle_op.stop();

    // --- 3. Cold convergence ------------------------------------------------------------------
    say(format!(
        "creating {n} releases while the operator is stopped"
    ));
    let releases: Vec<Value> = (0..n)
        .map(|i| {
            let ns = &bench_namespaces[i % settings.namespaces];
            cluster::release(&lab, ns, &format!("release-{i:05}"))
        })
        .collect();
    let created_in = cluster::apply_releases(&client, releases, 32).await;
    let bench_set: HashSet<String> = bench_namespaces.iter().cloned().collect();
    let _ = poll(Duration::from_secs(60), async || {
        (observer.progress(&bench_set).releases == n).then_some(())
    })
    .await;

    say("starting the operator: cold convergence");
    let api_before = api_snapshot(&client).await;
    let cold_span = CpuSpan::start(ticks);
    let cold_op = Operator::start(&binary, &out.join("operator-cold.log"));
    let mut ready_at = None;
    let mut first_at = None;
    let mut last_report = Instant::now();
    let converged_at = poll(settings.timeout, async || {
        let elapsed = cold_op.started.elapsed().as_secs_f64();
        if ready_at.is_none() && cold_op.ready().await {
            ready_at = Some(elapsed);
        }
        let p = observer.progress(&bench_set);
        if first_at.is_none() && p.converged > 0 {
            first_at = Some(elapsed);
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            let failed = cold_op.counters().await.map_or(0.0, |c| c.errors);
            say(format!(
                "  {elapsed:.0} s: {}/{n} converged; {failed} failed reconciles so far",
                p.converged
            ));
            last_report = Instant::now();
        }
        (p.converged == n).then_some(elapsed)
    })
    .await;
    let cold_counters = cold_op.counters().await.unwrap_or_default();
    // Where the CPU went while the releases converged: what bounds the figure on this machine.
    let cold_cpu = cold_span.finish(&[(
        "canary-operator",
        cold_op.cpu_seconds(ticks).unwrap_or_default(),
    )]);
    let cold_api = api_snapshot(&client).await.since(&api_before);
    let cold_memory_at_converged = cold_op.memory().unwrap_or_default();
    let last_progress = observer.progress(&bench_set);
    say(match converged_at {
        Some(s) => format!("cold convergence: {n} releases in {s:.1} s"),
        None => format!(
            "cold convergence: only {}/{n} after {:?}",
            last_progress.converged, settings.timeout
        ),
    });

    // Pods become Ready through kwok after the convergence proper; the releases follow.
    let all_ready_at = poll(settings.timeout, async || {
        let p: Progress = observer.progress(&bench_set);
        (p.ready == n).then(|| cold_op.started.elapsed().as_secs_f64())
    })
    .await;
    let (settled_counters, last_work) =
        settle(&cold_op, Duration::from_secs(5), settings.timeout).await;
    let cold_api_settled = api_snapshot(&client).await.since(&api_before);

    // --- 4. Weight shifts with N resident -----------------------------------------------------
    say(format!(
        "{} weight shifts with {n} releases resident",
        settings.shifts
    ));
    let before = (
        cold_op.counters().await.unwrap_or_default(),
        api_snapshot(&client).await,
    );
    let loaded_shifts = latency::shift(
        &client,
        LATENCY_NS,
        LATENCY_RELEASE,
        versions,
        settings.shifts,
        settings.shifts,
    )
    .await;
    let loaded_shift_requests = (
        cold_op
            .counters()
            .await
            .unwrap_or_default()
            .since(&before.0),
        api_snapshot(&client).await.since(&before.1),
    );
    let cold_memory = cold_op.memory().unwrap_or_default();
    cold_op.stop();

    // --- 5. Warm restart ----------------------------------------------------------------------
    say("restarting the operator with everything in place");
    let total = n + 1;
    let api_before = api_snapshot(&client).await;
    let warm_op = Operator::start(&binary, &out.join("operator-warm.log"));
    let mut warm_ready = None;
    let reconciled_at = poll(settings.timeout, async || {
        let elapsed = warm_op.started.elapsed().as_secs_f64();
        if warm_ready.is_none() && warm_op.ready().await {
            warm_ready = Some(elapsed);
        }
        let counters = warm_op.counters().await?;
        (counters.reconciles >= total as f64).then_some(elapsed)
    })
    .await;
    let (warm_counters, warm_last_work) =
        settle(&warm_op, Duration::from_secs(3), settings.timeout).await;
    let warm_api = api_snapshot(&client).await.since(&api_before);

    // --- 6. Steady state ----------------------------------------------------------------------
    say(format!(
        "steady state: {:?} with no changes",
        settings.steady
    ));
    let counters_before = warm_op.counters().await.unwrap_or_default();
    let cpu_before = warm_op.cpu_seconds(ticks).unwrap_or_default();
    let api_before = api_snapshot(&client).await;
    tokio::time::sleep(settings.steady).await;
    let steady_counters = warm_op
        .counters()
        .await
        .unwrap_or_default()
        .since(&counters_before);
    let steady_cpu = warm_op.cpu_seconds(ticks).unwrap_or_default() - cpu_before;
    let steady_api = api_snapshot(&client).await.since(&api_before);
    let steady_memory = warm_op.memory().unwrap_or_default();
    warm_op.stop();
    let load_after = report::load_average();
    drop(observer);

    // A cluster that `make bench` stops afterwards needs no cleaning; one that stays gets its
    // namespaces and nodes back as they were (bounded: the next run finishes what is left).
    if std::env::var("BENCH_CLEANUP").as_deref() != Ok("0") {
        say("deleting the bench's namespaces and nodes");
        if !cluster::remove_leftovers(&client, settings.timeout).await {
            say("warning: namespaces still terminating; the next run waits for them");
        }
    }

    // --- Report -------------------------------------------------------------------------------
    let idle_dist = Distribution::of(&idle_shifts.samples_ms);
    let loaded_dist = Distribution::of(&loaded_shifts.samples_ms);
    let cold_seconds = converged_at;
    let cold_rate = cold_seconds.map(|s| n as f64 / s);
    let cold_write_rate = cold_seconds.map(|s| cold_counters.writes / s);
    let git = report::git_revision();
    let machine = report::machine();
    let at_1000 = n == 1000;

    let shifts_json =
        |shifts: &latency::Shifts, dist: &Distribution, requests: &(Counters, apiserver::Delta)| {
            json!({
                "edits": settings.shifts,
                "samples": shifts.samples_ms.len(),
                "timed_out": shifts.timed_out,
                "vs_event_before_patch_response": shifts.before_response,
                "ms": dist.to_json(),
                "operator_requests": counters_json(&requests.0),
                "apiserver": apiserver_json(&requests.1),
            })
        };
    let report = json!({
        "generated": k8s_openapi::jiff::Timestamp::now().to_string(),
        "settings": {
            "releases": n,
            "namespaces": settings.namespaces,
            "weight_shift_edits": settings.shifts,
            "steady_seconds": settings.steady.as_secs(),
            "timeout_seconds": settings.timeout.as_secs(),
        },
        "machine": machine,
        "load_average": {"before": load_before, "after": load_after},
        "kubernetes_version": version,
        "git": git,
        "operator_binary": binary.display().to_string(),
        "notes": [
            "Everything (etcd, kube-apiserver, controller-manager, scheduler, kwok, the operator and this bench) shares the machine's cores; on the development machine other engineers' builds ran at the same time.",
            "The operator runs with the admin kubeconfig (system:masters), which API Priority and Fairness exempts from queuing.",
            "apiserver_request_total counts every client: operator_kind_writes leaves out child status writes (never the operator's) and events, but can include the deployment controller's revision annotation on new Deployments; exclusive_kind_writes counts CanaryReleases and Istio kinds, which only the operator (and the bench's weight edits) write.",
        ],
        "trivial_writer_ceiling": ceiling,
        "plain_writer_children": plain_json,
        "idle": {
            "ready_seconds": idle_ready,
            "memory": memory_json(&idle_memory),
        },
        "weight_shift": {
            "idle": shifts_json(&idle_shifts, &idle_dist, &idle_shift_requests),
            "with_n_resident": shifts_json(&loaded_shifts, &loaded_dist, &loaded_shift_requests),
            "memory_after_idle_run": memory_json(&idle_final_memory),
        },
        "cold": {
            "create_seconds": created_in.as_secs_f64(),
            "ready_seconds": ready_at,
            "first_converged_seconds": first_at,
            "converged_seconds": cold_seconds,
            "converged": last_progress.converged,
            "releases_per_s": cold_rate,
            "operator_requests": counters_json(&cold_counters),
            "operator_writes_per_s": cold_write_rate,
            "apiserver": apiserver_json(&cold_api),
            "cpu_seconds_until_converged": cold_cpu.json(),
            "all_ready_seconds": all_ready_at,
            "settled_seconds": last_work.as_secs_f64(),
            "operator_requests_settled": counters_json(&settled_counters),
            "apiserver_settled": apiserver_json(&cold_api_settled),
            "memory_at_converged": memory_json(&cold_memory_at_converged),
            "memory_end": memory_json(&cold_memory),
        },
        "warm": {
            "ready_seconds": warm_ready,
            "all_reconciled_seconds": reconciled_at,
            "settled_seconds": warm_last_work.as_secs_f64(),
            "operator_requests": counters_json(&warm_counters),
            "apiserver": apiserver_json(&warm_api),
        },
        "steady": {
            "seconds": settings.steady.as_secs(),
            "operator_requests": counters_json(&steady_counters),
            "cpu_seconds": steady_cpu,
            "apiserver": apiserver_json(&steady_api),
            "memory": memory_json(&steady_memory),
        },
    });

    let mut table = report::Table::default();
    let ms = |v: f64| format!("{v:.1} ms");
    let opt = |v: Option<f64>, unit: &str| {
        v.map_or("not reached".to_owned(), |v| format!("{v:.1} {unit}"))
    };
    table.section(format!(
        "Weight shift: {} edits, one at a time, PATCH response -> VirtualService event",
        settings.shifts
    ));
    for (label, dist, shifts, goal) in [
        ("idle (1 release)", &idle_dist, &idle_shifts, true),
        (
            &format!("with {n} releases resident") as &str,
            &loaded_dist,
            &loaded_shifts,
            false,
        ),
    ] {
        table.row(
            &format!("{label}: p50 / p95 / p99 / max"),
            format!(
                "{} / {} / {} / {}",
                ms(dist.p50),
                ms(dist.p95),
                ms(dist.p99),
                ms(dist.max)
            ),
            if goal {
                Some((
                    "p99 <= 100 ms",
                    dist.samples > 0 && dist.p99 <= 100.0 && shifts.timed_out == 0,
                ))
            } else {
                None
            },
        );
        if shifts.timed_out > 0 {
            table.row(
                &format!("{label}: edits not seen within 30 s"),
                shifts.timed_out.to_string(),
                None,
            );
        }
    }
    table.row(
        "requests per edit (operator writes, idle / resident)",
        format!(
            "{:.2} / {:.2}",
            idle_shift_requests.0.writes / settings.shifts.max(1) as f64,
            loaded_shift_requests.0.writes / settings.shifts.max(1) as f64
        ),
        None,
    );

    table.section(format!(
        "Cold convergence: {n} releases created while stopped, then the operator started"
    ));
    table.row(
        "all converged (children + observedGeneration)",
        opt(cold_seconds, "s"),
        at_1000.then(|| ("<= 45 s at 1,000", cold_seconds.is_some_and(|s| s <= 45.0))),
    );
    table.row(
        "caches synced (/readyz) / first release converged",
        format!("{} / {}", opt(ready_at, "s"), opt(first_at, "s")),
        None,
    );
    table.row(
        "releases/s",
        cold_rate.map_or("-".into(), |r| format!("{r:.1}")),
        None,
    );
    table.row(
        "operator requests: writes / reads / writes per s",
        format!(
            "{:.0} / {:.0} / {}",
            cold_counters.writes,
            cold_counters.reads,
            cold_write_rate.map_or("-".into(), |r| format!("{r:.0}"))
        ),
        None,
    );
    table.row(
        "failed reconciles (retried with backoff)",
        format!("{:.0}", cold_counters.errors),
        None,
    );
    table.row(
        "apiserver writes: operator's kinds / CR+Istio kinds",
        format!(
            "{} / {}",
            cold_api.operator_kind_writes(),
            cold_api.exclusive_kind_writes()
        ),
        None,
    );
    table.row(
        &format!(
            "trivial writer ceiling: {CEILING_CONCURRENCY} writers (as the operator) / {n} writers"
        ),
        format!("{:.0} / {:.0} writes/s", rate(same), rate(wide)),
        None,
    );
    table.row(
        "operator write rate vs ceiling",
        cold_write_rate.map_or("-".into(), |r| {
            format!("{:.0}%", 100.0 * r / ceiling_rate.max(1e-9))
        }),
        None,
    );
    table.row(
        &format!(
            "the same children by a plain writer ({CEILING_CONCURRENCY} releases at once; no reads, cache waits or status)"
        ),
        format!("{:.1} s ({:.0} writes/s)", plain.2, rate(plain)),
        None,
    );
    // The control plane's own work in each window (ReplicaSets, pods, endpoints, status): the
    // longer a window, the more of it falls inside and competes for the same cores.
    table.row(
        "apiserver writes by every client in the window: plain writer / operator (pods created)",
        format!(
            "{} ({}) / {} ({})",
            plain_api.all_writes(),
            plain_api.creates("pods"),
            cold_api.all_writes(),
            cold_api.creates("pods")
        ),
        None,
    );
    table.row(
        "plain writer: CPU s by process / machine busy / available",
        format!("{}; {}", plain_cpu.by_process_text(), plain_cpu.busy_text()),
        None,
    );
    table.row(
        "CPU s until converged, by process",
        cold_cpu.by_process_text(),
        None,
    );
    table.row(
        "CPU s until converged: machine busy / available",
        cold_cpu.busy_text(),
        None,
    );
    table.row(
        "all Ready (pods Ready via kwok)",
        opt(all_ready_at, "s"),
        None,
    );
    table.row(
        "after settling: operator writes / reads (last work at)",
        format!(
            "{:.0} / {:.0} ({:.1} s)",
            settled_counters.writes,
            settled_counters.reads,
            last_work.as_secs_f64()
        ),
        None,
    );

    table.section(format!("Warm restart: {total} releases in place"));
    table.row("caches synced (/readyz)", opt(warm_ready, "s"), None);
    table.row(
        "all reconciled (reconciles >= releases)",
        opt(reconciled_at, "s"),
        None,
    );
    table.row(
        "operator writes",
        format!("{:.0}", warm_counters.writes),
        Some(("0", warm_counters.writes == 0.0)),
    );
    table.row(
        "operator reads / reconciles",
        format!(
            "{:.0} / {:.0}",
            warm_counters.reads, warm_counters.reconciles
        ),
        None,
    );
    table.row(
        "apiserver writes: operator's kinds / CR+Istio kinds",
        format!(
            "{} / {}",
            warm_api.operator_kind_writes(),
            warm_api.exclusive_kind_writes()
        ),
        None,
    );

    table.section(format!(
        "Steady state: {} s, no changes, {total} releases",
        settings.steady.as_secs()
    ));
    table.row(
        "operator writes",
        format!("{:.0}", steady_counters.writes),
        Some(("0", steady_counters.writes == 0.0)),
    );
    table.row(
        "operator reads (GET/LIST) / reconciles",
        format!(
            "{:.0} / {:.0}",
            steady_counters.reads, steady_counters.reconciles
        ),
        None,
    );
    table.row("operator CPU", format!("{steady_cpu:.2} s"), None);
    table.row(
        "apiserver writes: operator's kinds / CR+Istio kinds",
        format!(
            "{} / {}",
            steady_api.operator_kind_writes(),
            steady_api.exclusive_kind_writes()
        ),
        None,
    );
    table.row(
        "apiserver GET/LIST of operator's kinds (all clients)",
        steady_api.operator_kind_reads().to_string(),
        None,
    );

    table.section("Operator memory (RSS)");
    table.row(
        "idle, 0 releases",
        memory_text(&idle_memory),
        Some(("<= 12 MiB", mib(idle_memory.rss_kib) <= 12.0)),
    );
    table.row(
        &format!("{total} releases, steady (after warm restart)"),
        memory_text(&steady_memory),
        at_1000.then(|| ("<= 32 MiB at 1,000", mib(steady_memory.rss_kib) <= 32.0)),
    );
    table.row(
        &format!("{total} releases, peak (warm restart)"),
        format!("{:.1} MiB", mib(steady_memory.peak_kib)),
        at_1000.then(|| ("<= 32 MiB at 1,000", mib(steady_memory.peak_kib) <= 32.0)),
    );
    table.row(
        &format!("{total} releases, peak (cold convergence, weight shifts)"),
        format!("{:.1} MiB", mib(cold_memory.peak_kib)),
        at_1000.then(|| ("<= 32 MiB at 1,000", mib(cold_memory.peak_kib) <= 32.0)),
    );

    let header = format!(
        "canary-operator bench: N={n} over {} namespaces; {}; Kubernetes {version}; rev {}",
        settings.namespaces,
        report::machine_line(&machine),
        report::git_line(&git),
    );
    let text = table.render(&header);
    println!("{text}");
    let mut report = report;
    report["goals"] = table.goals_json();
    let path = out.join("report.json");
    let pretty = serde_json::to_string_pretty(&report).expect("the report serialises");
    std::fs::write(&path, pretty + "\n")
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::write(out.join("report.txt"), text + "\n")
        .unwrap_or_else(|e| panic!("write report.txt: {e}"));
    say(format!("wrote {}", path.display()));
}
