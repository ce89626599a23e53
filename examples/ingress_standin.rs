//! A stand-in for Istio's ingress gateway: nginx, routing as Istio would program the gateway's
//! Envoy, so that what the operator writes can be seen to move real requests on a machine with a
//! kube-apiserver but no Envoy (tests, demos, the lab without a mesh).
//!
//! The routes are the ones istiod itself pushes to the ingress gateway, not read from the
//! VirtualService or HTTPRoute: `xdsroutes` (hack/tools/istio) connects to istiod (`--xds`) as the
//! gateway's proxy, and the routes of the virtual host serving `--host` are followed in Envoy's
//! order, the first that matches taking the request: routes with conditions (header matchers:
//! exact, regex, prefix, suffix, contains, present, inverted or not; and path prefix, exact or
//! regex), then the first route without any, which takes the rest. Traffic is then routed by
//! exactly what Istio would program into Envoy: host matching, gateway binding, subsets, match
//! order and all. A route's clusters are looked up among the `--upstream KEY=HOST:PORT` addresses:
//! `outbound|PORT|KEY|<name>.<namespace>.svc.cluster.local` (a DestinationRule's subset KEY of
//! Service `--name`), or `outbound|PORT||<name>-KEY.<namespace>.svc.cluster.local` (Service
//! `<name>-KEY`, one per version, as the Gateway API's backendRefs name them). Each route is an nginx
//! upstream weighted as the route's clusters are, and the response headers Envoy would add (the
//! route's, then the answering cluster's: the sticky Set-Cookie of a weighted destination) are
//! added to the answers it routes.
//!
//! After each change has taken effect it prints one line on stdout, which is what scripts and tests
//! wait for; everything else goes to stderr. The line is `applied v1=75 v2=25`: the split of the
//! route that takes the rest (keys in name order; ` unrouted=N` after them when the route gives
//! weight to a cluster with no address, whose share is answered 503 as Istio would; every key at 0
//! when there is no such route; ` status=N` when that route is a direct response), then one
//! ` match:DEST` per route with conditions, in Envoy's order: DEST is the key that gets all of it
//! (`match:v2`), else its split (`match:v1=50,v2=50`, `match:unrouted`), or the status it answers
//! (`match:404`). For the sticky routes of a 75/25 release: `applied v1=75 v2=25 match:v2 match:v1`.
//!
//! A route the stand-in cannot follow is never silently routed otherwise: a condition it cannot
//! test (query parameters, a range matcher, ...) leaves the route out, a redirect is answered 503,
//! response headers are only ever appended, and each says so on stderr with a `WARNING`. What nginx
//! cannot see at all: a header sent with an empty value counts as absent, and headers a route would
//! remove are kept (warned about). Requests no route takes are answered 404, as Envoy does, and
//! every request 503 when no virtual host serves the host.
//!
//! By default `xdsroutes` connects as the AKS external ingress gateway's proxy (what an Istio
//! `Gateway` with selector `istio: aks-istio-ingressgateway-external` binds to). A Gateway API
//! `Gateway` binds instead to the workloads of its Service (`<gateway>-istio` in its namespace,
//! selecting `gateway.networking.k8s.io/gateway-name: <gateway>`, for one istiod would deploy; the
//! Service named in `spec.addresses`, in the Gateway's own namespace, for a manual deployment):
//! `--proxy-namespace` and `--proxy-label` say which, and `--route-config` is `http.<target port>`
//! of that Service (`http.8080` for istio-system/istio-ingressgateway).
//!
//! nginx's weighted round robin is deterministic, so any 100 requests in a row that a route with
//! 75/25 takes reach its keys exactly 75 and 25 times. What keeps it so: one worker, so one
//! round-robin state per route; an `applied` line only once the workers of the previous
//! configuration have gone (after a reload they finish what they hold, and might take another
//! request); no keep-alive towards clients (a kept-alive connection stays with the worker that
//! accepted it); and no retry on the other key, nor marking a failed one unavailable (either would
//! shift the proportions where Istio's split would show the failure).
//!
//! `--load-rps N` also sends N requests a second through the gateway (`POST --load-path` with
//! `--load-body`) and prints every 5 s how many answers came from each model (the chat backend's
//! `model` field): a shift can be watched as it happens.
//!
//! Run it: `cargo run --example ingress_standin -- --namespace lab --name azureopenaichat
//! --upstream v1=127.0.0.1:5001 --upstream v2=127.0.0.1:5002 --listen 127.0.0.1:8080
//! --dir /tmp/standin --load-rps 10 --xds $CANARY_ISTIOD_XDS --host '*'`; behind a Gateway API
//! Gateway `chat` of namespace `lab`, add `--proxy-namespace lab
//! --proxy-label gateway.networking.k8s.io/gateway-name=chat`.

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
    /// Namespace of the release (of the Services whose clusters the routes name).
    #[arg(long)]
    namespace: String,

    /// Name of the release: of its Service (whose subsets are the keys), or the prefix of its
    /// Services `NAME-KEY`, one per version.
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

    /// Namespace of the gateway proxy that xdsroutes connects as [default: xdsroutes', that of
    /// the AKS external ingress gateway]. A Gateway API Gateway binds to the proxies of its
    /// Service, in the Gateway's namespace.
    #[arg(long, value_name = "NAMESPACE")]
    proxy_namespace: Option<String>,

    /// Pod name of that proxy [default: xdsroutes'].
    #[arg(long, value_name = "POD")]
    proxy_pod: Option<String>,

    /// A label of that proxy's pod (repeat), which Istio Gateway selectors and Gateway API
    /// Services select by, e.g. gateway.networking.k8s.io/gateway-name=chat [default: xdsroutes',
    /// istio=aks-istio-ingressgateway-external].
    #[arg(long = "proxy-label", value_name = "KEY=VALUE", value_parser = parse_label)]
    proxy_labels: Vec<String>,

    /// The route configuration to follow: http.PORT, PORT the target port of the gateway
    /// Service's port the listener is on [default: xdsroutes', http.80].
    #[arg(long, value_name = "NAME")]
    route_config: Option<String>,

    /// Address of a version's pods (repeat for each), by key: subset KEY of Service NAME, or
    /// Service NAME-KEY; e.g. v1=127.0.0.1:5001.
    #[arg(long = "upstream", value_name = "KEY=HOST:PORT", required = true, value_parser = parse_upstream)]
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

