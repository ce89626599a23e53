//! A stand-in for Istio's ingress gateway: nginx, with the weights Istio would give the gateway's
//! Envoy, so that a split the operator writes can be seen to move real requests on a machine with
//! a kube-apiserver but no Envoy (tests, demos, the lab without a mesh).
//!
//! The weights are the ones istiod itself pushes to the ingress gateway, not read from the
//! VirtualService: `xdsroutes` (hack/tools/istio) connects to istiod (`--xds`) as the gateway's
//! proxy, and the first route of the virtual host serving `--host` is followed (the operator's
//! routes have no match conditions, so the first one takes every request), cluster by cluster
//! (`outbound|PORT|SUBSET|<name>.<namespace>.svc.cluster.local`). Traffic is then split by exactly
//! what Istio would program into Envoy: host matching, gateway binding, subsets and all. Each
//! subset is looked up among the `--upstream SUBSET=HOST:PORT` addresses, and nginx's upstream
//! weights are set to the route's.
//! After each change has taken effect it prints one line on stdout, `applied v1=75 v2=25` (subsets
//! in name order; ` unrouted=N` after them when the route gives weight to a subset with no
//! address, whose share is answered 503 as Istio would), which is what scripts and tests wait for;
//! everything else goes to stderr.
//!
//! nginx's weighted round robin is deterministic, so any 100 requests in a row at 75/25 reach the
//! subsets exactly 75 and 25 times. What keeps it so: one worker, so one round-robin state; an
//! `applied` line only once the workers of the previous configuration have gone (after a reload
//! they finish what they hold, and might take another request); no keep-alive towards clients (a
//! kept-alive connection stays with the worker that accepted it); and no retry on the other subset,
//! nor marking a failed one unavailable (either would shift the proportions where Istio's split
//! would show the failure).
//!
//! `--load-rps N` also sends N requests a second through the gateway (`POST --load-path` with
//! `--load-body`) and prints every 5 s how many answers came from each model (the chat backend's
//! `model` field): a shift can be watched as it happens.
//!
//! Run it: `cargo run --example ingress_standin -- --namespace lab --name azureopenaichat
//! --upstream v1=127.0.0.1:5001 --upstream v2=127.0.0.1:5002 --listen 127.0.0.1:8080
//! --dir /tmp/standin --load-rps 10 --xds $CANARY_ISTIOD_XDS --host '*'`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;
use tokio::process::{Child, Command};

/// How the process names itself in its log lines.
const NAME: &str = "ingress gateway stand-in";

/// A path no application serves: it answers the generation of the configuration nginx runs, which
/// is how a reload is known to have taken effect (`nginx -s reload` only sends a signal).
const GENERATION_PATH: &str = "/.ingress-standin/generation";

/// Longest wait for nginx to listen, or to run a new configuration.
const NGINX_WAIT: Duration = Duration::from_secs(30);

/// How often a configuration that nginx did not take is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// How often the load generator reports.
const REPORT: Duration = Duration::from_secs(5);

/// Longest one generated request may take; the chat backend answers offline in milliseconds.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Stand-in for Istio's ingress gateway: keeps nginx's upstream weights equal to the route istiod
/// pushes to the gateway.
#[derive(Parser, Debug)]
#[command(name = "ingress_standin", version)]
struct Cli {
    /// Namespace of the release (of the Service whose subsets the route splits).
    #[arg(long)]
    namespace: String,

    /// Name of the release (of its Service).
    #[arg(long)]
    name: String,

    /// istiod's plaintext xDS address (`hack/cluster.sh env` exports it as CANARY_ISTIOD_XDS).
    #[arg(long, value_name = "HOST:PORT")]
    xds: String,

    /// The host whose requests are followed: the release's gateway host.
    #[arg(long)]
    host: String,

    /// The xDS client [default: xdsroutes on PATH].
    #[arg(long)]
    xdsroutes: Option<PathBuf>,

