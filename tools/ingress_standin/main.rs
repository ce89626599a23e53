//! Test tooling, not an example: nginx programmed from istiod's routes, standing in for the
//! ingress gateway in the tests and demos (tools/README.md).
//!
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
//!
//! The parts, one module each: `push` is what `xdsroutes` prints; `plan` is what the gateway does
//! with it (pure); `istiod` runs `xdsroutes` and sends the plan of each push; `nginx_config` writes
//! a plan as nginx's configuration (pure) and `nginx` runs nginx on it; `load` is the load
//! generator; `upstream` the `--upstream` addresses, `programs` where nginx and `xdsroutes` are
//! found, `error` how failures are told. This file reads the command line and applies each plan
//! until a signal stops it.

mod error;
mod istiod;
mod load;
mod nginx;
mod nginx_config;
mod plan;
mod programs;
mod push;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::error::{Error, NAME};
use crate::istiod::{Proxy, Source, Update, follow_istiod};
use crate::load::{LOAD_TIMEOUT, generate_load};
use crate::nginx::{Nginx, reachable};
use crate::plan::{Plan, Release};
use crate::programs::{default_nginx, default_xdsroutes};
use crate::upstream::{Upstream, parse_upstream};

/// How often a configuration that nginx did not take is tried again.
const RETRY: Duration = Duration::from_secs(2);

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

/// A pod label as xdsroutes takes it.
fn parse_label(text: &str) -> Result<String, String> {
    match text.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(text.to_owned()),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
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

/// Applies each plan istiod's pushes make to nginx, until a signal stops it (`Ok`), or nginx or
/// the following of istiod ends (`Err`).
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
        nginx.pid().unwrap_or_default(),
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
            error = nginx.exited() => break Err(error),
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