/// A pod label as xdsroutes takes it.
fn parse_label(text: &str) -> Result<String, String> {
    match text.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(text.to_owned()),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
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

/// The weight each key gets, by key; the keys are exactly the `--upstream` ones.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Split {
    weights: BTreeMap<String, u32>,
    /// The weight of destinations with no `--upstream`. Istio answers their share with 503 (no
    /// healthy upstream); so does the gateway, rather than hand it to the other keys.
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
    /// Every key at 0: what a gateway does with no route (it answers 503 here).
    fn nothing(upstreams: &[Upstream]) -> Split {
        Split {
            weights: upstreams.iter().map(|u| (u.subset.clone(), 0)).collect(),
            unrouted: 0,
        }
    }

    /// A match route's destination in the `applied` line: the one key that gets everything, else
    /// the split, comma-separated so that the line stays one word per route.
    fn destination(&self) -> String {
        let mut given = self.weights.iter().filter(|(_, w)| **w > 0);
        match (given.next(), given.next()) {
            (Some((key, _)), None) if self.unrouted == 0 => key.clone(),
            (None, None) if self.unrouted > 0 => "unrouted".to_owned(),
            _ => self.to_string().replace(' ', ","),
        }
    }

    fn is_empty(&self) -> bool {
        self.unrouted == 0 && self.weights.values().all(|w| *w == 0)
    }
}

/// One push of `xdsroutes`: the gateway's virtual hosts and their routes, as
/// hack/tools/istio/xdsroutes/main.go describes them. Absent fields are what a route without
/// conditions or headers leaves out.
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

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct PushedRoute {
    name: String,
    clusters: Vec<PushedCluster>,
    direct_response: u32,
    #[serde(rename = "match")]
    conditions: PushedMatch,
    response_headers_to_add: Vec<PushedHeader>,
    response_headers_to_remove: Vec<String>,
    redirect: bool,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct PushedMatch {
    prefix: Option<String>,
    path: Option<String>,
    regex: Option<String>,
    path_separated_prefix: Option<String>,
    case_sensitive: Option<bool>,
    headers: Vec<PushedHeaderMatch>,
    other: Vec<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct PushedHeaderMatch {
    name: String,
    exact: Option<String>,
    regex: Option<String>,
    prefix: Option<String>,
    suffix: Option<String>,
    contains: Option<String>,
    present: Option<bool>,
    other: Option<String>,
    ignore_case: bool,
    invert: bool,
    treat_missing_as_empty: bool,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushedCluster {
    name: String,
    weight: u32,
    #[serde(default)]
    response_headers_to_add: Vec<PushedHeader>,
    #[serde(default)]
    response_headers_to_remove: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushedHeader {
    name: String,
    value: String,
    #[serde(default)]
    append_action: String,
}

/// The nginx variable holding the request's path without its query, which Envoy's path
/// conditions test (`$uri` would be decoded and normalised by nginx).
const PATH_VARIABLE: &str = "$standin_path";

/// One condition of a route, as nginx tests it: a variable's value against a PCRE.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Condition {
    /// `$http_cookie`, `$request_method`, [`PATH_VARIABLE`], ...
    source: String,
    /// Anchored where Envoy's matcher is (a regex matches the whole value).
    regex: String,
    /// The condition holds when the regex does not match (Envoy's `invert_match`).
    invert: bool,
    /// For a header: the outcome when it is absent, which Envoy decides without testing the value
    /// (a missing header matches no value matcher, inverted or not). `None`: an absent header is
    /// tested as the empty value (`treat_missing_header_as_empty`), as a path always is.
    absent: Option<bool>,
}

/// `$http_cookie ~ ^(?:...)\z`, `!~` when inverted, and what an absent header gives: the form the
/// unit tests compare.
impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.invert { "!~" } else { "~" };
        write!(f, "{} {op} {}", self.source, self.regex)?;
        match self.absent {
            Some(true) => f.write_str(" (absent: holds)"),
            Some(false) => f.write_str(" (absent: fails)"),
            None => Ok(()),
        }
    }
}

/// `text` as a PCRE matching exactly it: every ASCII punctuation character escaped, which PCRE
/// reads as that character whatever it is.
fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if c.is_ascii_punctuation() || c == ' ' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The nginx variable holding request header `name`, Envoy's pseudo-headers included.
fn header_variable(name: &str) -> Result<String, String> {
    let name = name.to_ascii_lowercase();
    let variable = match name.as_str() {
        ":authority" => "$http_host".to_owned(),
        ":method" => "$request_method".to_owned(),
        ":path" => "$request_uri".to_owned(),
        ":scheme" => "$scheme".to_owned(),
        _ if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            format!("$http_{}", name.replace('-', "_"))
        }
        _ => return Err(format!("header {name:?}, which nginx has no variable for")),
    };
    Ok(variable)
}

impl Condition {
    /// Envoy's header matcher as nginx tests it.
    fn of_header(h: &PushedHeaderMatch) -> Result<Condition, String> {
        let source = header_variable(&h.name)?;
        if let Some(other) = &h.other {
            return Err(format!("header {} matched by {other}", h.name));
        }
        let case = if h.ignore_case { "(?i)" } else { "" };
        let value = match (&h.exact, &h.regex, &h.prefix, &h.suffix, &h.contains) {
            (Some(exact), ..) => Some(format!("^{case}{}\\z", literal(exact))),
            (_, Some(regex), ..) => Some(format!("^{case}(?:{regex})\\z")),
            (_, _, Some(prefix), ..) => Some(format!("^{case}{}", literal(prefix))),
            (_, _, _, Some(suffix), _) => Some(format!("{case}{}\\z", literal(suffix))),
            (.., Some(contains)) => Some(format!("{case}{}", literal(contains))),
            _ => None,
        };
        Ok(match (value, h.present) {
            (Some(regex), _) => Condition {
                source,
                regex,
                invert: h.invert,
                absent: (!h.treat_missing_as_empty).then_some(false),
            },
            // Present (or, with `false`, absent): the regex matches any value; what decides is
            // whether there is one.
            (None, Some(present)) => Condition {
                source,
                regex: "^".to_owned(),
                invert: present == h.invert,
                absent: Some(!present ^ h.invert),
            },
            (None, None) => return Err(format!("header {} with no matcher", h.name)),
        })
    }