    /// Address of a subset's pods (repeat for each subset), e.g. v1=127.0.0.1:5001.
    #[arg(long = "upstream", value_name = "SUBSET=HOST:PORT", required = true, value_parser = parse_upstream)]
    upstreams: Vec<Upstream>,

    /// Where the gateway listens.
    #[arg(long, value_name = "HOST:PORT")]
    listen: SocketAddr,

    /// Directory for nginx's configuration, pid file, log and temporary files.
    #[arg(long)]
    dir: PathBuf,

    /// The nginx binary [default: nginx on PATH, else /usr/sbin/nginx].
    #[arg(long)]
    nginx: Option<PathBuf>,

    /// Also send this many requests a second through the gateway.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    load_rps: Option<u32>,

    /// Path the generated requests are sent to.
    #[arg(long, default_value = "/chat")]
    load_path: String,

    /// JSON body of the generated requests.
    #[arg(long, default_value = r#"{"message":"hi"}"#)]
    load_body: String,
}

#[derive(Clone, Debug)]
struct Upstream {
    subset: String,
    addr: SocketAddr,
}

fn parse_upstream(text: &str) -> Result<Upstream, String> {
    let (subset, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not SUBSET=HOST:PORT"))?;
    // The subset is written into nginx's configuration and into `applied` lines.
    if subset.is_empty()
        || !subset
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(format!("{subset:?} is not a subset name"));
    }
    let addr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not HOST:PORT (an IP address and a port): {e}"))?;
    Ok(Upstream {
        subset: subset.to_owned(),
        addr,
    })
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("cannot build an HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("nginx {0}")]
    Nginx(String),
    #[error("cannot handle signals: {0}")]
    Signal(std::io::Error),
    #[error("xdsroutes (following istiod at {0}) exited: {1}")]
    XdsEnded(String, String),
}

/// The weight each subset gets, by subset name; the subsets are exactly the `--upstream` ones.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Split {
    weights: BTreeMap<String, u32>,
    /// The weight of destinations with no `--upstream`. Istio answers their share with 503 (no
    /// healthy upstream); so does the gateway, rather than hand it to the other subsets.
    unrouted: u32,
}

/// `v1=75 v2=25` (the `applied` line), with ` unrouted=N` only when some weight goes nowhere.
impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (subset, weight) in &self.weights {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{subset}={weight}")?;
        }
        if self.unrouted > 0 {
            write!(f, " unrouted={}", self.unrouted)?;
        }
        Ok(())
    }
}

impl Split {
    /// Every subset at 0: what a gateway does with no route (it answers 503 here).
    fn nothing(upstreams: &[Upstream]) -> Split {
        Split {
            weights: upstreams.iter().map(|u| (u.subset.clone(), 0)).collect(),
            unrouted: 0,
        }
    }
}

/// One push of `xdsroutes`: the gateway's virtual hosts and the clusters of each route.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Push {
    virtual_hosts: Vec<PushedHost>,
}

#[derive(serde::Deserialize)]
struct PushedHost {
    domains: Vec<String>,
    routes: Vec<PushedRoute>,
}

#[derive(serde::Deserialize)]
struct PushedRoute {
    clusters: Vec<PushedCluster>,
}

#[derive(serde::Deserialize)]
struct PushedCluster {
    name: String,
    weight: u32,
}

