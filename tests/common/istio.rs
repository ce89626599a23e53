//! Istio's own judgement of what the operator writes, from the istiod that `hack/cluster.sh up`
//! runs beside the apiserver: `istioctl analyze` of a namespace, and the route configuration
//! istiod sends the ingress gateway (read by `xdsroutes`, hack/tools/istio/xdsroutes, which
//! connects as the gateway's proxy would). The schema accepting an object proves little: a
//! VirtualService with a wrong host, gateway or subset is accepted and routes nothing.
//!
//! Imports nothing from the rest of the test kit, so that the bench can include it with
//! `#[path = "../../tests/common/istio.rs"]`.
// Each includer uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Longest a single `istioctl analyze` may take; it takes about 0.2 s.
const ANALYZE_TIMEOUT: Duration = Duration::from_secs(60);

/// istiod's plaintext xDS address, when the cluster runs istiod: the port is in the cluster's
/// run directory (`$CANARY_RUN_DIR`), where `KUBECONFIG` lives.
pub fn xds_address() -> Option<String> {
    let kubeconfig = PathBuf::from(std::env::var_os("KUBECONFIG")?);
    let port = std::fs::read_to_string(kubeconfig.parent()?.join("ports/istiod-xds")).ok()?;
    Some(format!("127.0.0.1:{}", port.trim()))
}

/// A tool of the cluster's bin directory (on PATH after `eval $(hack/cluster.sh env)`).
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// One finding of `istioctl analyze`.
#[derive(Clone, Debug, Deserialize)]
pub struct Finding {
    pub code: String,
    pub level: String,
    pub message: String,
    #[serde(default)]
    pub origin: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}] ({}) {}",
            self.level, self.code, self.origin, self.message
        )
    }
}

/// `istioctl analyze -n namespace` against the test cluster: every finding, of every level.
pub fn analyze(namespace: &str) -> Result<Vec<Finding>, String> {
    analyze_with(namespace, &[])
}

/// [`analyze`] of the cluster as it would be with the objects of `files` added (istioctl
/// merges local files into what it reads from the cluster): what Istio would say of an object
/// before anybody applies it.
pub fn analyze_with(namespace: &str, files: &[&std::path::Path]) -> Result<Vec<Finding>, String> {
    let istioctl = tool("istioctl").ok_or("no istioctl on PATH (hack/build-tools.sh builds it)")?;
    let mut child = Command::new(&istioctl)
        .args(["analyze", "--namespace", namespace, "--output", "json"])
        .args(files)
        // analyze exits non-zero when it finds something; its JSON says what.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", istioctl.display()))?;
    let deadline = Instant::now() + ANALYZE_TIMEOUT;
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "istioctl analyze -n {namespace} took over {ANALYZE_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("istioctl analyze -n {namespace}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // With nothing to report it prints a sentence, not JSON.
    if stdout.trim().is_empty() || !stdout.trim_start().starts_with('[') {
        if output.status.success() {
            return Ok(Vec::new());
        }
        return Err(format!(
            "istioctl analyze -n {namespace} failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    serde_json::from_str(&stdout).map_err(|e| {
        format!("istioctl analyze -n {namespace} printed unreadable JSON ({e}): {stdout}")
    })
}

/// The Errors and Warnings `istioctl analyze` reports for `namespace`, one line each; Info (such
/// as "the namespace is not enabled for injection", true of every test namespace) is no problem.
pub fn problems(namespace: &str) -> Result<Vec<String>, String> {
    Ok(analyze(namespace)?
        .iter()
        .filter(|f| f.level == "Error" || f.level == "Warning")
        .map(Finding::to_string)
        .collect())
}

/// Panics with every problem `istioctl analyze` reports for `namespace` ([`problems`]).
pub fn assert_analyze_clean(namespace: &str) {
    match problems(namespace) {
        Ok(problems) => assert!(
            problems.is_empty(),
            "istioctl analyze finds problems in namespace {namespace}:\n  {}",
            problems.join("\n  ")
        ),
        Err(why) => panic!("istioctl analyze of namespace {namespace}: {why}"),
    }
}

/// One cluster of a route, as `xdsroutes` prints it: `outbound|PORT|SUBSET|FQDN` and its weight.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    pub weight: u32,
}

impl Cluster {
    /// The subset and the service's FQDN of an `outbound|port|subset|fqdn` cluster.
    pub fn subset_of(&self) -> Option<(&str, &str)> {
        let mut parts = self.name.split('|');
        let (Some("outbound"), Some(_port), Some(subset), Some(fqdn), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        Some((subset, fqdn))
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub name: String,
    pub clusters: Vec<Cluster>,
    pub direct_response: u32,
    #[serde(default, rename = "match")]
    pub match_: RouteMatch,
}

impl Route {
    /// Whether the route takes requests by their headers (a sticky release's match routes).
    pub fn by_headers(&self) -> bool {
        !self.match_.headers.is_empty()
    }
}

/// What a route's requests must be, as `xdsroutes` prints it; only the headers are read here.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RouteMatch {
    #[serde(default)]
    pub headers: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
}

/// One route configuration istiod pushed to the gateway.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Push {
    pub received_unix_nano: i64,
    pub version: String,
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
}

