//! nginx as the gateway's proxy: the process (started, reloaded, stopped) and the files it reads.
//! Everything here waits on nginx, the file system or /proc; the configuration's text is made,
//! purely, in `nginx_config`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::error::{Error, NAME};
use crate::nginx_config::{GENERATION_PATH, Setup};
use crate::plan::Plan;
use crate::upstream::Upstream;

/// Longest wait for nginx to listen, or to run a new configuration.
const NGINX_WAIT: Duration = Duration::from_secs(30);

/// nginx as the gateway's proxy, in the foreground as this process's child.
pub(crate) struct Nginx {
    setup: Setup,
    child: Child,
    probe: reqwest::Client,
}

/// The address to reach a listener on: its own, or loopback when it listens on every address.
pub(crate) fn reachable(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
    } else {
        listen
    }
}

/// The file system's side of [`Setup`]: writing the text it makes, running nginx on it, reading
/// what nginx logged.
impl Setup {
    /// Writes the configuration for `plan` under the next generation, whole or not at all: a
    /// reload must never read half a file.
    fn write_config(&mut self, plan: &Plan) -> Result<(), Error> {
        self.generation += 1;
        let text = self.config(plan)?;
        let path = self.config_path();
        let partial = self.dir.join("nginx.conf.new");
        std::fs::write(&partial, text).map_err(|source| Error::File {
            action: "write",
            path: partial.clone(),
            source,
        })?;
        std::fs::rename(&partial, &path).map_err(|source| Error::File {
            action: "replace",
            path,
            source,
        })
    }

    /// `-p`, `-c` and `-e`: nginx reads and writes nothing outside the directory, not even the
    /// error log it opens before it has read its configuration.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.config_path())
            .arg("-e")
            .arg(self.error_log())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// What nginx logged, for an error message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.error_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

impl Nginx {
    /// Starts nginx with nothing routed (answering 503 until a route is known) and waits until
    /// it serves.
    pub(crate) async fn start(
        binary: PathBuf,
        dir: PathBuf,
        listen: SocketAddr,
        upstreams: Vec<Upstream>,
    ) -> Result<Nginx, Error> {
        std::fs::create_dir_all(&dir).map_err(|source| Error::File {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        // nginx takes a relative -c against its prefix, and a relative prefix against its own
        // compiled-in one: only absolute paths mean what the user typed.
        let dir = std::path::absolute(&dir).map_err(|source| Error::File {
            action: "resolve",
            path: dir,
            source,
        })?;
        // A socket left by an nginx that was killed would make this one's bind fail.
        let _ = std::fs::remove_file(dir.join("unrouted.sock"));
        let probe = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let mut setup = Setup {
            binary,
            dir,
            listen,
            generation: 0,
            upstreams,
        };
        setup.write_config(&Plan::nothing(&setup.upstreams))?;
        let child = setup
            .command()
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| Error::Spawn {
                binary: setup.binary.clone(),
                source,
            })?;
        let mut nginx = Nginx {
            setup,
            child,
            probe,
        };
        match nginx.wait_generation().await {
            Ok(()) => Ok(nginx),
            Err(e) => {
                nginx.stop().await;
                Err(e)
            }
        }
    }

    /// nginx's pid, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Resolves when nginx has exited, which it never should while the stand-in runs: why, with
    /// what it logged.
    pub(crate) async fn exited(&mut self) -> Error {
        let status = self.child.wait().await;
        let status = status.map_or_else(|e| e.to_string(), |s: ExitStatus| s.to_string());
        Error::Nginx(format!(
            "exited with {status}; its log ends:\n{}",
            self.setup.log_tail()
        ))
    }

    /// Waits (bounded) until nginx answers with the generation last written.
    async fn wait_generation(&mut self) -> Result<(), Error> {
        let url = format!("http://{}{GENERATION_PATH}", reachable(self.setup.listen));
        let want = self.setup.generation.to_string();
        let deadline = Instant::now() + NGINX_WAIT;
        let mut seen = String::from("no answer");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Nginx(format!(
                    "exited with {status}; its log ends:\n{}",
                    self.setup.log_tail()
                )));
            }
            if let Ok(response) = self.probe.get(&url).send().await
                && let Ok(body) = response.text().await
            {
                if body.trim() == want {
                    return Ok(());
                }
                seen = format!("generation {}", body.trim());
            }
            if Instant::now() >= deadline {
                return Err(Error::Nginx(format!(
                    "did not serve configuration generation {want} on {} within {NGINX_WAIT:?} \
                     ({seen}); its log ends:\n{}",
                    self.setup.listen,
                    self.setup.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Rewrites the configuration for `plan`, reloads nginx and waits until only workers running
    /// it are left: until then an old worker may still take a request with the old routes.
    pub(crate) async fn apply(&mut self, plan: &Plan) -> Result<(), Error> {
        let old = self.workers();
        self.setup.write_config(plan)?;
        let reload = self
            .setup
            .command()
            .arg("-s")
            .arg("reload")
            .stderr(Stdio::piped())
            .output();
        let output = match tokio::time::timeout(NGINX_WAIT, reload).await {
            Ok(Ok(output)) => output,
            Ok(Err(source)) => {
                return Err(Error::Spawn {
                    binary: self.setup.binary.clone(),
                    source,
                });
            }
            Err(_) => {
                return Err(Error::Nginx(format!(
                    "-s reload did not return within {NGINX_WAIT:?}"
                )));
            }
        };
        if !output.status.success() {
            return Err(Error::Nginx(format!(
                "-s reload failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        self.wait_generation().await?;
        // The new worker answers before the master has told the old one to stop (nginx waits
        // 100 ms in between), and the old one then finishes what it holds.
        let deadline = Instant::now() + NGINX_WAIT;
        loop {
            let left: Vec<u32> = self
                .workers()
                .into_iter()
                .filter(|pid| old.contains(pid))
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Nginx(format!(
                    "workers {left:?} still run the previous configuration {NGINX_WAIT:?} after \
                     the reload; its log ends:\n{}",
                    self.setup.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The pids of nginx's workers: the master's children, from /proc (nginx has no API that
    /// lists them).
    fn workers(&self) -> Vec<u32> {
        let Some(master) = self.child.id() else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| parent(*pid) == Some(master))
            .collect()
    }

    /// Stops nginx and waits (bounded) for it. SIGTERM to the master, which stops its workers:
    /// SIGKILL would leave them serving with nobody to stop them; it is only the last resort.
    pub(crate) async fn stop(mut self) {
        let workers = self.workers();
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let stopped = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        if stopped.is_err() {
            eprintln!("{NAME}: nginx ignored SIGTERM for 10 s; killing it and its workers");
            let mut kill = Command::new("kill");
            kill.arg("-KILL");
            for pid in workers {
                kill.arg(pid.to_string());
            }
            let _ = self.child.start_kill();
            let _ = kill.status().await;
            let _ = self.child.wait().await;
        }
    }
}

/// The parent of process `pid` (`None` once it has gone).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; state and ppid follow the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
