//! Real processes for the tests of `kubectl canary verify`, of the example chat backend and of the
//! ingress gateway stand-in: the examples as cargo builds them, and nginx (Debian's package) as a
//! weighted traffic splitter. All of them listen on 127.0.0.1 only, on ports the system picks, and
//! are stopped when dropped.
//!
//! A test crate that includes it provides `crate::host` (tests/common/host.rs): by `mod common`
//! and `use common::host`, or by including that file alone.
// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

pub use crate::host::free_port;
use crate::host::skip;

/// Longest wait for a process to start listening.
const STARTUP: Duration = Duration::from_secs(30);

/// Longest wait for `cargo build --example NAME`. `cargo test --all-targets` has built the
/// examples already, so this is normally a no-op check; the bound is for a cold build on 2 cores.
const BUILD: Duration = Duration::from_secs(900);

/// The chat backend executable, built once per test binary.
pub fn chat_backend_binary() -> &'static Path {
    example_binary("chat_backend")
}

/// The executable of the example `<name>` (`examples/<name>.rs`, `examples/<name>/main.rs`, or
/// where Cargo.toml puts it: `tools/ingress_standin/`), built once per test binary: cargo does
/// not build examples for `cargo test --test NAME`, and a stale one would test old code.
pub fn example_binary(name: &'static str) -> &'static Path {
    // Each path is leaked once, so callers keep it without holding the lock: it lives as long as
    // the test binary anyway. The lock is held during a build, so tests that want the same
    // example build it once, and a failed build is reported to each without being run again.
    static BINARIES: Mutex<BTreeMap<&str, Result<&'static Path, String>>> =
        Mutex::new(BTreeMap::new());
    let mut binaries = BINARIES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let built = binaries.entry(name).or_insert_with(|| {
        build_example(name).map(|path| -> &'static Path { Box::leak(path.into_boxed_path()) })
    });
    match built {
        Ok(path) => path,
        Err(why) => panic!("cannot build the example {name}: {why}"),
    }
}

fn build_example(name: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = std::process::Command::new(cargo);
    // What cargo sets for a test it runs, and not for the `cargo test` that runs it. ring's build
    // script is rerun when CARGO_MANIFEST_DIR changes, so with them inherited this build and the
    // next `cargo test` each found ring and everything above it stale: a minute of rebuilding
    // on 2 cores, twice, on every run.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key == "OUT_DIR"
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_EXE_")
            || key.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_TARGET_TMPDIR",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&key.as_ref())
        {
            command.env_remove(key.as_ref());
        }
    }
    let mut child = command
        .args([
            "build",
            "--example",
            name,
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    // Read stdout on a thread so a long JSON stream cannot fill the pipe while we poll.
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let deadline = Instant::now() + BUILD;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Ok(None) => {
                let _ = child.kill();
                return Err(format!("cargo build took longer than {BUILD:?}"));
            }
            Err(e) => return Err(format!("waiting for cargo: {e}")),
        }
    };
    let messages = reader.join().map_err(|_| "reader thread panicked")?;
    if !status.success() {
        return Err(format!("cargo build failed: {status}"));
    }
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("cargo reported no {name} executable"))
}

/// A running chat backend.
pub struct Backend {
    child: Child,
    pub addr: SocketAddr,
}