    /// The path conditions of a route and then its header conditions, all of which must hold;
    /// `Err`: something Envoy tests that the stand-in cannot.
    fn of_match(m: &PushedMatch) -> Result<Vec<Condition>, String> {
        if !m.other.is_empty() {
            return Err(m.other.join("; "));
        }
        let case = if m.case_sensitive == Some(false) {
            "(?i)"
        } else {
            ""
        };
        let path = |regex: String| Condition {
            source: PATH_VARIABLE.to_owned(),
            regex,
            invert: false,
            absent: None,
        };
        let mut conditions = Vec::new();
        match (&m.prefix, &m.path, &m.regex, &m.path_separated_prefix) {
            // Every path starts with "/": no condition at all.
            (Some(prefix), ..) if prefix.is_empty() || prefix == "/" => {}
            (Some(prefix), ..) => conditions.push(path(format!("^{case}{}", literal(prefix)))),
            (_, Some(exact), ..) => conditions.push(path(format!("^{case}{}\\z", literal(exact)))),
            (_, _, Some(regex), _) => conditions.push(path(format!("^{case}(?:{regex})\\z"))),
            (.., Some(prefix)) => {
                conditions.push(path(format!("^{case}{}(?:/|\\z)", literal(prefix))));
            }
            _ => {}
        }
        for h in &m.headers {
            conditions.push(Condition::of_header(h)?);
        }
        Ok(conditions)
    }
}

/// Where a route sends what it takes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Split(Split),
    /// Answered by the gateway itself with this status.
    Status(u32),
}

/// Response headers to add, name and value, in order.
type Headers = Vec<(String, String)>;

/// One route of the virtual host, as nginx follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Route {
    /// All must hold; none for the route that takes the rest.
    conditions: Vec<Condition>,
    target: Target,
    /// Added to every answer the route gives, before the answering key's own.
    headers: Headers,
    /// Added to the answers of one key of a weighted route (Istio's per-destination headers).
    key_headers: BTreeMap<String, Headers>,
}

/// What the gateway does with a request for the host: the virtual host's routes in Envoy's order,
/// up to the first without conditions (no request reaches a route after it).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Plan {
    routes: Vec<Route>,
    /// The status of a request no route takes.
    unmatched: u32,
    /// Every key at 0, for the `applied` line when no route takes the rest.
    nothing: Split,
}

/// The `applied` line, but `applied`; the module documentation describes it.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.routes.last().filter(|r| r.conditions.is_empty()) {
            Some(Route {
                target: Target::Split(split),
                ..
            }) => write!(f, "{split}")?,
            Some(Route {
                target: Target::Status(status),
                ..
            }) => write!(f, "{} status={status}", self.nothing)?,
            None => write!(f, "{}", self.nothing)?,
        }
        for route in self.routes.iter().filter(|r| !r.conditions.is_empty()) {
            match &route.target {
                Target::Split(split) => write!(f, " match:{}", split.destination())?,
                Target::Status(status) => write!(f, " match:{status}")?,
            }
        }
        Ok(())
    }
}

/// The Service (or Services) whose clusters the `--upstream` keys stand for.
#[derive(Clone, Debug)]
struct Release {
    name: String,
    namespace: String,
}

impl Release {
    /// The `--upstream` key a cluster stands for: subset KEY of the release's Service, or the
    /// release's Service `<name>-KEY` (one Service per version, as Gateway API backendRefs name
    /// them).
    fn key_of<'a>(&self, cluster: &'a str) -> Option<&'a str> {
        let mut parts = cluster.split('|');
        let (Some("outbound"), Some(_port), Some(subset), Some(fqdn), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let service = fqdn.strip_suffix(&format!(".{}.svc.cluster.local", self.namespace))?;
        if subset.is_empty() {
            service
                .strip_prefix(self.name.as_str())?
                .strip_prefix('-')
                .filter(|key| !key.is_empty())
        } else {
            (service == self.name).then_some(subset)
        }
    }
}

/// A response header to add, if nginx can: a valid name and a value without control characters.
/// Envoy appends or sets; nginx appends (the backend's header of the same name stays), so
/// anything else is warned about.
fn header_of(
    h: &PushedHeader,
    whose: &str,
    warnings: &mut Vec<String>,
) -> Option<(String, String)> {
    let name_ok = !h.name.is_empty()
        && h.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok || h.value.chars().any(char::is_control) {
        warnings.push(format!(
            "WARNING: {whose} adds response header {:?}: {:?}, which nginx cannot send: left out",
            h.name, h.value
        ));
        return None;
    }
    if !h.append_action.is_empty() && h.append_action != "APPEND_IF_EXISTS_OR_ADD" {
        warnings.push(format!(
            "WARNING: {whose} adds response header {} with {}; the stand-in appends it (a header \
             of that name from the backend is kept)",
            h.name, h.append_action
        ));
    }
    Some((h.name.clone(), h.value.clone()))
}

impl Plan {
    /// Nothing routed: every request answered 503 (no route known yet, or none for the host).
    fn nothing(upstreams: &[Upstream]) -> Plan {
        Plan {
            routes: Vec::new(),
            unmatched: 503,
            nothing: Split::nothing(upstreams),
        }
    }

    /// The routes of the virtual host serving `host` in istiod's push, with their clusters mapped
    /// to the `--upstream` keys of `release`; weight to any other cluster is unrouted. Also what
    /// of the push the stand-in cannot follow.
    fn of_push(
        push: &Push,
        host: &str,
        release: &Release,
        upstreams: &[Upstream],
    ) -> (Plan, Vec<String>) {
        let mut plan = Plan::nothing(upstreams);
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
        let Some(vhost) = vhost.filter(|v| !v.routes.is_empty()) else {
            warnings.push(format!(
                "istiod gives the gateway no route for host {host}: nothing is routed"
            ));
            return (plan, warnings);
        };
        // Envoy answers 404 when no route of the virtual host matches.
        plan.unmatched = 404;
        for (i, pushed) in vhost.routes.iter().enumerate() {
            let whose = if pushed.name.is_empty() {
                format!("route #{i}")
            } else {
                format!("route {} (#{i})", pushed.name)
            };
            let conditions = match Condition::of_match(&pushed.conditions) {
                Ok(conditions) => conditions,
                Err(why) => {
                    warnings.push(format!(
                        "WARNING: {whose} has conditions the stand-in cannot test ({why}); it is \
                         left out, so requests Envoy would route by it go by the routes after it"
                    ));
                    continue;
                }
            };
            let route = Route::of_push(
                pushed,
                conditions,
                &whose,
                release,
                upstreams,
                &mut warnings,
            );
            let takes_the_rest = route.conditions.is_empty();
            plan.routes.push(route);
            if takes_the_rest {
                break;
            }
        }
        (plan, warnings)
    }
}