impl Split {
    /// The split of the first route of the virtual host serving `host` in istiod's push, for the
    /// subsets of service `fqdn`; weight to any other cluster is unrouted.
    fn of_push(
        push: &Push,
        host: &str,
        fqdn: &str,
        upstreams: &[Upstream],
    ) -> (Split, Vec<String>) {
        let mut split = Split::nothing(upstreams);
        let mut warnings = Vec::new();
        // Envoy prefers a domain naming the host (with any port) to the catch-all.
        let names = |v: &&PushedHost| {
            v.domains
                .iter()
                .any(|d| d == host || d.strip_suffix(":*") == Some(host))
        };
        let any = |v: &&PushedHost| v.domains.iter().any(|d| d == "*");
        let vhost = push
            .virtual_hosts
            .iter()
            .find(names)
            .or_else(|| push.virtual_hosts.iter().find(any));
        let Some(route) = vhost.and_then(|v| v.routes.first()) else {
            warnings.push(format!(
                "istiod gives the gateway no route for host {host}: nothing is routed"
            ));
            return (split, warnings);
        };
        for cluster in &route.clusters {
            let mut parts = cluster.name.split('|');
            let subset = match (parts.next(), parts.nth(1), parts.next()) {
                (Some("outbound"), Some(subset), Some(of)) if of == fqdn => Some(subset),
                _ => None,
            };
            match subset.and_then(|s| split.weights.get_mut(s)) {
                Some(total) => *total = total.saturating_add(cluster.weight),
                None => {
                    warnings.push(format!(
                        "the route sends weight {} to cluster {}, which has no --upstream: that \
                         share is answered 503",
                        cluster.weight, cluster.name
                    ));
                    split.unrouted = split.unrouted.saturating_add(cluster.weight);
                }
            }
        }
        (split, warnings)
    }
}

/// A split to apply, with what of it cannot be followed.
type Update = (Split, Vec<String>);

/// Follows istiod through `xdsroutes`, sending the split of each route configuration it pushes.
async fn follow_istiod(
    xdsroutes: PathBuf,
    address: String,
    host: String,
    fqdn: String,
    upstreams: Vec<Upstream>,
    tx: tokio::sync::mpsc::Sender<Update>,
) -> Error {
    use tokio::io::AsyncBufReadExt;
    let mut child = match Command::new(&xdsroutes)
        .args(["-addr", &address])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(source) => {
            return Error::Spawn {
                binary: xdsroutes,
                source,
            };
        }
    };
    let Some(stdout) = child.stdout.take() else {
        return Error::XdsEnded(address, "its output is not piped".to_owned());
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<Push>(&line) {
                Ok(push) => {
                    let (split, warnings) = Split::of_push(&push, &host, &fqdn, &upstreams);
                    if tx.send((split, warnings)).await.is_err() {
                        return Error::XdsEnded(address, "no longer read".to_owned());
                    }
                }
                Err(e) => eprintln!("{NAME}: unreadable line from xdsroutes ({e}): {line}"),
            },
            Ok(None) => break,
            Err(e) => return Error::XdsEnded(address, e.to_string()),
        }
    }
    let status = child
        .wait()
        .await
        .map_or_else(|e| e.to_string(), |s| s.to_string());
    Error::XdsEnded(address, status)
}

/// The program `name` in a directory of PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `xdsroutes` from PATH (`hack/cluster.sh env` puts the cluster's tools there).
fn default_xdsroutes() -> PathBuf {
    on_path("xdsroutes").unwrap_or_else(|| PathBuf::from("xdsroutes"))
}

/// What nginx is run with: its binary and its files.
struct Setup {
    binary: PathBuf,
    dir: PathBuf,
    listen: SocketAddr,
    upstreams: Vec<Upstream>,
    /// Of the configuration last written; nginx answers it at [`GENERATION_PATH`].
    generation: u64,
}

/// nginx as the gateway's proxy, in the foreground as this process's child.
struct Nginx {
    setup: Setup,
    child: Child,
    probe: reqwest::Client,
}

/// The address to reach a listener on: its own, or loopback when it listens on every address.
fn reachable(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
    } else {
        listen
    }
}

/// nginx's configuration language: a path in double quotes, so spaces are fine.
fn quoted(path: &Path) -> Result<String, Error> {
    quoted_prefixed("", path)
}

/// [`quoted`], with `prefix` (such as `unix:`) inside the quotes.
fn quoted_prefixed(prefix: &str, path: &Path) -> Result<String, Error> {
    let text = path.to_str().filter(|t| !t.contains(['"', '\\', '$']));
    match text {
        Some(text) => Ok(format!("\"{prefix}{text}\"")),
        None => Err(Error::Usage(format!(
            "--dir {} cannot be written into nginx's configuration",
            path.display()
        ))),
    }
}

