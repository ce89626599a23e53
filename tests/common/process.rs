//! The operator binary as a process, as it runs in a pod: its HTTP endpoints and its log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::TestNs;

/// An operator process; killed when dropped.
pub struct Process {
    child: Child,
    pub address: String,
    /// Every line it logged (JSON), with when it arrived.
    log: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Starts the operator for the test's namespace, with `extra` arguments; waits until it
    /// serves HTTP.
    pub fn start(ns: &TestNs, extra: &[&str]) -> Process {
        Process::start_logging(ns, extra, "info")
    }

    /// [`Process::start`] with the log filter `log` (OPERATOR_LOG overrides it).
    pub fn start_logging(ns: &TestNs, extra: &[&str], log: &str) -> Process {
        let spawned = Command::new(env!("CARGO_BIN_EXE_canary-operator"))
            .args([
                "--namespace",
                &ns.name,
                "--http-address",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(extra)
            // OPERATOR_LOG=canary_operator=debug cargo test ... for a failing test's story.
            .env(
                "RUST_LOG",
                std::env::var("OPERATOR_LOG").unwrap_or_else(|_| log.to_owned()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = spawned.unwrap_or_else(|e| panic!("start canary-operator: {e}"));
        // The process logs the address it bound (port 0 picks a free one); the rest of its log is
        // kept for assertions and passed through for a failing test to show.
        let Some(stderr) = child.stderr.take() else {
            panic!("no stderr pipe")
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str::<Value>(&line)
                    && let Some(address) = entry["fields"]["address"].as_str()
                {
                    let _ = tx.send(address.to_owned());
                }
                eprintln!("operator: {line}");
                if let Ok(mut lines) = lines.lock() {
                    lines.push((Instant::now(), line));
                }
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("the operator did not log its HTTP address: {e}"));
        Process {
            child,
            address,
            log,
        }
    }

    /// A plain HTTP/1.0 GET, enough to read the operator's three endpoints.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(&self.address).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.address
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((status, body))
    }

    /// The status code of `/readyz` (0 when it does not answer).
    pub fn readyz(&self) -> u16 {
        self.get("/readyz").map_or(0, |(status, _)| status)
    }

    pub fn metric(&self, line_prefix: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find(|l| l.starts_with(line_prefix))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    }

    /// Write requests the operator's controller has sent (Lease renewals not included).
    pub fn writes(&self) -> Option<f64> {
        self.metric("canary_operator_api_requests_total{client=\"controller\",kind=\"write\"}")
    }

    /// Reconciles the operator has started.
    pub fn reconciles(&self) -> Option<f64> {
        self.metric("canary_operator_reconciles_total")
    }

    /// The first line logged at or after `since` that contains every fragment, and when.
    pub fn logged(&self, since: Instant, fragments: &[&str]) -> Option<(Instant, String)> {
        let lines = self.log.lock().ok()?;
        lines
            .iter()
            .find(|(at, line)| *at >= since && fragments.iter().all(|f| line.contains(f)))
            .cloned()
    }

    /// Every line logged at or after `since` that contains one of `fragments`.
    pub fn lines_since(&self, since: Instant, fragments: &[&str]) -> Vec<String> {
        let Ok(lines) = self.log.lock() else {
            return Vec::new();
        };
        lines
            .iter()
            .filter(|(at, line)| *at >= since && fragments.iter().any(|f| line.contains(f)))
            .map(|(_, line)| line.clone())
            .collect()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "kill -{signal} {}",
            self.child.id()
        );
    }

    /// Waits (bounded) for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}