impl Route {
    fn of_push(
        pushed: &PushedRoute,
        conditions: Vec<Condition>,
        whose: &str,
        release: &Release,
        upstreams: &[Upstream],
        warnings: &mut Vec<String>,
    ) -> Route {
        let mut route = Route {
            conditions,
            target: Target::Status(503),
            headers: Vec::new(),
            key_headers: BTreeMap::new(),
        };
        if pushed.redirect {
            warnings.push(format!(
                "WARNING: {whose} answers with a redirect, which the stand-in does not make: \
                 answered 503"
            ));
            return route;
        }
        let headers = |h: &[PushedHeader], removed: &[String], whose: &str, w: &mut Vec<String>| {
            if !removed.is_empty() {
                w.push(format!(
                    "WARNING: {whose} removes response headers {removed:?}; the stand-in keeps them"
                ));
            }
            h.iter()
                .filter_map(|h| header_of(h, whose, w))
                .collect::<Vec<_>>()
        };
        route.headers = headers(
            &pushed.response_headers_to_add,
            &pushed.response_headers_to_remove,
            whose,
            warnings,
        );
        if pushed.direct_response > 0 {
            route.target = Target::Status(pushed.direct_response);
            return route;
        }
        if pushed.clusters.is_empty() {
            warnings.push(format!(
                "WARNING: {whose} names no cluster and no direct response: answered 503"
            ));
            return route;
        }
        let mut split = Split::nothing(upstreams);
        for cluster in &pushed.clusters {
            let key = release
                .key_of(&cluster.name)
                .filter(|k| split.weights.contains_key(*k));
            match key.and_then(|k| Some((k, split.weights.get_mut(k)?))) {
                Some((key, total)) => {
                    *total = total.saturating_add(cluster.weight);
                    let whose = format!("cluster {} of {whose}", cluster.name);
                    let added = headers(
                        &cluster.response_headers_to_add,
                        &cluster.response_headers_to_remove,
                        &whose,
                        warnings,
                    );
                    if !added.is_empty() {
                        route
                            .key_headers
                            .entry(key.to_owned())
                            .or_default()
                            .extend(added);
                    }
                }
                None => {
                    warnings.push(format!(
                        "{whose} sends weight {} to cluster {}, which has no --upstream: that \
                         share is answered 503",
                        cluster.weight, cluster.name
                    ));
                    split.unrouted = split.unrouted.saturating_add(cluster.weight);
                }
            }
        }
        route.target = Target::Split(split);
        route
    }
}

/// A plan to apply, with what of it cannot be followed.
type Update = (Plan, Vec<String>);

/// How `xdsroutes` connects to istiod: as which gateway proxy, for which route configuration.
/// Unset fields are left to `xdsroutes`' defaults (the AKS external ingress gateway, `http.80`).
#[derive(Clone, Debug, Default)]
struct Proxy {
    namespace: Option<String>,
    pod: Option<String>,
    labels: Vec<String>,
    route_config: Option<String>,
}

impl Proxy {
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let flags = [
            ("-namespace", &self.namespace),
            ("-pod", &self.pod),
            ("-route", &self.route_config),
        ];
        for (flag, value) in flags {
            if let Some(value) = value {
                args.extend([flag.to_owned(), value.clone()]);
            }
        }
        for label in &self.labels {
            args.extend(["-label".to_owned(), label.clone()]);
        }
        args
    }
}

/// What is followed: where istiod is and who asks, and what the answers are read for.
struct Source {
    xdsroutes: PathBuf,
    address: String,
    proxy: Proxy,
    host: String,
    release: Release,
    upstreams: Vec<Upstream>,
}

