//! Command line: `canary-operator` runs the controller, `canary-operator crd` prints the CRD.

use std::net::SocketAddr;
use std::process::ExitCode;

use canary_operator::api::{CanaryRelease, TrafficProvider};
use canary_operator::operator::{self, LeaderElection, Options};
use clap::{Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt;
use tracing_subscriber::EnvFilter;

/// Kubernetes operator for canary releases of model-backed services, routed by Istio or the
/// Gateway API: one CanaryRelease in, every object of the release out, kept in place.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Namespaces to watch, comma-separated (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',', global = true)]
    namespace: Vec<String>,

    /// Address of the HTTP server for /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "HTTP_ADDRESS",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    http_address: SocketAddr,

    /// Run only while holding a coordination.k8s.io Lease, so that one of several replicas reconciles.
    #[arg(long, env = "LEADER_ELECT", global = true)]
    leader_elect: bool,

    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "LEASE_NAME",
        default_value = "canary-operator",
        global = true
    )]
    lease_name: String,

    /// Namespace of the leader election Lease (required with --leader-elect; in a pod, its own namespace).
    #[arg(long, env = "POD_NAMESPACE", global = true)]
    lease_namespace: Option<String>,

    /// How long a Lease stays valid without renewal: the longest a standby waits after a leader dies.
    #[arg(
        long,
        env = "LEASE_DURATION_SECONDS",
        default_value_t = 15,
        global = true
    )]
    lease_duration_seconds: u64,

    /// Name of this instance in Events and as the Lease holder (in a pod, the pod name).
    #[arg(long, env = "POD_NAME", global = true)]
    instance: Option<String>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax (for example `info,canary_operator=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info", global = true)]
    log: String,

    /// DNS suffix of Services in the cluster; Istio hosts are written as NAME.NAMESPACE.svc.SUFFIX.
    #[arg(
        long,
        env = "CLUSTER_DOMAIN",
        default_value = "cluster.local",
        global = true
    )]
    cluster_domain: String,

    /// Shortest analysis interval a CanaryRelease may ask for (a Go duration such as 10s). Each
    /// interval of a rolling release costs one query per check and version, and one status write.
    #[arg(long, env = "MIN_ANALYSIS_INTERVAL", default_value = "10s", value_parser = canary_operator::plugin::duration::parse, global = true)]
    min_analysis_interval: std::time::Duration,

    /// Traffic providers to watch and write, comma-separated: istio (DestinationRules,
    /// VirtualServices, Gateways) and gatewayAPI (HTTPRoutes). Each needs its CRDs installed and
    /// the chart's grants for its kinds; a release asking for another is refused with a condition.
    #[arg(long, env = "TRAFFIC_PROVIDERS", value_delimiter = ',', default_value = "istio", value_parser = parse_provider, global = true)]
    traffic_providers: Vec<TrafficProvider>,
}

fn parse_provider(text: &str) -> Result<TrafficProvider, String> {
    TrafficProvider::parse(text.trim()).ok_or_else(|| {
        let names: Vec<&str> = TrafficProvider::ALL.iter().map(|p| p.as_str()).collect();
        format!(
            "{text:?} is not a traffic provider: use {}",
            names.join(" or ")
        )
    })
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller (the default).
    Run,
    /// Print the CanaryRelease CustomResourceDefinition as YAML.
    Crd,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

// One thread: the operator waits on the network almost all the time (at 1,000 releases it used a
// tenth of a core while converging them), and a single thread keeps the allocator to one arena,
// where several threads each grew an arena of their own and held on to its freed memory.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => print_crd(),
        Some(Command::Run) | None => run(cli).await,
    }
}

fn print_crd() -> ExitCode {
    match serde_norway::to_string(&CanaryRelease::crd()) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: cannot render the CRD: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    // kube's client logs each failed request (at error, dropped connections at warn): during an
    // apiserver restart, several lines a second that say nothing the operator does not say once
    // itself (a broken watch in `readiness`, a failed reconcile in `controller`). Kept unless the
    // filter names kube_client.
    let directives = if cli.log.contains("kube_client") {
        cli.log.clone()
    } else {
        format!("{},kube_client::client=off", cli.log)
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }

    let leader_election = match (cli.leader_elect, cli.lease_namespace) {
        (false, _) => None,
        (true, Some(lease_namespace)) => Some(LeaderElection {
            lease_name: cli.lease_name,
            lease_namespace,
            lease_duration_seconds: cli.lease_duration_seconds.max(2),
        }),
        (true, None) => {
            eprintln!("error: --leader-elect needs --lease-namespace (or POD_NAMESPACE)");
            return ExitCode::from(2);
        }
    };
    let config = match kube::Config::infer().await {
        Ok(config) => config,
        Err(error) => {
            eprintln!(
                "error: no Kubernetes configuration found (KUBECONFIG, ~/.kube/config or in-cluster): {error}"
            );
            return ExitCode::from(2);
        }
    };
    let options = Options {
        namespaces: cli
            .namespace
            .into_iter()
            .filter(|ns| !ns.is_empty())
            .collect(),
        cluster_domain: cli.cluster_domain,
        min_analysis_interval: cli.min_analysis_interval,
        traffic_providers: {
            let mut providers = cli.traffic_providers;
            providers.sort();
            providers.dedup();
            providers
        },
        instance: cli.instance.unwrap_or_else(default_instance),
        http_address: cli.http_address,
        leader_election,
    };
    match operator::run(config, options, shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// Outside a pod: the host name and process id, unique enough to tell instances apart.
fn default_instance() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

/// Resolves on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
