//! A real Prometheus on 127.0.0.1 for tests that judge a release by its metrics: it scrapes the
//! targets it is given every second, and can be killed and started again on the same port and data
//! to play a monitoring outage.
//!
//! Targets carry static labels (`namespace`, `version`, ...) because there is no service discovery
//! here: in a cluster, relabelling would copy them from the pods' labels, and queries are written
//! against those label names either way.
// Each includer (the tests, the bench) uses a different part of it.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::host::{free_port, skip};
use super::process::http_client;

/// The job every target is scraped under (`up{job="canary"}`).
pub const JOB: &str = "canary";

/// Longest wait for `/-/ready`: a cold start is a second or two, a restart replays the WAL first.
const STARTUP: Duration = Duration::from_secs(60);

/// Longest wait for Prometheus to die after SIGKILL.
const EXIT: Duration = Duration::from_secs(10);

/// `prometheus` from PATH, or `None` (after saying so loudly) when it is not there. In CI a
/// missing Prometheus is a failure: hack/build-tools.sh links it next to kubectl.
pub fn binary(test_name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        skip(
            test_name,
            "prometheus is not on PATH",
            "run hack/build-tools.sh and `eval $(make -s cluster-env)`, which puts its bin dir on PATH",
        );
    }
    found
}

/// An endpoint to scrape (`/metrics` at `addr`) and the labels every series from it gets.
#[derive(Clone, Debug)]
pub struct ScrapeTarget {
    pub addr: SocketAddr,
    pub labels: Vec<(String, String)>,
}

impl ScrapeTarget {
    pub fn new(addr: SocketAddr, labels: &[(&str, &str)]) -> ScrapeTarget {
        ScrapeTarget {
            addr,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }
}

/// A running (or deliberately killed) Prometheus; killed and its files removed when dropped.
pub struct Prometheus {
    binary: PathBuf,
    child: Option<Child>,
    port: u16,
    /// Config, data and log: all of its state, in one place to remove.
    dir: PathBuf,
    http: reqwest::Client,
}

/// The config: one job, one static group per target so each keeps its own labels.
fn config(targets: &[ScrapeTarget]) -> String {
    let groups: Vec<Value> = targets
        .iter()
        .map(|t| {
            let labels: serde_json::Map<String, Value> = t
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            json!({"targets": [t.addr.to_string()], "labels": labels})
        })
        .collect();
    let config = json!({
        // A test waits seconds, not minutes, for a sample; the timeout may not exceed the interval.
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": JOB, "static_configs": groups}],
    });
    serde_norway::to_string(&config).unwrap_or_else(|e| panic!("Prometheus config as YAML: {e}"))
}

impl Prometheus {
    /// Starts Prometheus on a free port scraping `targets`, and waits until it is ready.
    pub async fn start(binary: &Path, targets: &[ScrapeTarget]) -> Prometheus {
        // The port is picked free and then handed to Prometheus, so another process may take it
        // in between; a few attempts make that race harmless.
        let mut last = String::new();
        for _ in 0..3 {
            let mut prometheus = Prometheus::spawn(binary, free_port(), targets);
            match prometheus.wait_ready().await {
                Ok(()) => return prometheus,
                Err(why) if why.contains("address already in use") => last = why,
                Err(why) => panic!("{why}"),
            }
        }
        panic!("Prometheus would not start: {last}");
    }

    /// Starts Prometheus on `port`, for a target list that names Prometheus itself.
    pub async fn start_on(binary: &Path, port: u16, targets: &[ScrapeTarget]) -> Prometheus {
        let mut prometheus = Prometheus::spawn(binary, port, targets);
        if let Err(why) = prometheus.wait_ready().await {
            panic!("{why}");
        }
        prometheus
    }

    fn spawn(binary: &Path, port: u16, targets: &[ScrapeTarget]) -> Prometheus {
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "canary-prometheus-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("data"))
            .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let path = dir.join("prometheus.yml");
        std::fs::write(&path, config(targets))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        let mut prometheus = Prometheus {
            binary: binary.to_owned(),
            child: None,
            port,
            dir,
            http: http_client(),
        };
        prometheus.child = Some(prometheus.command().spawn().unwrap_or_else(|e| {
            panic!("starting {}: {e}", binary.display());
        }));
        prometheus
    }