/// `nginx` from PATH, else Debian's, which installs it outside a user's PATH.
fn default_nginx() -> PathBuf {
    on_path("nginx").unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

impl Setup {
    fn config_path(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }

    fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// The whole configuration for `split`. One worker, so one round-robin state decides every
    /// request; a worker that outlives a reload is given 5 s to finish its requests, which bounds
    /// how long an apply waits for it to go.
    fn config(&self, split: &Split) -> Result<String, Error> {
        let d = |name: &str| quoted(&self.dir.join(name));
        // Answers the share of subsets with no address: through nginx itself, so the round robin
        // takes that share out of the subsets' turns.
        let unrouted = quoted_prefixed("unix:", &self.dir.join("unrouted.sock"))?;
        let mut servers: String = self
            .upstreams
            .iter()
            .filter_map(|u| {
                let weight = split.weights.get(&u.subset).copied().unwrap_or(0);
                // nginx's weights start at 1; a subset at 0 is left out, so it gets nothing.
                (weight > 0)
                    .then(|| format!("    server {} weight={weight} max_fails=0;\n", u.addr))
            })
            .collect();
        if split.unrouted > 0 {
            servers.push_str(&format!(
                "    server {unrouted} weight={} max_fails=0;\n",
                split.unrouted
            ));
        }
        let (upstream, route) = if servers.is_empty() {
            (String::new(), "return 503;".to_owned())
        } else {
            (
                format!("  upstream subsets {{\n{servers}  }}\n"),
                "proxy_pass http://subsets; proxy_next_upstream off;".to_owned(),
            )
        };
        Ok(format!(
            "# Written by the ingress gateway stand-in (examples/ingress_standin.rs); generation {generation}: {split}
daemon off;
worker_processes 1;
worker_shutdown_timeout 5s;
pid {pid};
error_log {error_log} notice;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_timeout 0;
  client_body_temp_path {body};
  proxy_temp_path {proxy};
  fastcgi_temp_path {fastcgi};
  uwsgi_temp_path {uwsgi};
  scgi_temp_path {scgi};
{upstream}  server {{
    listen {listen};
    location = {GENERATION_PATH} {{ return 200 \"{generation}\\n\"; }}
    location / {{ {route} }}
  }}
  server {{
    listen {unrouted};
    return 503;
  }}
}}
",
            generation = self.generation,
            pid = d("nginx.pid")?,
            error_log = quoted(&self.error_log())?,
            body = d("body")?,
            proxy = d("proxy")?,
            fastcgi = d("fastcgi")?,
            uwsgi = d("uwsgi")?,
            scgi = d("scgi")?,
            listen = self.listen,
        ))
    }

    /// Writes the configuration for `split` under the next generation, whole or not at all: a
    /// reload must never read half a file.
    fn write_config(&mut self, split: &Split) -> Result<(), Error> {
        self.generation += 1;
        let text = self.config(split)?;
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
    /// Starts nginx with every subset at 0 (answering 503 until a route is known) and waits until
    /// it serves.
    async fn start(
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
        setup.write_config(&Split::nothing(&setup.upstreams))?;
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

    /// Rewrites the configuration for `split`, reloads nginx and waits until only workers running
    /// it are left: until then an old worker may still take a request with the old weights.
    async fn apply(&mut self, split: &Split) -> Result<(), Error> {
        let old = self.workers();
        self.setup.write_config(split)?;
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
    async fn stop(mut self) {
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

/// Resolves on SIGTERM or SIGINT. Both are registered before it is first polled: a signal that
/// arrives while an apply is under way must still stop the process, not kill it.
fn shutdown() -> Result<impl Future<Output = ()>, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// A task that is aborted when this is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// The task's result; called once its channel has closed, so it has ended or is ending.
    async fn finish(&mut self) -> Option<T> {
        (&mut self.0).await.ok()
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let stop = shutdown()?;
    tokio::pin!(stop);
    let mut subsets: Vec<&str> = cli.upstreams.iter().map(|u| u.subset.as_str()).collect();
    subsets.sort_unstable();
    if let Some(pair) = subsets.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(Error::Usage(format!(
            "subset {} has more than one --upstream",
            pair[0]
        )));
    }
    // reqwest is built without a TLS provider of its own; use ring, which kube's client links.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (tx, mut updates) = tokio::sync::mpsc::channel::<Update>(16);
    let fqdn = format!("{}.{}.svc.cluster.local", cli.name, cli.namespace);
    let what = format!(
        "the route istiod at {} pushes for host {} (service {fqdn})",
        cli.xds, cli.host
    );
    let xdsroutes = cli.xdsroutes.clone().unwrap_or_else(default_xdsroutes);
    let task = follow_istiod(
        xdsroutes,
        cli.xds.clone(),
        cli.host.clone(),
        fqdn,
        cli.upstreams.clone(),
        tx,
    );
    let source = tokio::spawn(task);
    // Ends the source (and xdsroutes with it) however this function returns.
    let mut source = AbortOnDrop(source);

    let binary = cli.nginx.clone().unwrap_or_else(default_nginx);
    let mut nginx =
        Nginx::start(binary, cli.dir.clone(), cli.listen, cli.upstreams.clone()).await?;
    eprintln!(
        "{NAME}: nginx (pid {}) listening on {}, answering 503 until {what} is read",
        nginx.child.id().unwrap_or_default(),
        cli.listen
    );

    let load = match cli.load_rps {
        Some(rps) => {
            let url = format!("http://{}{}", reachable(cli.listen), cli.load_path);
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(LOAD_TIMEOUT)
                .build()?;
            eprintln!("{NAME}: sending {rps} requests a second to {url}");
            Some(tokio::spawn(generate_load(
                client,
                url,
                cli.load_body.clone(),
                rps,
            )))
        }
        None => None,
    };

    let mut desired: Option<Split> = None;
    let mut applied: Option<Split> = None;
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            () = &mut stop => break Ok(()),
            status = nginx.child.wait() => {
                let status = status.map_or_else(|e| e.to_string(), |s: ExitStatus| s.to_string());
                break Err(Error::Nginx(format!("exited with {status}; its log ends:\n{}", nginx.setup.log_tail())));
            }
            update = updates.recv() => match update {
                None => break Err(source
                    .finish()
                    .await
                    .unwrap_or_else(|| Error::Usage(format!("following {what} stopped")))),
                Some((split, warnings)) => {
                    if desired.as_ref() != Some(&split) {
                        for warning in warnings {
                            eprintln!("{NAME}: {warning}");
                        }
                    }
                    desired = Some(split);
                }
            },
            _ = retry.tick() => {}
        }
        let Some(split) = desired.as_ref() else {
            continue;
        };
        if applied.as_ref() == Some(split) {
            continue;
        }
        let outcome = tokio::select! {
            () = &mut stop => break Ok(()),
            outcome = nginx.apply(split) => outcome,
        };
        match outcome {
            Ok(()) => {
                println!("applied {split}");
                applied = Some(split.clone());
            }
            Err(e) => {
                eprintln!("{NAME}: applying {split}: {e}; trying again in {RETRY:?}");
                // Whatever nginx serves now, it is not known to be what was last applied.
                applied = None;
            }
        }
    };
    if let Some(load) = load {
        load.abort();
    }
    nginx.stop().await;
    if result.is_ok() {
        eprintln!("{NAME}: stopped");
    }
    result
}

/// Sends `rps` requests a second to `url` and prints every [`REPORT`] how the answers of that
/// window were spread over models. Requests that have not come back are not waited for, but at
/// most a few seconds' worth are in flight: a stalled gateway is reported, not piled onto.
async fn generate_load(client: reqwest::Client, url: String, body: String, rps: u32) {
    let counts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let limit = usize::try_from(rps.saturating_mul(5)).unwrap_or(usize::MAX);
    let mut send = tokio::time::interval(Duration::from_secs(1) / rps);
    send.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = tokio::time::interval_at(tokio::time::Instant::now() + REPORT, REPORT);
    let mut sent = 0_u64;
    loop {
        tokio::select! {
            _ = send.tick() => {
                if in_flight.load(Ordering::Relaxed) >= limit {
                    count(&counts, "skipped".to_owned());
                    continue;
                }
                sent += 1;
                in_flight.fetch_add(1, Ordering::Relaxed);
                let (client, url, body) = (client.clone(), url.clone(), body.clone());
                let (counts, in_flight) = (counts.clone(), in_flight.clone());
                tokio::spawn(async move {
                    let outcome = ask(&client, url, body).await;
                    count(&counts, outcome);
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                });
            }
            _ = report.tick() => {
                let window = counts.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default();
                let answers: Vec<String> = window.iter().map(|(k, n)| format!("{k}={n}")).collect();
                println!("load {}s: sent={sent} {}", REPORT.as_secs(), answers.join(" "));
                sent = 0;
            }
        }
    }
}

fn count(counts: &Mutex<BTreeMap<String, u64>>, key: String) {
    if let Ok(mut counts) = counts.lock() {
        *counts.entry(key).or_default() += 1;
    }
}

/// One request; its outcome is the model that answered, or why none did.
async fn ask(client: &reqwest::Client, url: String, body: String) -> String {
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) if e.is_timeout() => return "timeout".to_owned(),
        Err(_) => return "error".to_owned(),
    };
    let status = response.status();
    if !status.is_success() {
        return format!("status_{}", status.as_u16());
    }
    match response.json::<Value>().await {
        Ok(answer) => match answer.get("model").and_then(Value::as_str) {
            Some(model) => model.to_owned(),
            None => "no_model".to_owned(),
        },
        Err(_) => "not_json".to_owned(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push(json: serde_json::Value) -> Push {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn upstreams() -> Vec<Upstream> {
        ["v1=127.0.0.1:1", "v2=127.0.0.1:2"]
            .iter()
            .map(|u| parse_upstream(u).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    /// What the gateway would do with a request for the host, as istiod's push says.
    #[test]
    fn the_split_is_read_from_the_pushed_route_of_the_host() {
        let fqdn = "chat.ns.svc.cluster.local";
        let cluster = |subset: &str, weight: u32| json!({"name": format!("outbound|5000|{subset}|{fqdn}"), "weight": weight});
        let vhost = |domains: &[&str], clusters: Vec<serde_json::Value>| json!({"domains": domains, "routes": [{"clusters": clusters}]});
        let table = [
            // The host's own virtual host, before a catch-all of another release.
            (
                vec![
                    vhost(
                        &["*"],
                        vec![
                            json!({"name": "outbound|80||other.x.svc.cluster.local", "weight": 100}),
                        ],
                    ),
                    vhost(
                        &["chat.test", "chat.test:*"],
                        vec![cluster("v1", 75), cluster("v2", 25)],
                    ),
                ],
                "v1=75 v2=25",
            ),
            // istiod leaves a subset at 0 out.
            (
                vec![vhost(&["chat.test"], vec![cluster("v2", 100)])],
                "v1=0 v2=100",
            ),
            // A subset with no address, or another service's cluster: answered 503.
            (
                vec![vhost(
                    &["chat.test"],
                    vec![cluster("v1", 75), cluster("v3", 25)],
                )],
                "v1=75 v2=0 unrouted=25",
            ),
            // Only a catch-all: it serves the host.
            (vec![vhost(&["*"], vec![cluster("v1", 100)])], "v1=100 v2=0"),
            // No virtual host for the host: nothing is routed.
            (
                vec![vhost(&["other.test"], vec![cluster("v1", 100)])],
                "v1=0 v2=0",
            ),
        ];
        for (hosts, expected) in table {
            let push = push(json!({"virtualHosts": hosts}));
            let (split, _) = Split::of_push(&push, "chat.test", fqdn, &upstreams());
            assert_eq!(split.to_string(), expected);
        }
    }
}
