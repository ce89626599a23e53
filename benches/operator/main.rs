//! `make bench`: how fast the operator moves traffic, how quickly it converges N releases, what it
//! costs the apiserver, and how much memory it holds, on the local control plane.
//!
//! The operator runs as a separate process built from this tree (release profile), against the
//! cluster named by `KUBECONFIG`. The phases, in order, one module each:
//!
//! 1. `ceiling`: the apiserver's write ceiling for a trivial writer, and the children of N
//!    releases applied by a plain writer: what cold convergence is compared with;
//! 2. `one_release`: memory at idle (no releases), then weight-shift latency with one release,
//!    each edit timed from the PATCH response to the VirtualService watch event carrying the new
//!    weights, interleaved with the floor (a direct VirtualService patch, see `latency`);
//! 3. `cold`: N releases created while the operator is stopped, then the operator started; and
//!    weight-shift latency again with N releases resident;
//! 4. `warm`: a restart with everything in place (time until every release is reconciled, and
//!    writes), a quiet minute at N (writes, reads, CPU, memory), and edits after minutes of quiet;
//! 5. `rolling`: R of the N releases turned automatic, analysed every 10 s by a real Prometheus
//!    (`prometheus` on PATH, see `prometheus`): the operator's CPU, Prometheus queries per second
//!    and writes per minute while they roll.
//!
//! Each phase returns a serialisable struct; `report` renders them as a table on stdout and
//! `target/bench/report.json`. Nothing here asserts a time: a missed goal is reported, never a
//! failure. Every wait is bounded.
//!
//! Settings (environment): `BENCH_N` (releases, default 1000), `BENCH_SHIFTS` (edits per latency
//! run, 200), `BENCH_STEADY_SECONDS` (60), `BENCH_QUIET_EDITS` (edits after a quiet spell, 3),
//! `BENCH_QUIET_SECONDS` (length of each quiet spell, 125), `BENCH_LIGHT` (1: releases without
//! autoscaling and with no pods; default above 1,000 releases), `BENCH_TIMEOUT_SECONDS` (longest
//! wait for a phase, 900), `BENCH_ROLLING` (releases rolling in the `rolling` phase, 100, at most
//! N), `BENCH_ROLLING_SECONDS` (its measured window, 60), `BENCH_ONLY=rolling` (only the N releases
//! created and converged, then the `rolling` phase: minutes instead of half an hour).

// The bench reports a broken setup (no cluster, a failed create) by panicking with a message.
#![allow(clippy::expect_used)]

mod apiserver;
mod ceiling;
mod cluster;
mod cold;
#[path = "../../tests/common/examples.rs"]
mod examples;
mod figures;
#[path = "../../tests/common/istio.rs"]
mod istio;
mod latency;
mod one_release;
mod process;
mod prometheus;
mod report;
mod rolling;
mod warm;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kube::Client;
use serde::Serialize;
use serde_json::Value;

use crate::cluster::Observer;
use crate::figures::{ApiRequests, Requests};
use crate::latency::{Shifter, Summary};
use crate::process::{Counters, Operator};

/// Settings from the environment.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub releases: usize,
    pub namespaces: usize,
    pub weight_shift_edits: usize,
    pub steady_seconds: u64,
    pub quiet_edits: usize,
    pub quiet_seconds: u64,
    /// Releases without autoscaling and with `replicas: 0`: the operator's work is the same
    /// (minus the HPAs), while the controller-manager and kwok have no pods to run.
    pub light: bool,
    pub timeout_seconds: u64,
    /// Releases turned automatic in the `rolling` phase (at most `releases`).
    pub rolling: usize,
    pub rolling_seconds: u64,
    /// `BENCH_ONLY=rolling`: setup, the N releases converged, then only the `rolling` phase.
    pub only_rolling: bool,
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
            releases: n,
            // Ten namespaces, more when needed so that no namespace holds more than 1,000 releases.
            namespaces: 10.max(n.div_ceil(1000)),
            weight_shift_edits: number("BENCH_SHIFTS", 200),
            steady_seconds: number("BENCH_STEADY_SECONDS", 60) as u64,
            quiet_edits: number("BENCH_QUIET_EDITS", 3),
            quiet_seconds: number("BENCH_QUIET_SECONDS", 125) as u64,
            light: number("BENCH_LIGHT", usize::from(n > 1000)) != 0,
            // Each phase's limit. Cold convergence took 88 s at 1,000 and 918 s at 10,000 on
            // this machine; a quarter of a second per release leaves room for a busier one.
            timeout_seconds: number("BENCH_TIMEOUT_SECONDS", 900.max(n / 4)) as u64,
            rolling: number("BENCH_ROLLING", 100).min(n),
            rolling_seconds: number("BENCH_ROLLING_SECONDS", 60).max(1) as u64,
            only_rolling: match std::env::var("BENCH_ONLY").as_deref() {
                Err(_) | Ok("") => false,
                Ok("rolling") => true,
                Ok(other) => {
                    panic!("BENCH_ONLY={other}: the only phase that runs alone is `rolling`")
                }
            },
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }
}

