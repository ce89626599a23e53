//! Figures into words: the report of a run, its table, and the facts about the run (machine, revision)
//! that make a figure comparable with another.

mod sections;
mod table;

use std::process::Command;

use serde::Serialize;
use serde_json::{Value, json};

use crate::ceiling::{Ceiling, Plain};
use crate::cold::Cold;
use crate::one_release::OneRelease;
use crate::rolling::Rolling;
use crate::warm::Warm;
use crate::{Settings, ShiftRun};

pub use self::sections::table;

/// The 1, 5 and 15 minute load averages: how busy the shared machine was.
pub fn load_average() -> Value {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let values: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    json!(values)
}

pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    json!({"cpu": cpu, "cores": cores, "memory_gib": memory_gib})
}

pub fn machine_line(machine: &Value) -> String {
    format!(
        "{}, {} cores, {} GiB",
        machine["cpu"].as_str().unwrap_or("unknown CPU"),
        machine["cores"],
        machine["memory_gib"]
    )
}

/// `git rev-parse HEAD` of the tree the operator was built from, and whether it had changes.
pub fn git_revision() -> Value {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let revision = git(&["rev-parse", "HEAD"]);
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    json!({"revision": revision, "uncommitted_changes": dirty})
}

pub fn git_line(git: &Value) -> String {
    let revision = git["revision"].as_str().unwrap_or("unknown");
    let short = revision.get(..12).unwrap_or(revision);
    if git["uncommitted_changes"] == json!(true) {
        format!("{short} + uncommitted changes")
    } else {
        short.to_owned()
    }
}

/// Everything a run measured, as it goes into `report.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub generated: String,
    pub settings: Settings,
    pub machine: Value,
    pub load_average: LoadAverage,
    pub kubernetes_version: String,
    pub git: Value,
    pub operator_binary: String,
    pub notes: Vec<String>,
    /// Every phase but `rolling`; none with `BENCH_ONLY=rolling`.
    #[serde(flatten)]
    pub phases: Option<Phases>,
    pub rolling: Rolling,
}

/// The phases before `rolling`, which `BENCH_ONLY=rolling` leaves out.
#[derive(Clone, Debug, Serialize)]
pub struct Phases {
    pub trivial_writer_ceiling: Ceiling,
    pub plain_writer_children: Plain,
    pub one_release: OneRelease,
    pub cold: Cold,
    pub with_n_resident: ShiftRun,
    pub warm: Warm,
}

#[derive(Clone, Debug, Serialize)]
pub struct LoadAverage {
    pub before: Value,
    pub after: Value,
}

pub fn notes(settings: &Settings) -> Vec<String> {
    let mut notes = vec![
        "Everything (etcd, kube-apiserver, controller-manager, scheduler, kwok, the operator and this bench) shares the machine's cores; on the development machine other engineers' builds ran at the same time.".to_owned(),
        "The operator runs with the admin kubeconfig (system:masters), which API Priority and Fairness exempts from queuing.".to_owned(),
        "apiserver_request_total counts every client: operator_kind_writes leaves out child status writes (never the operator's) and events, but can include the deployment controller's revision annotation on new Deployments; exclusive_kind_writes counts CanaryReleases and Istio kinds, which only the operator and the bench's weight edits and floor patches write.".to_owned(),
        "The floor is a direct patch of a VirtualService no operator owns, timed from sending it to its watch event, interleaved with the weight edits (which are timed from the PATCH response).".to_owned(),
    ];
    notes.push(format!(
        "Rolling: {} releases automatic, each analysed every {} s by a real Prometheus on this machine that scrapes only itself; {} checks, {} compared with the stable ({} queries per release and interval), every measurement passing; the goals allow one more measurement per release than window / interval, for the window's edges.",
        settings.rolling,
        crate::rolling::INTERVAL_SECONDS,
        crate::rolling::CHECKS,
        crate::rolling::COMPARED,
        crate::rolling::CHECKS + crate::rolling::COMPARED,
    ));
    if settings.light {
        notes.push(format!(
            "Light releases: the {} releases have no autoscaling and replicas: 0 (the weight-shift release is the full lab), so that the controller-manager and kwok do not dominate; the operator writes 8 children and a status per release instead of 10 and a status.",
            settings.releases
        ));
    }
    notes
}

pub fn header(report: &Report) -> String {
    let s = &report.settings;
    format!(
        "canary-operator bench: N={} over {} namespaces{}{}; {}; Kubernetes {}; rev {}",
        s.releases,
        s.namespaces,
        if s.light { " (light releases)" } else { "" },
        if s.only_rolling {
            "; BENCH_ONLY=rolling"
        } else {
            ""
        },
        machine_line(&report.machine),
        report.kubernetes_version,
        git_line(&report.git),
    )
}
