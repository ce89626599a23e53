//! Real processes for the tests of `kubectl canary verify` and of the example chat backend: the
//! backend as cargo builds it, and nginx (Debian's package) as a weighted traffic splitter. All of
//! them listen on 127.0.0.1 only, on ports the system picks, and are killed when dropped.
//!
//! A test crate that includes it provides `crate::host` (tests/common/host.rs): by `mod common`
//! and `use common::host`, or by including that file alone.
// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

pub use crate::host::free_port;
use crate::host::skip;

/// Longest wait for a process to start listening.
const STARTUP: Duration = Duration::from_secs(30);

/// Longest wait for `cargo build --example chat_backend`. `cargo test --all-targets` has built
/// it already, so this is normally a no-op check; the bound is for a cold build on 2 cores.
const BUILD: Duration = Duration::from_secs(900);

/// The chat backend executable, built once per test binary.
pub fn chat_backend_binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(build_chat_backend) {
        Ok(path) => path,
        Err(why) => panic!("cannot build the example chat backend: {why}"),
    }
}

fn build_chat_backend() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut child = std::process::Command::new(cargo)
        .args([
            "build",
            "--example",
            "chat_backend",
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
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "chat_backend")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo reported no chat_backend executable".to_owned())
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
        "FAULT_EVERY",
        "FAULT_STATUS",
        "FAULT_DELAY_MS",
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