/// Follows istiod through `xdsroutes`, sending the plan of each route configuration it pushes.
async fn follow_istiod(source: Source, tx: tokio::sync::mpsc::Sender<Update>) -> Error {
    use tokio::io::AsyncBufReadExt;
    let Source {
        xdsroutes,
        address,
        proxy,
        host,
        release,
        upstreams,
    } = source;
    let mut child = match Command::new(&xdsroutes)
        .args(["-addr", &address])
        .args(proxy.args())
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
                    let update = Plan::of_push(&push, &host, &release, &upstreams);
                    if tx.send(update).await.is_err() {
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

/// nginx's configuration language: `text` in double quotes, `\` and `"` escaped (nginx reads `\\`,
/// `\"`, `\t`, `\r` and `\n` in quotes as escapes, so a regex's `\\` would lose its meaning).
fn nginx_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// [`nginx_text`] where nginx expands variables (a map's value), which has no escape for `$`: it
/// comes from a variable holding one.
fn nginx_value(text: &str) -> String {
    nginx_text(text).replace('$', "${standin_dollar}")
}

/// The part of nginx's configuration that routes as the plan says.
struct Routing {
    /// At the `http` level: a map per condition (`1` when it holds), the map that picks the
    /// route, an upstream per route weighted as its keys, and a map per response header to add.
    http: String,
    /// The body of `location /`.
    location: String,
}

/// Envoy takes the first route whose conditions all hold. Every condition's map gives `1` or
/// `0`, and they are concatenated in route order: route i is taken when its span is all `1`s,
/// which the choosing map tests in route order, so that an earlier route wins. Each route is an
/// upstream of its own (one round-robin state per route, as each Envoy route keeps its own), and
/// `proxy_pass` picks it by name. The response headers Envoy adds depend on the route and on the
/// key that answered, which nginx knows by its address (`$upstream_addr`): one map per header to
/// add, from route and address to value (empty, and so not sent, for the others).
fn routing(plan: &Plan, upstreams: &[Upstream], unrouted: &str) -> Routing {
    let mut http = String::new();
    let mut location = String::new();
    let mut flags = String::from("@");
    let mut choices = String::new();
    let mut conditions = 0_usize;
    let mut rest = None;
    let mut statuses = Vec::new();
    // Route (its name in `$standin_route`), the address that answered ("" for the gateway
    // itself) and the headers added to that answer.
    let mut answers: Vec<(String, String, Headers)> = Vec::new();
    for (i, route) in plan.routes.iter().enumerate() {
        let name = match &route.target {
            Target::Split(split) if !split.is_empty() => {
                let name = format!("standin_r{i}");
                let mut servers = String::new();
                for u in upstreams {
                    let weight = split.weights.get(&u.subset).copied().unwrap_or(0);
                    // nginx's weights start at 1; a key at 0 is left out, so it gets nothing.
                    if weight == 0 {
                        continue;
                    }
                    servers.push_str(&format!(
                        "    server {} weight={weight} max_fails=0;\n",
                        u.addr
                    ));
                    let mut headers = route.headers.clone();
                    headers.extend(
                        route
                            .key_headers
                            .get(&u.subset)
                            .into_iter()
                            .flatten()
                            .cloned(),
                    );
                    answers.push((name.clone(), u.addr.to_string(), headers));
                }
                if split.unrouted > 0 {
                    servers.push_str(&format!(
                        "    server {unrouted} weight={} max_fails=0;\n",
                        split.unrouted
                    ));
                }
                http.push_str(&format!("  upstream {name} {{\n{servers}  }}\n"));
                name
            }
            target => {
                let name = format!("standin_s{i}");
                let status = match target {
                    Target::Status(status) => *status,
                    Target::Split(_) => 503,
                };
                statuses.push((name.clone(), status));
                answers.push((name.clone(), String::new(), route.headers.clone()));
                name
            }
        };
        if route.conditions.is_empty() {
            rest = Some(name);
            break;
        }
        let span = route.conditions.len();
        choices.push_str(&format!(
            "    {} {name};\n",
            nginx_text(&format!("~^@.{{{conditions}}}1{{{span}}}"))
        ));
        for condition in &route.conditions {
            let variable = format!("standin_c{conditions}");
            conditions += 1;
            let (holds, fails) = if condition.invert {
                ("0", "1")
            } else {
                ("1", "0")
            };
            let mut entries = String::new();
            if let Some(absent) = condition.absent {
                let outcome = if absent { "1" } else { "0" };
                entries.push_str(&format!("    {} {outcome};\n", nginx_text("~^\\z")));
            }
            entries.push_str(&format!(
                "    {} {holds};\n",
                nginx_text(&format!("~{}", condition.regex))
            ));
            http.push_str(&format!(
                "  map {} ${variable} {{\n{entries}    default {fails};\n  }}\n",
                condition.source
            ));
            flags.push_str(&format!("${{{variable}}}"));
        }
    }
    let rest = rest.unwrap_or_else(|| {
        statuses.push(("standin_unmatched".to_owned(), plan.unmatched));
        "standin_unmatched".to_owned()
    });
    http.push_str(&format!(
        "  map {} $standin_route {{\n{choices}    default {rest};\n  }}\n",
        nginx_text(&flags)
    ));
    if plan
        .routes
        .iter()
        .flat_map(|r| &r.conditions)
        .any(|c| c.source == PATH_VARIABLE)
    {
        http.push_str(&format!(
            "  map $request_uri {PATH_VARIABLE} {{\n    {} $1;\n    default \"\";\n  }}\n",
            nginx_text("~^([^?]*)")
        ));
    }

    // One map per header name and occurrence: a route may add a header twice (two Set-Cookies).
    let mut slots: Vec<(String, Headers)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (route, address, headers) in &answers {
        let key = format!("{route}|{address}");
        // Two keys at one address cannot be told apart; the first one's headers are sent.
        if !seen.insert(key.clone()) {
            continue;
        }
        let mut occurrences: BTreeMap<String, usize> = BTreeMap::new();
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            let n = occurrences.entry(lower.clone()).or_default();
            let slot = slots
                .iter()
                .enumerate()
                .filter(|(_, (slot_name, _))| slot_name.eq_ignore_ascii_case(&lower))
                .nth(*n)
                .map(|(i, _)| i);
            *n += 1;
            let slot = match slot {
                Some(slot) => slot,
                None => {
                    slots.push((name.clone(), Vec::new()));
                    slots.len() - 1
                }
            };
            slots[slot].1.push((key.clone(), value.clone()));
        }
    }
    if slots
        .iter()
        .flat_map(|(_, e)| e)
        .any(|(_, v)| v.contains('$'))
    {
        http.push_str("  geo $standin_dollar {\n    default \"$\";\n  }\n");
    }
    for (i, (_, entries)) in slots.iter().enumerate() {
        let entries: String = entries
            .iter()
            .map(|(key, value)| format!("    {} {};\n", nginx_text(key), nginx_value(value)))
            .collect();
        http.push_str(&format!(
            "  map \"$standin_route|$upstream_addr\" $standin_h{i} {{\n{entries}    default \"\";\n  }}\n"
        ));
    }

    // `return` is the one thing that is safe inside `if` in a location.
    for (name, status) in &statuses {
        location.push_str(&format!(
            "      if ($standin_route = {name}) {{ return {status}; }}\n"
        ));
    }
    location.push_str("      proxy_pass http://$standin_route;\n      proxy_next_upstream off;\n");
    for (i, (name, _)) in slots.iter().enumerate() {
        location.push_str(&format!("      add_header {name} $standin_h{i} always;\n"));
    }
    Routing { http, location }
}

impl Setup {
    fn config_path(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }

    fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// The whole configuration for `plan`. One worker, so one round-robin state per route decides
    /// every request; a worker that outlives a reload is given 5 s to finish its requests, which bounds
    /// how long an apply waits for it to go.
    fn config(&self, plan: &Plan) -> Result<String, Error> {
        let d = |name: &str| quoted(&self.dir.join(name));
        // Answers the share of keys with no address: through nginx itself, so the round robin
        // takes that share out of the keys' turns.
        let unrouted = quoted_prefixed("unix:", &self.dir.join("unrouted.sock"))?;
        let Routing { http, location } = routing(plan, &self.upstreams, &unrouted);
        Ok(format!(
            "# Written by the ingress gateway stand-in (examples/ingress_standin.rs); generation {generation}: {plan}
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
  # The header maps' keys hold a route and an address: longer than the default bucket allows.
  map_hash_bucket_size 256;
{http}  server {{
    listen {listen};
    location = {GENERATION_PATH} {{ return 200 \"{generation}\\n\"; }}
    location / {{
{location}    }}
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
    async fn apply(&mut self, plan: &Plan) -> Result<(), Error> {
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
    // Keys at one address are told apart by nothing nginx sees: the response headers of the
    // first are sent for both.
    let mut addresses: Vec<(SocketAddr, &str)> = cli
        .upstreams
        .iter()
        .map(|u| (u.addr, u.subset.as_str()))
        .collect();
    addresses.sort_unstable();
    for pair in addresses.windows(2).filter(|pair| pair[0].0 == pair[1].0) {
        eprintln!(
            "{NAME}: WARNING: --upstream {} and {} share address {}: a route's response headers \
             for one are sent for both",
            pair[0].1, pair[1].1, pair[0].0
        );
    }
    let release = Release {
        name: cli.name.clone(),
        namespace: cli.namespace.clone(),
    };
    let proxy = Proxy {
        namespace: cli.proxy_namespace.clone(),
        pod: cli.proxy_pod.clone(),
        labels: cli.proxy_labels.clone(),
        route_config: cli.route_config.clone(),
    };
    let what = format!(
        "the routes istiod at {} pushes for host {} (service {name}.{ns}, or {name}-KEY.{ns}){as_proxy}",
        cli.xds,
        cli.host,
        name = cli.name,
        ns = cli.namespace,
        as_proxy = match proxy.args() {
            args if args.is_empty() => String::new(),
            args => format!(" to the proxy of xdsroutes {}", args.join(" ")),
        },
    );
    let task = follow_istiod(
        Source {
            xdsroutes: cli.xdsroutes.clone().unwrap_or_else(default_xdsroutes),
            address: cli.xds.clone(),
            proxy,
            host: cli.host.clone(),
            release,
            upstreams: cli.upstreams.clone(),
        },
        tx,
    );
    let source = tokio::spawn(task);
    // Ends the source (and xdsroutes with it) however this function returns.
    let mut source = AbortOnDrop(source);

    let binary = cli.nginx.clone().unwrap_or_else(default_nginx);
    let mut nginx =
        Nginx::start(binary, cli.dir.clone(), cli.listen, cli.upstreams.clone()).await?;
    eprintln!(
        "{NAME}: nginx (pid {}) listening on {}, answering 503 until it has read {what}",
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

    let mut desired: Option<Plan> = None;
    let mut applied: Option<Plan> = None;
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
                Some((plan, warnings)) => {
                    if desired.as_ref() != Some(&plan) {
                        for warning in warnings {
                            eprintln!("{NAME}: {warning}");
                        }
                    }
                    desired = Some(plan);
                }
            },
            _ = retry.tick() => {}
        }
        let Some(plan) = desired.as_ref() else {
            continue;
        };
        if applied.as_ref() == Some(plan) {
            continue;
        }
        let outcome = tokio::select! {
            () = &mut stop => break Ok(()),
            outcome = nginx.apply(plan) => outcome,
        };
        match outcome {
            Ok(()) => {
                println!("applied {plan}");
                applied = Some(plan.clone());
            }
            Err(e) => {
                eprintln!("{NAME}: applying {plan}: {e}; trying again in {RETRY:?}");
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
            let (plan, _) = Plan::of_push(&push, "chat.test", &release(), &upstreams());
            assert_eq!(plan.to_string(), expected);
        }
    }

    fn release() -> Release {
        Release {
            name: "chat".to_owned(),
            namespace: "ns".to_owned(),
        }
    }

    /// A cluster of the release's Service, subset `subset`, as istiod names it.
    fn subset(subset: &str, weight: u32) -> serde_json::Value {
        json!({"name": format!("outbound|5000|{subset}|chat.ns.svc.cluster.local"), "weight": weight})
    }

    /// The sticky cookie the operator adds to the answers of one version.
    fn cookie(version: &str) -> serde_json::Value {
        json!([{"name": "set-cookie", "value": format!("canary-model={version}; Path=/; Max-Age=86400"),
                "appendAction": "APPEND_IF_EXISTS_OR_ADD"}])
    }

    /// A route taken when the request's cookie names `version`, as istiod pushes it.
    fn sticky(version: &str) -> serde_json::Value {
        json!({"name": format!("sticky-{version}"), "clusters": [subset(version, 100)],
               "match": {"prefix": "/", "headers": [
                   {"name": "cookie", "regex": format!(r"^(.*;\s*)?canary-model={version}(;.*)?$")}]}})
    }

    /// The weighted route that takes the rest, each version's answers setting its cookie.
    fn split(v1: u32, v2: u32) -> serde_json::Value {
        let mut clusters = Vec::new();
        for (version, weight) in [("v1", v1), ("v2", v2)] {
            if weight > 0 {
                let mut cluster = subset(version, weight);
                cluster["responseHeadersToAdd"] = cookie(version);
                clusters.push(cluster);
            }
        }
        json!({"name": "split", "clusters": clusters, "match": {"prefix": "/"}})
    }

    fn plan_of(routes: serde_json::Value) -> (Plan, Vec<String>) {
        let push = push(json!({"virtualHosts": [{"domains": ["chat.test"], "routes": routes}]}));
        Plan::of_push(&push, "chat.test", &release(), &upstreams())
    }

    /// Envoy's order: the first route whose conditions hold, routes after the first without any
    /// never reached; the `applied` line shows the rest's split, then each match route.
    #[test]
    fn routes_are_followed_in_order_up_to_the_one_that_takes_the_rest() {
        let header = |name: &str, matcher: serde_json::Value| {
            let mut m = matcher;
            m["name"] = json!(name);
            json!({"clusters": [subset("v2", 100)], "match": {"prefix": "/", "headers": [m]}})
        };
        let table = [
            (
                "sticky cookie routes, then the split",
                json!([sticky("v2"), sticky("v1"), split(75, 25)]),
                "v1=75 v2=25 match:v2 match:v1",
                0,
            ),
            (
                "a version at 0 has no match route, nor a share",
                json!([sticky("v1"), split(100, 0)]),
                "v1=100 v2=0 match:v1",
                0,
            ),
            (
                "the header variant",
                json!([
                    header("x-canary-model", json!({"exact": "v2"})),
                    split(90, 10)
                ]),
                "v1=90 v2=10 match:v2",
                0,
            ),
            (
                "a weighted match route, a direct response, and one to no --upstream",
                json!([
                    {"clusters": [subset("v1", 50), subset("v2", 50)],
                     "match": {"path": "/both"}},
                    {"directResponse": 404, "clusters": [], "match": {"prefix": "/gone"}},
                    {"clusters": [subset("v3", 100)], "match": {"regex": "/v3/.*"}},
                    split(75, 25),
                ]),
                "v1=75 v2=25 match:v1=50,v2=50 match:404 match:unrouted",
                0,
            ),
            (
                "routes after the one that takes the rest are never reached",
                json!([split(75, 25), sticky("v2")]),
                "v1=75 v2=25",
                0,
            ),
            (
                "no route takes the rest: unmatched requests are answered 404",
                json!([sticky("v2")]),
                "v1=0 v2=0 match:v2",
                0,
            ),
            (
                "the rest answered by the gateway itself",
                json!([{"directResponse": 404, "clusters": [], "match": {"prefix": "/"}}]),
                "v1=0 v2=0 status=404",
                0,
            ),
            (
                "query parameters cannot be tested: the route is left out, loudly",
                json!([
                    {"clusters": [subset("v2", 100)],
                     "match": {"prefix": "/", "other": ["query_parameters [name:\"q\"]"]}},
                    split(75, 25),
                ]),
                "v1=75 v2=25",
                1,
            ),
            (
                "nor a range matcher",
                json!([
                    header("x-n", json!({"other": "range_match:{start:1 end:5}"})),
                    split(1, 1)
                ]),
                "v1=1 v2=1",
                1,
            ),
            (
                "a redirect is answered 503, loudly",
                json!([{"clusters": [], "redirect": true, "match": {"prefix": "/old"}}, split(75, 25)]),
                "v1=75 v2=25 match:503",
                1,
            ),
        ];
        for (what, routes, line, loud) in table {
            let (plan, warnings) = plan_of(routes);
            assert_eq!(plan.to_string(), line, "{what}");
            let warned = warnings.iter().filter(|w| w.starts_with("WARNING")).count();
            assert_eq!(warned, loud, "{what}: {warnings:?}");
            // Envoy's answer when no route of the host's virtual host matches.
            assert_eq!(plan.unmatched, 404, "{what}");
        }
    }

    /// Each of Envoy's header and path matchers as the nginx condition that tests it.
    #[test]
    fn conditions_are_tested_as_envoy_tests_them() {
        let table = [
            (
                json!({"headers": [{"name": "cookie", "regex": r"^(.*;\s*)?canary-model=v2(;.*)?$"}]}),
                vec![r"$http_cookie ~ ^(?:^(.*;\s*)?canary-model=v2(;.*)?$)\z (absent: fails)"],
            ),
            (
                json!({"headers": [{"name": "X-Canary-Model", "exact": "v2.1"}]}),
                vec![r"$http_x_canary_model ~ ^v2\.1\z (absent: fails)"],
            ),
            // Inverted: an absent header still fails (Envoy does not test a missing header) ...
            (
                json!({"headers": [{"name": "x-a", "prefix": "a b", "invert": true}]}),
                vec![r"$http_x_a !~ ^a\ b (absent: fails)"],
            ),
            // ... unless it is taken as empty, as Istio's withoutHeaders has it.
            (
                json!({"headers": [{"name": "x-a", "prefix": "a", "invert": true,
                                    "treatMissingAsEmpty": true}]}),
                vec![r"$http_x_a !~ ^a"],
            ),
            (
                json!({"headers": [{"name": "x-a", "suffix": "z", "ignoreCase": true},
                                   {"name": "x-b", "contains": "*"}]}),
                vec![
                    r"$http_x_a ~ (?i)z\z (absent: fails)",
                    r"$http_x_b ~ \* (absent: fails)",
                ],
            ),
            (
                json!({"headers": [{"name": "x-a", "present": true},
                                   {"name": "x-b", "present": false},
                                   {"name": "x-c", "present": true, "invert": true}]}),
                vec![
                    "$http_x_a ~ ^ (absent: fails)",
                    "$http_x_b !~ ^ (absent: holds)",
                    "$http_x_c !~ ^ (absent: holds)",
                ],
            ),
            (
                json!({"headers": [{"name": ":method", "exact": "POST"}]}),
                vec![r"$request_method ~ ^POST\z (absent: fails)"],
            ),
            (json!({"prefix": "/"}), vec![]),
            (json!({"prefix": "/api"}), vec![r"$standin_path ~ ^\/api"]),
            (json!({"path": "/chat"}), vec![r"$standin_path ~ ^\/chat\z"]),
            (
                json!({"regex": "/v[0-9]+/.*", "caseSensitive": false}),
                vec![r"$standin_path ~ ^(?i)(?:/v[0-9]+/.*)\z"],
            ),
            (
                json!({"pathSeparatedPrefix": "/api"}),
                vec![r"$standin_path ~ ^\/api(?:/|\z)"],
            ),
        ];
        for (matcher, expected) in table {
            let m: PushedMatch =
                serde_json::from_value(matcher.clone()).unwrap_or_else(|e| panic!("{e}"));
            let conditions = Condition::of_match(&m).unwrap_or_else(|e| panic!("{matcher}: {e}"));
            let shown: Vec<String> = conditions.iter().map(ToString::to_string).collect();
            assert_eq!(shown, expected, "{matcher}");
        }
        for unsupported in [
            json!({"headers": [{"name": "x-a", "other": "range_match:{}"}]}),
            json!({"headers": [{"name": ":protocol", "exact": "h2"}]}),
            json!({"headers": [{"name": "x a", "exact": "b"}]}),
            json!({"other": ["runtime_fraction {}"]}),
        ] {
            let m: PushedMatch =
                serde_json::from_value(unsupported.clone()).unwrap_or_else(|e| panic!("{e}"));
            assert!(Condition::of_match(&m).is_err(), "{unsupported}");
        }
    }

    /// A route's own response headers go with all its answers, a weighted cluster's with the
    /// answers of its key only; an action nginx cannot take is said out loud.
    #[test]
    fn response_headers_go_with_their_route_and_key() {
        let owned = |pairs: &[(&str, &str)]| -> Headers {
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        let mut sticky_v1 = sticky("v1");
        sticky_v1["responseHeadersToAdd"] = json!([{"name": "x-canary-model", "value": "v1", "appendAction": "APPEND_IF_EXISTS_OR_ADD"}]);
        let (plan, warnings) = plan_of(json!([sticky("v2"), sticky_v1, split(75, 25)]));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(plan.routes[0].headers.is_empty());
        assert_eq!(plan.routes[1].headers, owned(&[("x-canary-model", "v1")]));
        let rest = &plan.routes[2];
        assert!(rest.headers.is_empty());
        assert_eq!(
            rest.key_headers,
            BTreeMap::from([
                (
                    "v1".to_owned(),
                    owned(&[("set-cookie", "canary-model=v1; Path=/; Max-Age=86400")])
                ),
                (
                    "v2".to_owned(),
                    owned(&[("set-cookie", "canary-model=v2; Path=/; Max-Age=86400")])
                ),
            ])
        );

        let mut set = split(50, 50);
        set["responseHeadersToAdd"] = json!([{"name": "x-route", "value": "r", "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"}]);
        set["responseHeadersToRemove"] = json!(["server"]);
        let (plan, warnings) = plan_of(json!([set]));
        assert_eq!(plan.routes[0].headers, owned(&[("x-route", "r")]));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings.iter().all(|w| w.starts_with("WARNING")),
            "{warnings:?}"
        );
    }

    /// A subset of the release's Service, or the release's Service of one version (Gateway API).
    #[test]
    fn clusters_are_keys_by_subset_or_by_service() {
        let table = [
            ("outbound|5000|v1|chat.ns.svc.cluster.local", Some("v1")),
            ("outbound|5000||chat-v2.ns.svc.cluster.local", Some("v2")),
            ("outbound|5000|v1|chat-v1.ns.svc.cluster.local", None),
            ("outbound|5000||chat.ns.svc.cluster.local", None),
            ("outbound|5000||chat-.ns.svc.cluster.local", None),
            ("outbound|5000||chat-v1.other.svc.cluster.local", None),
            ("outbound|5000||chatty-v1.ns.svc.cluster.local", None),
            ("inbound|5000||chat-v1.ns.svc.cluster.local", None),
        ];
        for (cluster, key) in table {
            assert_eq!(release().key_of(cluster), key, "{cluster}");
        }
        // One Service per version, weighted by an HTTPRoute; v3 has no --upstream.
        let service = |name: &str, weight: u32| json!({"name": format!("outbound|5000||{name}.ns.svc.cluster.local"), "weight": weight});
        let (plan, _) = plan_of(json!([
            {"clusters": [service("chat-v1", 70), service("chat-v2", 20), service("chat-v3", 10)],
             "match": {"prefix": "/"}}
        ]));
        assert_eq!(plan.to_string(), "v1=70 v2=20 unrouted=10");
    }

    /// The configuration nginx is given for the sticky routes: a condition map per route, the
    /// choice in route order, an upstream per route, and a header map per Set-Cookie. nginx
    /// itself checks it when it is installed.
    #[test]
    fn the_nginx_configuration_routes_as_planned() {
        let (mut plan, _) = plan_of(json!([sticky("v2"), sticky("v1"), split(75, 25)]));
        // A value nginx would expand as a variable if written as is.
        if let Some(Route { key_headers, .. }) = plan.routes.last_mut()
            && let Some(headers) = key_headers.get_mut("v2")
        {
            headers.push(("x-price".to_owned(), "$5 \"net\"".to_owned()));
        }
        let Routing { http, location } = routing(&plan, &upstreams(), "\"unix:/x.sock\"");
        for expected in [
            r#"map $http_cookie $standin_c0 {
    "~^\\z" 0;
    "~^(?:^(.*;\\s*)?canary-model=v2(;.*)?$)\\z" 1;
    default 0;
  }"#,
            r#"map "@${standin_c0}${standin_c1}" $standin_route {
    "~^@.{0}1{1}" standin_r0;
    "~^@.{1}1{1}" standin_r1;
    default standin_r2;
  }"#,
            "upstream standin_r2 {
    server 127.0.0.1:1 weight=75 max_fails=0;
    server 127.0.0.1:2 weight=25 max_fails=0;
  }",
            r#"map "$standin_route|$upstream_addr" $standin_h0 {
    "standin_r2|127.0.0.1:1" "canary-model=v1; Path=/; Max-Age=86400";
    "standin_r2|127.0.0.1:2" "canary-model=v2; Path=/; Max-Age=86400";
    default "";
  }"#,
            r#""standin_r2|127.0.0.1:2" "${standin_dollar}5 \"net\"";"#,
        ] {
            assert!(http.contains(expected), "no\n{expected}\nin\n{http}");
        }
        assert_eq!(
            location,
            "      proxy_pass http://$standin_route;
      proxy_next_upstream off;
      add_header set-cookie $standin_h0 always;
      add_header x-price $standin_h1 always;
"
        );

        let Some(nginx) = on_path("nginx").or_else(|| {
            let debian = PathBuf::from("/usr/sbin/nginx");
            debian.is_file().then_some(debian)
        }) else {
            eprintln!(
                "\n********** SKIPPED nginx -t of the stand-in's configuration: no nginx **********\n"
            );
            return;
        };
        let dir = std::env::temp_dir().join(format!("standin-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let setup = Setup {
            binary: nginx,
            dir: dir.clone(),
            // nginx -t binds nothing.
            listen: SocketAddr::from(([127, 0, 0, 1], 9)),
            upstreams: upstreams(),
            generation: 1,
        };
        let text = setup.config(&plan).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(setup.config_path(), &text).unwrap_or_else(|e| panic!("{e}"));
        let output = std::process::Command::new(&setup.binary)
            .arg("-t")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(setup.config_path())
            .arg("-e")
            .arg(setup.error_log())
            .output()
            .unwrap_or_else(|e| panic!("nginx -t: {e}"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            output.status.success(),
            "nginx -t: {}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
