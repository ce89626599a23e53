//! A real Prometheus for the `rolling` phase: `prometheus` from PATH (hack/build-tools.sh links it
//! into the tools' bin dir, which `make bench` puts on PATH) on 127.0.0.1 and a free port,
//! scraping only itself every second, so that the releases' checks have series to query. Its
//! config and data live in a directory under the bench's out dir, removed when it stops; its log
//! is kept next to the operator's. Killed when dropped, so an aborted bench leaves nothing behind.
//!
//! (The test kit's `tests/common/prometheus.rs` keeps its files in the system's temp dir and
//! scrapes static targets under another job; the bench needs neither.)

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for `/-/ready`.
const STARTUP: Duration = Duration::from_secs(60);
/// Longest wait for an exit after SIGTERM, then after SIGKILL.
const EXIT: Duration = Duration::from_secs(10);
/// The job Prometheus scrapes itself under (`up{job="prometheus"}`).
pub const JOB: &str = "prometheus";

pub struct Prometheus {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    http: reqwest::Client,
}

/// `prometheus` from PATH, if it is there.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("a free port: {e}"))
}

fn config(port: u16) -> String {
    // Every second, so that a 10 s rate has ten samples; the timeout may not exceed the interval.
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n- job_name: {JOB}\n  static_configs:\n  - targets: ['127.0.0.1:{port}']\n"
    )
}

impl Prometheus {
    /// Starts Prometheus with its files in `dir` (emptied first) and its log in `log`, and waits
    /// (bounded) until it is ready and has scraped itself. The port is picked free and then handed
    /// over, so another process may take it in between: a few attempts make that race harmless.
    pub async fn start(binary: &Path, dir: &Path, log: &Path) -> Prometheus {
        // reqwest is built without a TLS provider of its own (see Cargo.toml); building a client
        // wants one installed, and ring is the one kube's client links. Err: one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|e| panic!("an HTTP client: {e}"));
        let mut last = String::new();
        for _ in 0..3 {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir.join("data"))
                .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
            let port = free_port();
            std::fs::write(dir.join("prometheus.yml"), config(port))
                .unwrap_or_else(|e| panic!("write {}/prometheus.yml: {e}", dir.display()));
            let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
            let err = out
                .try_clone()
                .unwrap_or_else(|e| panic!("Prometheus's log: {e}"));
            let child = Command::new(binary)
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
            let mut prometheus = Prometheus {
                child: Some(child),
                port,
                dir: dir.to_owned(),
                log: log.to_owned(),
                http: http.clone(),
            };
            match prometheus.wait_ready().await {
                Ok(()) => return prometheus,
                Err(why) if why.contains("address already in use") => last = why,
                Err(why) => panic!("{why}"),
            }
        }
        panic!("Prometheus would not start: {last}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "Prometheus exited with {status} before it was ready; last lines:\n{}",
                    self.log_tail()
                ));
            }
            let ready = self
                .http
                .get(format!("{}/-/ready", self.url()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "Prometheus was not ready on {} within {STARTUP:?}; last lines:\n{}",
                    self.url(),
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of an instant query that yields one number; `None` without one.
    pub async fn query(&self, promql: &str) -> Option<f64> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url()),
            [("query", promql)],
        )
        .ok()?;
        let body: serde_json::Value = self.http.get(url).send().await.ok()?.json().await.ok()?;
        let result = &body["data"]["result"];
        let pair = match body["data"]["resultType"].as_str()? {
            "vector" => match result.as_array()?.as_slice() {
                [one] => &one["value"],
                _ => return None,
            },
            "scalar" => result,
            _ => return None,
        };
        pair.get(1)?.as_str()?.parse().ok()
    }

    /// Instant queries Prometheus has answered so far, all response codes, as its own `/metrics`
    /// counts them (`prometheus_http_requests_total{handler="/api/v1/query"}`).
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
                .fold(0.0, |sum, n| sum + n),
        )
    }

    /// SIGTERM, a bounded wait, SIGKILL if needed, and its files removed (the log stays).
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let exited = |child: &mut Child| {
                let deadline = Instant::now() + EXIT;
                while Instant::now() < deadline {
                    if !matches!(child.try_wait(), Ok(None)) {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                false
            };
            if !exited(&mut child) {
                eprintln!("bench: Prometheus ignored SIGTERM for {EXIT:?}; killing it");
                let _ = child.kill();
                if !exited(&mut child) {
                    eprintln!(
                        "bench: warning: Prometheus (pid {}) did not die",
                        child.id()
                    );
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.terminate();
    }
}