/// The release used for weight shifts, in a namespace of its own.
pub const LATENCY_NS: &str = "bench-latency";
pub const LATENCY_RELEASE: &str = "azureopenaichat";

/// What every phase works with.
pub struct Bench {
    pub client: Client,
    /// A client built as the operator builds its own (one HTTP/2 connection), for the writers
    /// that cold convergence is compared with.
    pub writer: Client,
    pub settings: Settings,
    pub binary: PathBuf,
    pub out: PathBuf,
    /// Clock ticks per second, for CPU figures from /proc.
    pub ticks: f64,
    /// The lab's example, the template of the weight-shift release.
    pub lab: Value,
    /// The template of the N releases: the lab, or its light variant (see [`Settings::light`]).
    pub template: Value,
    /// The name of the canary version, whose weight the shifts edit.
    pub canary: String,
    pub namespaces: Vec<String>,
    pub observer: Observer,
}

impl Bench {
    pub fn namespace_set(&self) -> HashSet<String> {
        self.namespaces.iter().cloned().collect()
    }

    pub fn start_operator(&self, log: &str) -> Operator {
        Operator::start(&self.binary, &self.out.join(log))
    }

    /// Edits of the weight-shift release; `offset` varies the weights from one run to the next.
    pub async fn shifter(&self, offset: usize) -> Shifter {
        Shifter::start(
            &self.client,
            LATENCY_NS,
            LATENCY_RELEASE,
            &self.canary,
            offset,
        )
        .await
    }

    /// A run of weight edits and floor patches with `operator` running, and what it cost.
    pub async fn shifts(&self, operator: &Operator, offset: usize) -> ShiftRun {
        let edits = self.settings.weight_shift_edits;
        let mut shifter = self.shifter(offset).await;
        let counters = operator.counters().await.unwrap_or_default();
        let api = api_snapshot(&self.client).await;
        let shifts = shifter.run(edits).await;
        ShiftRun {
            shifts: shifts.summary(),
            operator_requests: operator
                .counters()
                .await
                .unwrap_or_default()
                .since(&counters)
                .into(),
            apiserver: ApiRequests::from(&api_snapshot(&self.client).await.since(&api)),
        }
    }
}

/// Weight shifts, and the requests they took.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShiftRun {
    pub shifts: Summary,
    pub operator_requests: Requests,
    pub apiserver: ApiRequests,
}

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

pub fn say(message: impl AsRef<str>) {
    eprintln!("bench: {}", message.as_ref());
}

/// Runs `check` every 100 ms until it returns `Some`, at most for `limit`.
pub async fn poll<T>(limit: Duration, check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    poll_every(Duration::from_millis(100), limit, check).await
}

/// Runs `check` every `interval` until it returns `Some`, at most for `limit`.
pub async fn poll_every<T>(
    interval: Duration,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(interval).await;
    }
}

/// How often convergence is looked at: counting it walks every release and its children in the
/// bench's caches, which at 10,000 releases every 100 ms took half a core from the control plane.
pub fn progress_interval(releases: usize) -> Duration {
    Duration::from_millis(100 * releases.div_ceil(1000).max(1) as u64)
}

