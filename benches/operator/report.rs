//! Figures into words: percentiles, the table, and the facts about the run (machine, revision)
//! that make a figure comparable with another.

use std::process::Command;

use serde_json::{Value, json};

/// Summary of latency samples, in milliseconds. All zero when there are no samples.
#[derive(Clone, Debug, Default)]
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

    pub fn to_json(&self) -> Value {
        json!({
            "samples": self.samples,
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
            "max": self.max,
            "mean": self.mean,
        })
    }
}

/// Rows of figures under section headings, each with its goal (and whether it was met) if it has one.
#[derive(Default)]
pub struct Table {
    rows: Vec<Row>,
}

enum Row {
    Section(String),
    Figure {
        label: String,
        value: String,
        goal: Option<(String, bool)>,
    },
}

impl Table {
    pub fn section(&mut self, title: impl Into<String>) {
        self.rows.push(Row::Section(title.into()));
    }

    pub fn row(&mut self, label: &str, value: String, goal: Option<(&str, bool)>) {
        self.rows.push(Row::Figure {
            label: label.to_owned(),
            value,
            goal: goal.map(|(text, met)| (text.to_owned(), met)),
        });
    }

    pub fn render(&self, header: &str) -> String {
        let width = |f: fn(&Row) -> usize| self.rows.iter().map(f).max().unwrap_or(0);
        let label_width = width(|r| match r {
            Row::Figure { label, .. } => label.len(),
            Row::Section(_) => 0,
        });
        let value_width = width(|r| match r {
            Row::Figure { value, .. } => value.len(),
            Row::Section(_) => 0,
        });
        let mut out = format!("{header}\n");
        for row in &self.rows {
            match row {
                Row::Section(title) => out.push_str(&format!("\n{title}\n")),
                Row::Figure { label, value, goal } => {
                    let goal = match goal {
                        Some((text, true)) => format!("goal {text}: met"),
                        Some((text, false)) => format!("goal {text}: MISSED"),
                        None => String::new(),
                    };
                    let line = format!("  {label:<label_width$}  {value:<value_width$}  {goal}");
                    out.push_str(line.trim_end());
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Every figure that has a goal, for the JSON report.
    pub fn goals_json(&self) -> Value {
        let mut section = "";
        let mut goals = Vec::new();
        for row in &self.rows {
            match row {
                Row::Section(title) => section = title,
                Row::Figure {
                    label,
                    value,
                    goal: Some((goal, met)),
                } => goals.push(json!({
                    "section": section,
                    "figure": label,
                    "value": value,
                    "goal": goal,
                    "met": met,
                })),
                Row::Figure { goal: None, .. } => {}
            }
        }
        Value::Array(goals)
    }
}

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
