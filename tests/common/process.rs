//! The operator binary as a process, as it runs in a pod: started with [`Spawn`], read through its
//! HTTP endpoints and its log, measured through `/proc`, signalled and waited for.
//!
//! One harness for every test that runs the binary and for the bench, which includes this file
//! with `#[path = "../../tests/common/process.rs"]`: so it imports nothing from the rest of the
//! test kit.
// Each includer uses a different part of it.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one request to the operator's HTTP server may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// The operator binary under test: `CANARY_OPERATOR_BIN` when set (for example the release
/// build, to measure what the chart's resources should be), else the one cargo built.
pub fn binary() -> PathBuf {
    std::env::var_os("CANARY_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_canary-operator")))
}

/// The client for the operator's own HTTP server (and the kit's other local servers): plain HTTP
/// on loopback, so never through a proxy from the developer's shell, and every request bounded.
pub fn http_client() -> reqwest::Client {
    // reqwest is built without a TLS provider of its own (see Cargo.toml); building a client
    // wants one installed, and ring is the one kube's client links. Err: one is installed already.
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .no_proxy()
        .timeout(HTTP_TIMEOUT)
        .build()
        .unwrap_or_else(|e| panic!("an HTTP client: {e}"))
}

/// How to start the operator; [`Spawn::start`] runs it.
#[must_use]
pub struct Spawn {
    binary: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_clear: bool,
    /// `--http-address`; port 0 picks a free port, which the operator logs.
    http_address: String,
    json_log: bool,
    log_file: Option<PathBuf>,
    keep_log: bool,
    echo: bool,
}

impl Default for Spawn {
    fn default() -> Spawn {
        Spawn::new()
    }
}

impl Spawn {
    /// The [`binary`] on a free loopback port, logging JSON, every line kept in memory.
    pub fn new() -> Spawn {
        Spawn {
            binary: binary(),
            args: Vec::new(),
            env: Vec::new(),
            env_clear: false,
            http_address: "127.0.0.1:0".to_owned(),
            json_log: true,
            log_file: None,
            keep_log: true,
            echo: false,
        }
    }