    /// The same command every time, so a restart finds its own data and port.
    fn command(&self) -> Command {
        let log = self.log_file();
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("Prometheus's log: {e}"));
        let mut command = Command::new(&self.binary);
        command
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        command
    }

    /// Appended to, so the log of a run before [`Prometheus::kill`] is kept for failure messages.
    fn log_file(&self) -> File {
        let path = self.dir.join("prometheus.log");
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
    }

    /// The last `n` lines Prometheus logged, for a failure message.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id while it runs, for CPU figures from /proc.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Instant queries it has answered so far, all response codes, as its own `/metrics` counts
    /// them (`prometheus_http_requests_total{handler="/api/v1/query"}`): exact at any moment,
    /// where a query of the scraped series lags a scrape.
    pub async fn queries_served(&self) -> Option<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url()))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(
            text.lines()
                .filter(|l| {
                    l.starts_with("prometheus_http_requests_total{")
                        && l.contains("handler=\"/api/v1/query\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }

    /// Waits (bounded) for `/-/ready`; `Err` with the log's tail if Prometheus exits first or the
    /// time runs out.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "Prometheus exited with {status} before it was ready; last lines:\n{}",
                    self.log_tail(20)
                ));
            }
            if self.ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "Prometheus was not ready on {} within {STARTUP:?}; last lines:\n{}",
                    self.url(),
                    self.log_tail(20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether `/-/ready` answers 200 (it answers 503 while the TSDB is still opening).
    pub async fn ready(&self) -> bool {
        let url = format!("{}/-/ready", self.url());
        self.http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// SIGKILL, and waits (bounded) until the process is gone: an outage with no clean shutdown,
    /// as when a node dies.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            panic!("Prometheus is not running");
        };
        let _ = child.kill();
        let deadline = Instant::now() + EXIT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => panic!("Prometheus (pid {}) did not die: {other:?}", child.id()),
            }
        }
    }

    /// Starts Prometheus again after [`Prometheus::kill`] on the same port and data, and waits
    /// until it is ready (it replays its WAL, so samples from before the outage are queryable).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "Prometheus is still running");
        let child = self
            .command()
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} again: {e}", self.binary.display()));
        self.child = Some(child);
        if let Err(why) = self.wait_ready().await {
            panic!("after a restart: {why}");
        }
    }

    /// Every series an instant query returns, with its labels; `None` when Prometheus does not
    /// answer or answers with an error (a bad query, or not ready yet).
    pub async fn query_vector(&self, promql: &str) -> Option<Vec<(Vec<(String, String)>, f64)>> {
        // reqwest's `query` is behind a feature this crate does not build; the URL type encodes.
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url()),
            [("query", promql)],
        )
        .unwrap_or_else(|e| panic!("a query URL: {e}"));
        let response = self.http.get(url).send().await.ok()?;
        let body: Value = response.json().await.ok()?;
        if body["status"] != "success" {
            return None;
        }
        let data = &body["data"];
        match data["resultType"].as_str()? {
            "vector" => data["result"]
                .as_array()?
                .iter()
                .map(|series| {
                    let labels = series["metric"]
                        .as_object()?
                        .iter()
                        .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect::<Option<Vec<_>>>()?;
                    Some((labels, sample(&series["value"])?))
                })
                .collect(),
            "scalar" => Some(vec![(Vec::new(), sample(&data["result"])?)]),
            _ => None,
        }
    }

    /// The value of an instant query that yields one number (a scalar or a one-series vector);
    /// `None` when there is no series yet or Prometheus does not answer. Panics when the query
    /// yields several series: aggregate it, or the value depends on their order.
    pub async fn query(&self, promql: &str) -> Option<f64> {
        let series = self.query_vector(promql).await?;
        match series.as_slice() {
            [] => None,
            [(_, value)] => Some(*value),
            _ => panic!(
                "{promql:?} yields {} series, not one: {series:?}",
                series.len()
            ),
        }
    }

    /// Waits (bounded) until `promql` yields a value and returns it; panics with the log's tail
    /// on timeout.
    pub async fn wait_for_samples(&self, promql: &str, timeout: Duration) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = self.query(promql).await {
                return value;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no samples for {promql:?} within {timeout:?}; Prometheus's last lines:\n{}",
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A `[time, "value"]` pair of the query API.
fn sample(pair: &Value) -> Option<f64> {
    pair.get(1)?.as_str()?.parse().ok()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
