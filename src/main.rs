//! Command line: `canary-operator` runs the controller, `canary-operator crd` prints the CRD.

use std::process::ExitCode;
use std::sync::Arc;

use canary_operator::api::CanaryRelease;
use canary_operator::controller::{self, Settings};
use canary_operator::requests::{RequestCounts, counting_client};
use clap::{Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt;
use kube::runtime::events::Reporter;
use tracing_subscriber::EnvFilter;

/// Kubernetes operator for Istio canary releases of model-backed services.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE", global = true)]
    namespace: Option<String>,

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

    /// Name of this operator instance in Events (for example the pod name).
    #[arg(long, env = "POD_NAME", global = true)]
    instance: Option<String>,
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

#[tokio::main]
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
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter);
    match cli.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }

    let config = match kube::Config::infer().await {
        Ok(config) => config,
        Err(error) => {
            eprintln!(
                "error: no Kubernetes configuration found (KUBECONFIG, ~/.kube/config or in-cluster): {error}"
            );
            return ExitCode::from(2);
        }
    };
    let counts = Arc::new(RequestCounts::default());
    let client = match counting_client(config, counts) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("error: cannot build a Kubernetes client: {error}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = controller::check_apis(&client, cli.namespace.as_deref()).await {
        eprintln!("error: {error}");
        return ExitCode::from(2);
    }
    let settings = Settings {
        namespace: cli.namespace,
        cluster_domain: cli.cluster_domain,
        reporter: Reporter {
            controller: canary_operator::FIELD_MANAGER.to_owned(),
            instance: cli.instance,
        },
    };
    tracing::info!(
        namespace = settings.namespace.as_deref().unwrap_or("<all>"),
        "starting controller"
    );
    let (_ctx, running) = controller::controller(client, settings, shutdown_signal());
    running.await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Resolves on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