impl Backend {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The backend's environment with every setting it reads removed, so the caller's `env` is all
/// it sees (a developer's shell may have AZURE_* set).
fn backend_command(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(chat_backend_binary());
    for name in [
        "AZURE_API_URL",
        "AZURE_API_KEY",
        "AZURE_MODEL_NAME",
        "AZURE_API_VERSION",
        "UPSTREAM_TIMEOUT_SECONDS",
        "PORT",
        "HOST",
        "UPSTREAM_STREAM",
        "FAULT_EVERY",
        "FAULT_PERCENT",
        "FAULT_STATUS",
        "FAULT_DELAY_MS",
        "FAULT_TTFT_MS",
        "OFFLINE_RESPONSE_MODEL",
        "OFFLINE_TTFT_MS",
        "OFFLINE_TOKENS_PER_SECOND",
        "OFFLINE_OUTPUT_TOKENS",
    ] {
        command.env_remove(name);
    }
    command
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    command
}

/// Starts a backend with `env` and waits until it announces its address.
pub async fn start_backend(env: &[(&str, &str)]) -> Backend {
    let mut child = backend_command(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the chat backend: {e}"));
    let Some(stdout) = child.stdout.take() else {
        panic!("the chat backend has no stdout pipe");
    };
    let mut lines = BufReader::new(stdout).lines();
    let line = match tokio::time::timeout(STARTUP, lines.next_line()).await {
        Ok(Ok(Some(line))) => line,
        other => panic!("the chat backend did not announce its address: {other:?}"),
    };
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    Backend { child, addr }
}

/// Runs a backend that is expected to refuse to start; returns its exit status and stderr.
pub async fn backend_refuses(env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut child = backend_command(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the chat backend: {e}"));
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = tokio::time::timeout(STARTUP, pipe.read_to_string(&mut stderr)).await;
    }
    match tokio::time::timeout(STARTUP, child.wait()).await {
        Ok(Ok(status)) => (status, stderr),
        other => panic!("the chat backend kept running: {other:?}"),
    }
}

/// nginx from the system's packages, or `None` (after saying so loudly) when it is not installed.
/// In CI a missing nginx is a failure: .ci/run installs it.
pub fn nginx(test_name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        skip(
            test_name,
            "nginx is not installed",
            "install Debian's nginx package (apt-get install nginx)",
        );
    }
    found
}

/// nginx on 127.0.0.1 sending requests to `upstreams` in proportion to their weights.
pub struct Splitter {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Splitter {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Splitter {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts nginx as a weighted round-robin balancer over `upstreams` (address, weight). nginx's
/// weighted round robin is deterministic, so 3:1 sends exactly one request in four to the second.
pub async fn start_splitter(nginx: &Path, upstreams: &[(SocketAddr, u32)]) -> Splitter {
    static SEQUENCE: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "canary-splitter-{}-{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {dir:?}: {e}"));
    // The port is picked free and then handed to nginx, so another process may take it in
    // between; a few attempts make that race harmless.
    let mut last_error = String::new();
    for _ in 0..3 {
        let port = free_port();
        let config = dir.join("nginx.conf");
        std::fs::write(&config, nginx_config(&dir, port, upstreams))
            .unwrap_or_else(|e| panic!("writing {config:?}: {e}"));
        let mut child = Command::new(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&config)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting nginx: {e}"));
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                last_error = format!("nginx exited with {status}: {log}");
                break;
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Splitter { child, port, dir };
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                panic!("nginx did not listen on 127.0.0.1:{port} within {STARTUP:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("nginx would not start: {last_error}");
}

/// One process, in the foreground, everything under `dir`: nothing is written outside it and
/// nothing survives the kill.
fn nginx_config(dir: &Path, port: u16, upstreams: &[(SocketAddr, u32)]) -> String {
    let d = dir.display();
    let servers: String = upstreams
        .iter()
        .map(|(addr, weight)| format!("    server {addr} weight={weight};\n"))
        .collect();
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream chat {{
{servers}  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://chat; }}
  }}
}}
"
    )
}

/// `tools/ingress_standin/` as a process: nginx on 127.0.0.1 splitting requests as istiod
/// tells the ingress gateway to, for one host. Needs the cluster's istiod, `xdsroutes` (on PATH
/// after `eval $(hack/cluster.sh env)`) and nginx. Its waits block the thread, as the operator's
/// process harness does: nothing in the test's runtime has to run meanwhile.
pub struct IngressStandin {
    child: std::process::Child,
    pub port: u16,
    dir: PathBuf,
    /// Its stdout, line by line: `applied ...` and the load generator's reports.
    stdout: mpsc::Receiver<String>,
    /// Its stderr so far, for failure messages.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl IngressStandin {
    /// Starts the stand-in for the requests to `host` that istiod (at `xds`) routes to the subsets
    /// of Service `namespace/name` (or to its versions' Services `name-KEY`), with `upstreams`
    /// (subset or key, address), and waits until nginx serves (answering 503 until istiod's first
    /// route is read). `proxy` are the stand-in's flags that say which gateway proxy it is
    /// (`--proxy-namespace`, `--proxy-label`); none: the external Istio ingress gateway.
    pub fn start(
        nginx: &Path,
        xds: &str,
        (namespace, name, host): (&str, &str, &str),
        upstreams: &[(&str, SocketAddr)],
        proxy: &[&str],
    ) -> IngressStandin {
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "canary-standin-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        // The port is picked free and then handed to nginx, so another process may take it in
        // between; a few attempts make that race harmless.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut command = std::process::Command::new(example_binary("ingress_standin"));
            command
                .args(["--namespace", namespace, "--name", name])
                .args(["--xds", xds, "--host", host])
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--dir")
                .arg(&dir)
                .arg("--nginx")
                .arg(nginx)
                .args(proxy);
            for (subset, addr) in upstreams {
                command.arg("--upstream").arg(format!("{subset}={addr}"));
            }
            let mut child = command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("starting the ingress stand-in: {e}"));
            let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
                panic!("the ingress stand-in's output is not piped");
            };
            let (tx, stdout) = mpsc::channel();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            let stderr = Arc::new(Mutex::new(Vec::new()));
            let lines = stderr.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut lines) = lines.lock() {
                        lines.push(line);
                    }
                }
            });
            let mut standin = IngressStandin {
                child,
                port,
                dir: dir.clone(),
                stdout,
                stderr,
            };
            let deadline = Instant::now() + STARTUP;
            loop {
                if standin.logged("listening on") {
                    return standin;
                }
                if let Ok(Some(status)) = standin.child.try_wait() {
                    // The reader may not have reached the end of the output yet.
                    std::thread::sleep(Duration::from_millis(200));
                    last_error = format!("exited with {status}:\n{}", standin.stderr_text());
                    break;
                }
                if Instant::now() >= deadline {
                    panic!(
                        "the ingress stand-in did not listen within {STARTUP:?}:\n{}",
                        standin.stderr_text()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !last_error.contains("Address already in use") {
                break;
            }
        }
        panic!("the ingress stand-in would not start: {last_error}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn logged(&self, fragment: &str) -> bool {
        self.stderr
            .lock()
            .is_ok_and(|lines| lines.iter().any(|line| line.contains(fragment)))
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }

    /// The next `applied ...` line it prints (other stdout lines are skipped), waiting at most
    /// `within`; panics with its stderr if none comes.
    pub fn next_applied(&mut self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.starts_with("applied") => return line,
                Ok(_) => {}
                Err(e) => panic!(
                    "no `applied` line from the ingress stand-in within {within:?} ({e}); \
                     its stderr:\n{}",
                    self.stderr_text()
                ),
            }
        }
    }
}

impl Drop for IngressStandin {
    /// SIGTERM first: the stand-in stops nginx's master and workers, which SIGKILL would leave
    /// running.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
