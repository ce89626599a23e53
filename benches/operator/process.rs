//! The operator as a separate process, the way it runs in a pod: started from the binary cargo
//! built for this bench, read through its `/metrics` and `/readyz`, and measured through `/proc`.
//! The process itself is the test kit's harness (`tests/common/process.rs`), shared with the
//! tests that run the binary; this file adds what the bench reads from it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

#[path = "../../tests/common/process.rs"]
mod process_kit;

pub use process_kit::{Memory, clock_ticks, cpu_seconds, http_client};
use process_kit::{Process, Spawn};

/// A running operator; killed when dropped, so an aborted bench leaves nothing behind.
pub struct Operator {
    process: Process,
    /// When the process was spawned: the start of every "time until" figure.
    pub started: Instant,
}

/// The operator's own counters, from `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    pub reconciles: f64,
    pub writes: f64,
    pub reads: f64,
    pub watches: f64,
    /// Reconciles that failed (all reasons).
    pub errors: f64,
}

/// The operator's analysis counters, from `/metrics`, each by its label.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Analysis {
    /// `canary_operator_prometheus_queries_total` by outcome (answered, failed).
    pub queries: BTreeMap<String, f64>,
    /// `canary_operator_check_measurements_total` by verdict (Pass, Fail, ...).
    pub measurements: BTreeMap<String, f64>,
    /// `canary_operator_rollout_phase`: releases in each phase (a gauge, not a counter).
    pub phases: BTreeMap<String, f64>,
}

impl Analysis {
    /// The counters' increase since `before` (the phases as they are now).
    pub fn since(&self, before: &Analysis) -> Analysis {
        let delta = |now: &BTreeMap<String, f64>, then: &BTreeMap<String, f64>| {
            now.iter()
                .map(|(k, v)| (k.clone(), v - then.get(k).copied().unwrap_or(0.0)))
                .collect()
        };
        Analysis {
            queries: delta(&self.queries, &before.queries),
            measurements: delta(&self.measurements, &before.measurements),
            phases: self.phases.clone(),
        }
    }
}

impl Counters {
    pub fn since(&self, before: &Counters) -> Counters {
        Counters {
            reconciles: self.reconciles - before.reconciles,
            writes: self.writes - before.writes,
            reads: self.reads - before.reads,
            watches: self.watches - before.watches,
            errors: self.errors - before.errors,
        }
    }
}

impl Operator {
    /// Spawns the operator on all namespaces with its HTTP server on a free loopback port, and waits
    /// (bounded) for the log line that names the port. Its log goes to `log`.
    pub fn start(binary: &Path, log: &Path) -> Operator {
        let process = Spawn::new()
            .binary(binary)
            // Info, not debug: a log line per reconcile would cost CPU that a real deployment
            // does not spend.
            .log_filter("info")
            .log_file(log)
            // The file has it all; a copy in the bench's memory would grow with N.
            .forget_log()
            .spawn();
        let mut operator = Operator {
            started: process.started,
            process,
        };
        operator.process.wait_address(Duration::from_secs(60));
        operator
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// True once the operator's caches have synced.
    pub async fn ready(&self) -> bool {
        self.process.readyz().await == 200
    }

    pub async fn counters(&self) -> Option<Counters> {
        let metrics = self.process.metrics().await?;
        let requests = |kind: &str| {
            metrics.value(&format!(
                "canary_operator_api_requests_total{{client=\"controller\",kind=\"{kind}\"}}"
            ))
        };
        Some(Counters {
            reconciles: metrics.value("canary_operator_reconciles_total")?,
            writes: requests("write")?,
            reads: requests("read")?,
            watches: requests("watch")?,
            // One series per reason, absent until the first failure.
            errors: metrics.sum("canary_operator_reconcile_errors_total{"),
        })
    }

    /// The operator's analysis counters: Prometheus queries by outcome, check measurements by
    /// verdict, and automatic releases by rollout phase.
    pub async fn analysis(&self) -> Option<Analysis> {
        let metrics = self.process.metrics().await?;
        let mut analysis = Analysis::default();
        for line in metrics.0.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let label = |name: &str| {
                let start = series.find(&format!("{name}=\""))? + name.len() + 2;
                let rest = &series[start..];
                Some(rest[..rest.find('"')?].to_owned())
            };
            let into = if series.starts_with("canary_operator_prometheus_queries_total{") {
                label("outcome").map(|l| (&mut analysis.queries, l))
            } else if series.starts_with("canary_operator_check_measurements_total{") {
                label("verdict").map(|l| (&mut analysis.measurements, l))
            } else if series.starts_with("canary_operator_rollout_phase{") {
                label("phase").map(|l| (&mut analysis.phases, l))
            } else {
                None
            };
            if let Some((map, key)) = into {
                *map.entry(key).or_insert(0.0) += value;
            }
        }
        Some(analysis)
    }