/// Waits until the operator has sent no request for `quiet`, at most for `limit`: it then has no
/// work in flight. Returns the counters and when they last moved.
pub async fn settle(operator: &Operator, quiet: Duration, limit: Duration) -> (Counters, Duration) {
    let deadline = Instant::now() + limit;
    let mut last = operator.counters().await.unwrap_or_default();
    let mut moved = operator.started.elapsed();
    let mut still_since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = operator.counters().await.unwrap_or(last);
        // Requests are work; a reconcile that sends none is not (with 10,000 releases, the
        // periodic resync alone reconciles about 17 a second, so "no reconcile for 5 s" never came).
        if (now.writes, now.reads) != (last.writes, last.reads) {
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

pub async fn api_snapshot(client: &Client) -> apiserver::Snapshot {
    apiserver::snapshot(client).await.unwrap_or_else(|| {
        say("warning: cannot read the apiserver's /metrics; its counts will read 0");
        apiserver::Snapshot::default()
    })
}

/// The lab without autoscaling and with no pods (see [`Settings::light`]).
fn light(lab: &Value) -> Value {
    let mut release = lab.clone();
    if let Some(spec) = release["spec"].as_object_mut() {
        spec.remove("autoscaling");
    }
    for version in ["stable", "canary"] {
        release["spec"][version]["replicas"] = serde_json::json!(0);
    }
    release
}

async fn setup(settings: Settings) -> (Bench, String) {
    let client = Client::try_default()
        .await
        .expect("a Kubernetes client from KUBECONFIG (run through `make bench`)");
    let version = client
        .apiserver_version()
        .await
        .expect("the apiserver answers (is the cluster up? `make bench` starts one)")
        .git_version;
    let config = kube::Config::infer()
        .await
        .expect("a Kubernetes config from KUBECONFIG");
    let writer = canary_operator::client::multiplexed(&config)
        .expect("a client as the operator's")
        .build();
    let out = out_dir();
    std::fs::create_dir_all(&out).expect("create target/bench");
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_canary-operator"));
    let lab = examples::lab();
    let canary = lab["spec"]["canary"]["name"]
        .as_str()
        .expect("the lab names its canary")
        .to_owned();
    let n = settings.releases;
    say(format!(
        "N={n} releases over {} namespaces{}; operator {}; Kubernetes {version}",
        settings.namespaces,
        if settings.light {
            " (light: no autoscaling, no pods)"
        } else {
            ""
        },
        binary.display()
    ));
    if !cluster::remove_leftovers(&client, settings.timeout()).await {
        panic!(
            "namespaces of an earlier run were still terminating after {:?}",
            settings.timeout()
        );
    }
    let namespaces: Vec<String> = (0..settings.namespaces)
        .map(|i| format!("bench-{i:02}"))
        .collect();
    for ns in namespaces.iter().map(String::as_str).chain([LATENCY_NS]) {
        cluster::namespace(&client, ns).await;
    }
    // Two pods per release (one per version), with room to spare; light releases have none but
    // for the weight-shift release and the canaries of the rolling phase.
    let pods = if settings.light {
        2 + settings.rolling
    } else {
        2 * n
    } + 4;
    let pods_per_node = 500;
    cluster::fake_nodes(&client, pods.div_ceil(pods_per_node) + 1, pods_per_node).await;
    let observer = Observer::start(&client).await;
    let template = if settings.light {
        light(&lab)
    } else {
        lab.clone()
    };
    let bench = Bench {
        client,
        writer,
        settings,
        binary,
        out,
        ticks: process::clock_ticks(),
        lab,
        template,
        canary,
        namespaces,
        observer,
    };
    (bench, version)
}

async fn run(settings: Settings) {
    let load_before = report::load_average();
    // Read now: the tree may change while the run takes its minutes.
    let git = report::git_revision();
    let (mut bench, version) = setup(settings).await;

    let phases = if bench.settings.only_rolling {
        None
    } else {
        let trivial_writer_ceiling = ceiling::trivial(&bench).await;
        let plain_writer_children = ceiling::plain(&bench).await;
        let one_release = one_release::run(&mut bench).await;
        let (cold, with_n_resident) = cold::run(&mut bench).await;
        let warm = warm::run(&mut bench, &with_n_resident.shifts).await;
        Some(report::Phases {
            trivial_writer_ceiling,
            plain_writer_children,
            one_release,
            cold,
            with_n_resident,
            warm,
        })
    };
    let prepared = if phases.is_none() {
        Some(rolling::prepare(&mut bench).await)
    } else {
        None
    };
    let rolling = rolling::run(&mut bench, prepared).await;

    // A cluster that `make bench` stops afterwards needs no cleaning; one that stays gets its
    // namespaces and nodes back as they were (bounded: the next run finishes what is left).
    if std::env::var("BENCH_CLEANUP").as_deref() != Ok("0") {
        say("deleting the bench's namespaces and nodes");
        if !cluster::remove_leftovers(&bench.client, bench.settings.timeout()).await {
            say("warning: namespaces still terminating; the next run waits for them");
        }
    }

    let report = report::Report {
        generated: k8s_openapi::jiff::Timestamp::now().to_string(),
        settings: bench.settings.clone(),
        machine: report::machine(),
        load_average: report::LoadAverage {
            before: load_before,
            after: report::load_average(),
        },
        kubernetes_version: version,
        git,
        operator_binary: bench.binary.display().to_string(),
        notes: report::notes(&bench.settings),
        phases,
        rolling,
    };
    let table = report::table(&report);
    let text = table.render(&report::header(&report));
    println!("{text}");
    let mut json = serde_json::to_value(&report).expect("the report serialises");
    json["goals"] = table.goals_json();
    let path = bench.out.join("report.json");
    let pretty = serde_json::to_string_pretty(&json).expect("the report serialises");
    std::fs::write(&path, pretty + "\n")
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::write(bench.out.join("report.txt"), text + "\n")
        .unwrap_or_else(|e| panic!("write report.txt: {e}"));
    say(format!("wrote {}", path.display()));
}