impl Push {
    /// What the gateway does with a new request for `host`: the first route of the virtual host
    /// serving that domain that does not match on headers (the operator's split route matches
    /// every request; a sticky release's match routes before it take only those that carry a
    /// version), as subset → weight, for the clusters of service `fqdn`. Clusters of any other service
    /// are returned under their full name, so a test sees them rather than miss them. `None`:
    /// no virtual host serves `host`.
    pub fn split(&self, host: &str, fqdn: &str) -> Option<BTreeMap<String, u32>> {
        // As Envoy picks: a domain naming the host (with or without a port) before the catch-all.
        let serves = |exact: bool| {
            move |v: &&VirtualHost| {
                v.domains.iter().any(|d| {
                    if exact {
                        d == host || d.strip_suffix(":*") == Some(host)
                    } else {
                        d == "*"
                    }
                })
            }
        };
        let vhost = (self.virtual_hosts.iter().find(serves(true)))
            .or_else(|| self.virtual_hosts.iter().find(serves(false)))?;
        let mut split = BTreeMap::new();
        if let Some(route) = vhost.routes.iter().find(|r| !r.by_headers()) {
            for cluster in &route.clusters {
                let key = match cluster.subset_of() {
                    Some((subset, of)) if of == fqdn => subset.to_owned(),
                    _ => cluster.name.clone(),
                };
                *split.entry(key).or_insert(0) += cluster.weight;
            }
        }
        Some(split)
    }
}

/// `xdsroutes` following istiod: every route configuration pushed to the ingress gateway for
/// its HTTP port 80, as it arrives. The process is killed when this is dropped.
pub struct RouteWatch {
    child: Child,
    pushes: mpsc::Receiver<Push>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The last push received.
    latest: Option<Push>,
}

impl RouteWatch {
    /// Connects to the cluster's istiod as the AKS external ingress gateway's proxy. `Err`: no
    /// istiod in this cluster, or no `xdsroutes`.
    pub fn start() -> Result<RouteWatch, String> {
        RouteWatch::start_as(&[])
    }

    /// As the proxy of another gateway workload: a pod in `namespace` with `label` (`key=value`),
    /// which Istio Gateways' selectors, and the test kit's Gateways of class `istio`, match.
    pub fn gateway(namespace: &str, label: &str) -> Result<RouteWatch, String> {
        RouteWatch::start_as(&[
            "-namespace",
            namespace,
            "-pod",
            "gateway-0",
            "-label",
            label,
        ])
    }

    /// As the sidecar of a pod in `namespace`: the mesh's outbound routes for `port` (route
    /// configuration named by the port), which a VirtualService bound to `mesh` changes.
    pub fn sidecar(namespace: &str, port: u16) -> Result<RouteWatch, String> {
        let port = port.to_string();
        RouteWatch::start_as(&[
            "-type",
            "sidecar",
            "-namespace",
            namespace,
            "-pod",
            "client-0",
            "-route",
            &port,
        ])
    }

    /// `xdsroutes` with `proxy` (its flags that say which proxy it is; none: the external
    /// ingress gateway's).
    fn start_as(proxy: &[&str]) -> Result<RouteWatch, String> {
        let address = xds_address().ok_or(
            "the cluster runs no istiod (no ports/istiod-xds in its run dir; \
             `hack/cluster.sh up` starts it unless CANARY_ISTIOD=false)",
        )?;
        let binary =
            tool("xdsroutes").ok_or("no xdsroutes on PATH (hack/build-tools.sh builds it)")?;
        let mut child = Command::new(&binary)
            .args(["-addr", &address])
            .args(proxy)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running {}: {e}", binary.display()))?;
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            return Err("xdsroutes' output is not piped".to_owned());
        };
        let (tx, pushes) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                match serde_json::from_str::<Push>(&line) {
                    Ok(push) => {
                        if tx.send(push).is_err() {
                            break;
                        }
                    }
                    Err(e) => eprintln!("xdsroutes printed an unreadable line ({e}): {line}"),
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut lines) = lines.lock() {
                    lines.push(line);
                }
            }
        });
        Ok(RouteWatch {
            child,
            pushes,
            stderr,
            latest: None,
        })
    }

    fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }

    /// The next push that satisfies `wanted` (the last one received counts), waiting at most
    /// `within`; `None` if none came. Polled, not blocked on: the operator under test may run on
    /// this thread's runtime. Panics if `xdsroutes` has exited.
    pub async fn next_matching(
        &mut self,
        within: Duration,
        wanted: impl Fn(&Push) -> bool,
    ) -> Option<Push> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(push) = &self.latest
                && wanted(push)
            {
                return Some(push.clone());
            }
            match self.pushes.try_recv() {
                Ok(push) => self.latest = Some(push),
                Err(mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(mpsc::TryRecvError::Empty) => return None,
                Err(mpsc::TryRecvError::Disconnected) => {
                    panic!("xdsroutes exited; its stderr:\n{}", self.stderr_text())
                }
            }
        }
    }

    /// Waits (at most `within`) until the gateway's route for `host` splits service `fqdn`'s
    /// subsets as `expected` (subsets at 0 absent, as istiod leaves them out), and returns the
    /// push that did. Panics with the last split seen otherwise.
    pub async fn wait_split(
        &mut self,
        host: &str,
        fqdn: &str,
        expected: &[(&str, u32)],
        within: Duration,
    ) -> Push {
        let want: BTreeMap<String, u32> = expected
            .iter()
            .filter(|(_, w)| *w > 0)
            .map(|(s, w)| ((*s).to_owned(), *w))
            .collect();
        let matching = self
            .next_matching(within, |push| {
                push.split(host, fqdn).as_ref() == Some(&want)
            })
            .await;
        match matching {
            Some(push) => push,
            None => panic!(
                "istiod did not send the ingress gateway {want:?} for host {host} (service \
                 {fqdn}) within {within:?}; last split seen: {:?} (push {:?}); xdsroutes' \
                 stderr:\n{}",
                self.latest.as_ref().and_then(|p| p.split(host, fqdn)),
                self.latest.as_ref().map(|p| &p.version),
                self.stderr_text()
            ),
        }
    }
}

impl Drop for RouteWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
