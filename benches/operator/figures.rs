//! The values the phases measure, as they go into `report.json`: plain serialisable data, built
//! from what the probes return (the operator's counters, `/proc`, the apiserver's metrics).

use serde::Serialize;
use serde_json::Value;

use crate::apiserver;
use crate::process::{Counters, CpuUse, Memory};

/// Summary of latency samples, in milliseconds. All zero when there are no samples.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Distribution {
    pub samples: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Distribution {
    pub fn of(samples: &[f64]) -> Distribution {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return Distribution::default();
        }
        // Nearest rank: the smallest sample with at least p% of the samples at or below it.
        let rank = |p: f64| {
            let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        Distribution {
            samples: sorted.len(),
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: sorted[sorted.len() - 1],
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        }
    }
}

/// The operator's own request counts (its `/metrics`) over a phase.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Requests {
    pub reconciles: f64,
    pub failed_reconciles: f64,
    pub writes: f64,
    pub reads: f64,
    pub watches: f64,
}

impl From<Counters> for Requests {
    fn from(c: Counters) -> Requests {
        Requests {
            reconciles: c.reconciles,
            failed_reconciles: c.errors,
            writes: c.writes,
            reads: c.reads,
            watches: c.watches,
        }
    }
}

/// Requests over a phase as the apiserver counted them (every client).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ApiRequests {
    pub operator_kind_writes: u64,
    pub exclusive_kind_writes: u64,
    pub operator_kind_reads: u64,
    pub all_writes: u64,
    pub pods_created: u64,
    pub by_series: Value,
}

impl From<&apiserver::Delta> for ApiRequests {
    fn from(delta: &apiserver::Delta) -> ApiRequests {
        ApiRequests {
            operator_kind_writes: delta.operator_kind_writes(),
            exclusive_kind_writes: delta.exclusive_kind_writes(),
            operator_kind_reads: delta.operator_kind_reads(),
            all_writes: delta.all_writes(),
            pods_created: delta.creates("pods"),
            by_series: delta.to_json(),
        }
    }
}

/// Resident memory of the operator, MiB.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct MemoryMib {
    pub rss: f64,
    pub peak_rss: f64,
    /// Heap, stacks and other private memory: what grows with the number of releases.
    pub anon: f64,
    /// Pages of the binary mapped in: bounded by the binary's size.
    pub file: f64,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl From<Memory> for MemoryMib {
    fn from(m: Memory) -> MemoryMib {
        MemoryMib {
            rss: mib(m.rss_kib),
            peak_rss: mib(m.peak_kib),
            anon: mib(m.anon_kib),
            file: mib(m.file_kib),
        }
    }
}

impl MemoryMib {
    /// "13.4 MiB (anon 1.4, file 12.0)": what grows with releases and what is the mapped binary.
    pub fn text(&self) -> String {
        format!(
            "{:.1} MiB (anon {:.1}, file {:.1})",
            self.rss, self.anon, self.file
        )
    }
}

/// Where the CPU went over a phase: by process, and how busy the machine was.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cpu {
    pub seconds: Value,
    pub by_process: String,
    pub busy: String,
}

impl From<&CpuUse> for Cpu {
    fn from(cpu: &CpuUse) -> Cpu {
        Cpu {
            seconds: cpu.json(),
            by_process: cpu.by_process_text(),
            busy: cpu.busy_text(),
        }
    }
}