    pub fn binary(mut self, path: &Path) -> Spawn {
        self.binary = path.to_owned();
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Spawn {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Spawn
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Only this namespace (all of them without).
    pub fn namespace(self, namespace: &str) -> Spawn {
        self.args(["--namespace", namespace])
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Spawn {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts from an empty environment: only what [`Spawn::env`] sets.
    pub fn env_clear(mut self) -> Spawn {
        self.env_clear = true;
        self
    }

    pub fn kubeconfig(self, path: &Path) -> Spawn {
        self.env("KUBECONFIG", path)
    }

    /// The log filter (`RUST_LOG`).
    pub fn log_filter(self, filter: &str) -> Spawn {
        self.env("RUST_LOG", filter)
    }

    /// A fixed address instead of a free port.
    pub fn http_address(mut self, address: &str) -> Spawn {
        self.http_address = address.to_owned();
        self
    }

    /// The operator's text log instead of JSON: what a person reads. Its address is then not
    /// found in the log, so the process is for [`Process::finish`] or a fixed address.
    pub fn text_log(mut self) -> Spawn {
        self.json_log = false;
        self
    }

    /// Every line of the log into `path` as well.
    pub fn log_file(mut self, path: &Path) -> Spawn {
        self.log_file = Some(path.to_owned());
        self
    }

    /// Not every line in memory (a long run): [`Process::logged`] then finds nothing.
    pub fn forget_log(mut self) -> Spawn {
        self.keep_log = false;
        self
    }

    /// Every line of the log onto this process's stderr, prefixed with `operator: ` (a test's
    /// output, shown when it fails).
    pub fn echo(mut self) -> Spawn {
        self.echo = true;
        self
    }

    /// Spawns the operator and returns at once; its address is known once it has logged it.
    pub fn spawn(self) -> Process {
        let mut command = Command::new(&self.binary);
        if self.env_clear {
            command.env_clear();
        }
        command.args(["--http-address", &self.http_address]);
        if self.json_log {
            command.args(["--log-format", "json"]);
        }
        let started = Instant::now();
        let mut child = command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        let Some(stderr) = child.stderr.take() else {
            panic!("the operator's stderr is not piped")
        };
        let mut file = self.log_file.as_ref().map(|path| {
            File::create(path)
                .unwrap_or_else(|e| panic!("cannot create the log {}: {e}", path.display()))
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        let (keep, echo) = (self.keep_log, self.echo);
        let (tx, address) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str::<Value>(&line)
                    && let Some(address) = entry["fields"]["address"].as_str()
                {
                    let _ = tx.send(address.to_owned());
                }
                if echo {
                    eprintln!("operator: {line}");
                }
                if let Some(file) = &mut file {
                    let _ = writeln!(file, "{line}");
                }
                if keep && let Ok(mut lines) = lines.lock() {
                    lines.push((Instant::now(), line));
                }
            }
        });
        let fixed = self
            .http_address
            .rsplit_once(':')
            .is_some_and(|(_, port)| port != "0")
            .then(|| self.http_address.clone());
        Process {
            child,
            started,
            address: fixed,
            logged_address: address,
            log,
            log_file: self.log_file,
            reader: Some(reader),
            http: http_client(),
        }
    }

    /// [`Spawn::spawn`], then waits (bounded) until the operator has logged the address it
    /// serves HTTP on.
    pub fn start(self) -> Process {
        let mut process = self.spawn();
        process.wait_address(Duration::from_secs(60));
        process
    }
}

/// An operator process; killed when dropped, so a failed test or an aborted bench leaves nothing
/// behind.
pub struct Process {
    child: Child,
    /// When it was spawned.
    pub started: Instant,
    address: Option<String>,
    logged_address: mpsc::Receiver<String>,
    /// Every line it logged, with when it arrived.
    log: Arc<Mutex<Vec<(Instant, String)>>>,
    log_file: Option<PathBuf>,
    reader: Option<JoinHandle<()>>,
    http: reqwest::Client,
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// How a process that ran to its end ended.
#[derive(Debug)]
pub struct Exit {
    /// `None` when it was killed (also when it did not exit in time).
    pub code: Option<i32>,
    /// Its whole log.
    pub log: String,
}

/// The text of a `/metrics` page.
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the first series whose line starts with `prefix` (a metric name, with its
    /// labels for one series).
    pub fn value(&self, prefix: &str) -> Option<f64> {
        self.0
            .lines()
            .find(|line| line.starts_with(prefix))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    }

    /// The sum over every series whose line starts with `prefix`; 0 when there is none.
    pub fn sum(&self, prefix: &str) -> f64 {
        self.0
            .lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            // fold from +0.0: an empty f64 sum is -0.0, which prints as "-0".
            .fold(0.0, |sum, n| sum + n)
    }
}

/// Resident memory from `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// VmRSS: resident now.
    pub rss_kib: u64,
    /// VmHWM: the highest resident size since the process started.
    pub peak_kib: u64,
    /// RssAnon: heap, stacks and other private memory; what grows with the number of releases.
    pub anon_kib: u64,
    /// RssFile: pages of the binary and shared libraries mapped in; shared and reclaimable, and
    /// bounded by the size of the binary.
    pub file_kib: u64,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where it serves HTTP (`host:port`), once known.
    pub fn address(&mut self) -> Option<&str> {
        if self.address.is_none() {
            self.address = self.logged_address.try_recv().ok();
        }
        self.address.as_deref()
    }

    /// Waits (bounded) for the address; panics with the log's tail if the process exits first or
    /// the time runs out.
    pub fn wait_address(&mut self, within: Duration) -> &str {
        let deadline = Instant::now() + within;
        while self.address().is_none() {
            if let Some(why) = self.exited() {
                panic!("the operator did not log its HTTP address: {why}");
            }
            if Instant::now() >= deadline {
                panic!(
                    "the operator did not log its HTTP address within {within:?}; last lines:\n{}",
                    self.log_tail(40)
                );
            }
            if let Ok(address) = self.logged_address.recv_timeout(Duration::from_millis(100)) {
                self.address = Some(address);
            }
        }
        self.address.as_deref().unwrap_or_default()
    }

    /// One GET on the operator's HTTP server: status and body; `None` if it does not answer (or
    /// its address is not known yet).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let address = self.address.as_deref()?;
        let response = self
            .http
            .get(format!("http://{address}{path}"))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// The status code of `/readyz` (0 when it does not answer).
    pub async fn readyz(&self) -> u16 {
        self.get("/readyz").await.map_or(0, |(status, _)| status)
    }

    /// Waits (bounded) until `/readyz` answers 200; panics with the log's tail if the process
    /// exits first or the time runs out.
    pub async fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(why) = self.exited() {
                panic!("the operator exited before it was ready: {why}");
            }
            if self.readyz().await == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the operator was not ready within {within:?}; last lines:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `/metrics`, when it answers 200.
    pub async fn metrics(&self) -> Option<Metrics> {
        match self.get("/metrics").await? {
            (200, body) => Some(Metrics(body)),
            _ => None,
        }
    }

    /// One value of `/metrics` (see [`Metrics::value`]).
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        self.metrics().await?.value(prefix)
    }

    /// Write requests the operator's controller has sent (Lease renewals not included).
    pub async fn writes(&self) -> Option<f64> {
        self.metric("canary_operator_api_requests_total{client=\"controller\",kind=\"write\"}")
            .await
    }

    /// Reconciles the operator has started.
    pub async fn reconciles(&self) -> Option<f64> {
        self.metric("canary_operator_reconciles_total").await
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

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        let Ok(lines) = self.log.lock() else {
            return String::new();
        };
        lines.iter().map(|(_, line)| format!("{line}\n")).collect()
    }

    /// The last `n` lines of the log, for a failure message.
    pub fn log_tail(&self, n: usize) -> String {
        let Ok(lines) = self.log.lock() else {
            return String::new();
        };
        let tail = &lines[lines.len().saturating_sub(n)..];
        let mut text: Vec<&str> = tail.iter().map(|(_, line)| line.as_str()).collect();
        if let Some(file) = &self.log_file {
            text.push("");
            text.push("(the whole log is in the file below)");
            text.push(file.to_str().unwrap_or_default());
        }
        text.join("\n")
    }

    /// `kill -SIGNAL` (TERM, KILL, ...); panics if it cannot be sent.
    pub fn signal(&self, signal: &str) {
        assert!(self.try_signal(signal), "kill -{signal} {}", self.pid());
    }

    /// `kill -SIGNAL`; whether it was sent (not when the process has gone already).
    pub fn try_signal(&self, signal: &str) -> bool {
        Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Waits (bounded) for the process to exit and returns its exit code (`None` when it was
    /// killed by a signal, or still runs at the end). Once it has exited, its log is complete.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.read_to_end();
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Waits for the reader to reach the end of the log of a process that has exited.
    fn read_to_end(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How the process ended, with the log's tail, once it has; `None` while it runs.
    pub fn exited(&mut self) -> Option<String> {
        let Ok(Some(status)) = self.child.try_wait() else {
            return None;
        };
        self.read_to_end();
        Some(format!("{status}; last lines:\n{}", self.log_tail(40)))
    }

    /// Waits (bounded) for the process to end by itself, killing it when the time is up; its exit
    /// code and whole log (the reader has read to the end of it).
    pub fn finish(mut self, within: Duration) -> Exit {
        let code = self.wait_exit(within);
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.read_to_end();
        Exit {
            code,
            log: self.log_text(),
        }
    }

    /// See [`Memory`]; `None` once the process has gone.
    pub fn memory(&self) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let kib = |key: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        Some(Memory {
            rss_kib: kib("VmRSS:")?,
            peak_kib: kib("VmHWM:")?,
            anon_kib: kib("RssAnon:")?,
            file_kib: kib("RssFile:")?,
        })
    }

    /// User plus system CPU time the process has used so far.
    pub fn cpu_seconds(&self, ticks_per_second: f64) -> Option<f64> {
        cpu_seconds(self.pid(), ticks_per_second)
    }
}

/// User plus system CPU time process `pid` has used so far.
pub fn cpu_seconds(pid: u32, ticks_per_second: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; the fields after it are space-separated,
    // starting with field 3 (state), so utime (field 14) and stime (15) are at 11 and 12.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second)
}

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ), from `getconf`; 100 on every common
/// Linux configuration, which is the fallback.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}