    pub fn memory(&self) -> Option<Memory> {
        self.process.memory()
    }

    /// User plus system CPU time the process has used so far.
    pub fn cpu_seconds(&self, ticks_per_second: f64) -> Option<f64> {
        cpu_seconds(self.pid(), ticks_per_second)
    }

    /// SIGTERM, the way Kubernetes stops a pod, then a bounded wait for a clean exit; SIGKILL if it
    /// does not come. Returns the exit code of a clean exit.
    pub fn stop(mut self) -> Option<i32> {
        self.process.try_signal("TERM");
        let code = self.process.wait_exit(Duration::from_secs(30));
        if self.process.running() {
            eprintln!("bench: the operator ignored SIGTERM for 30 s; killing it");
        }
        code
    }
}

/// CPU time all processes on the machine have used so far (the first line of `/proc/stat`, less
/// idle and I/O wait): with the control plane's own figures, it shows what else ran meanwhile.
fn machine_busy_seconds(ticks_per_second: f64) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle) / ticks_per_second)
}

/// CPU time used over a span by the control plane's processes, this bench, and the whole machine:
/// where the CPU went while something ran, which is what bounds a throughput figure here.
pub struct CpuSpan {
    ticks: f64,
    started: Instant,
    components: Vec<(String, u32)>,
    before: Vec<f64>,
    bench_before: f64,
    machine_before: f64,
}

/// What [`CpuSpan::finish`] found.
#[derive(Clone, Debug)]
pub struct CpuUse {
    pub elapsed: f64,
    /// CPU seconds by process, largest first.
    pub by_process: Vec<(String, f64)>,
    pub machine_busy: f64,
    pub cores: f64,
}

impl CpuSpan {
    pub fn start(ticks: f64) -> CpuSpan {
        let components = control_plane();
        let before = components
            .iter()
            .map(|(_, pid)| cpu_seconds(*pid, ticks).unwrap_or_default())
            .collect();
        CpuSpan {
            ticks,
            started: Instant::now(),
            components,
            before,
            bench_before: cpu_seconds(std::process::id(), ticks).unwrap_or_default(),
            machine_before: machine_busy_seconds(ticks).unwrap_or_default(),
        }
    }

    /// The span so far; `others` adds processes measured by the caller (the operator).
    pub fn finish(&self, others: &[(&str, f64)]) -> CpuUse {
        let cpu = |pid| cpu_seconds(pid, self.ticks).unwrap_or_default();
        let mut by_process: Vec<(String, f64)> = self
            .components
            .iter()
            .zip(&self.before)
            .map(|((name, pid), before)| (name.clone(), cpu(*pid) - before))
            .chain(others.iter().map(|(name, s)| ((*name).to_owned(), *s)))
            // The bench's own watches and polling are part of the load too.
            .chain([(
                "bench".to_owned(),
                cpu(std::process::id()) - self.bench_before,
            )])
            .collect();
        by_process.sort_by(|a, b| b.1.total_cmp(&a.1));
        CpuUse {
            elapsed: self.started.elapsed().as_secs_f64(),
            by_process,
            machine_busy: machine_busy_seconds(self.ticks).unwrap_or_default()
                - self.machine_before,
            cores: std::thread::available_parallelism().map_or(1, usize::from) as f64,
        }
    }
}

impl CpuUse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "elapsed": self.elapsed,
            "available": self.cores * self.elapsed,
            "machine_busy": self.machine_busy,
            "by_process": self.by_process.iter().map(|(name, s)| (name.clone(), serde_json::json!(s))).collect::<serde_json::Map<_, _>>(),
        })
    }

    /// "kube-apiserver 94, etcd 15, ..."
    pub fn by_process_text(&self) -> String {
        self.by_process
            .iter()
            .map(|(name, s)| format!("{name} {s:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// "153 / 154 (2 cores)"
    pub fn busy_text(&self) -> String {
        format!(
            "{:.0} / {:.0} ({} cores)",
            self.machine_busy,
            self.cores * self.elapsed,
            self.cores
        )
    }
}

/// The control plane's processes, from the pid files `hack/cluster.sh` keeps next to the
/// kubeconfig (`$CANARY_RUN_DIR/pids/<component>.pid`); empty for another cluster.
fn control_plane() -> Vec<(String, u32)> {
    let Some(kubeconfig) = std::env::var_os("KUBECONFIG") else {
        return Vec::new();
    };
    let Some(dir) = Path::new(&kubeconfig).parent().map(|d| d.join("pids")) else {
        return Vec::new();
    };
    let mut found: Vec<(String, u32)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            let name = path.file_stem()?.to_str()?.to_owned();
            let pid = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
            Some((name, pid))
        })
        .collect();
    found.sort();
    found
}
