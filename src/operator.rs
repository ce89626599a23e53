//! The operator process around the controller: `/healthz`, `/readyz` and `/metrics`, leader
//! election on a Lease, one controller per watched namespace, and a graceful stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::FutureExt;

use crate::api::TrafficProvider;
use kube::runtime::events::Reporter;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;

use crate::client::Clients;
use crate::context::Settings;
use crate::controller::{self, StartError};
use crate::metrics::Metrics;
use crate::readiness::{ObserveLists, Readiness};
use crate::requests::{CountRequests, RequestCounts, counting_client};
use crate::route_claims::RouteClaims;

/// How the process runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    pub cluster_domain: String,
    /// This instance's name, in Events and as the Lease holder.
    pub instance: String,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub http_address: SocketAddr,
    pub leader_election: Option<LeaderElection>,
    /// Shortest analysis interval a release may ask for.
    pub min_analysis_interval: std::time::Duration,
    /// The traffic providers to watch and write; the others' CRDs need not be installed.
    pub traffic_providers: Vec<TrafficProvider>,
}

/// Which Lease decides the leader, and for how long a lost leader keeps it.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub lease_name: String,
    pub lease_namespace: String,
    pub lease_duration_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("cannot build a Kubernetes client: {0}")]
    Connection(#[from] crate::client::ClientError),
    #[error("cannot serve HTTP on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("leader election failed: {0}")]
    Lease(#[from] LeaseManagerError),
    #[error(
        "lost the leader Lease to another instance; exiting so that a fresh start stands by again"
    )]
    LostLease,
}

/// Shared between the HTTP handlers and the controllers.
#[derive(Clone)]
struct Probes {
    metrics: Arc<Metrics>,
    /// Ready when the caches are synced and every watch works, or while standing by for the Lease.
    readiness: Arc<Readiness>,
}

/// Runs until `shutdown` resolves (or leadership is lost).
pub async fn run(
    config: kube::Config,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let controller_requests = Arc::new(RequestCounts::default());
    let lease_requests = Arc::new(RequestCounts::default());
    let metrics = Arc::new(Metrics::new(vec![
        ("controller", controller_requests.clone()),
        ("leader-election", lease_requests.clone()),
    ]));
    let readiness = Arc::new(Readiness::default());
    let client = crate::client::multiplexed(&config)?
        .with_layer(&CountRequests(controller_requests.clone()))
        .with_layer(&ObserveLists(readiness.clone()))
        .build();
    let clients = Clients {
        child_watches: kube::client::ClientBuilder::try_from(config.clone())
            .map_err(RunError::Client)?
            .with_layer(&CountRequests(controller_requests))
            .with_layer(&ObserveLists(readiness.clone()))
            .build(),
        requests: client.clone(),
    };
    if options.namespaces.is_empty() {
        controller::check_apis(&client, None, &options.traffic_providers).await?;
    }
    for namespace in &options.namespaces {
        controller::check_apis(&client, Some(namespace), &options.traffic_providers).await?;
    }

    let health = Probes {
        metrics: metrics.clone(),
        readiness,
    };
    let listener = tokio::net::TcpListener::bind(options.http_address)
        .await
        .map_err(|e| RunError::Bind(options.http_address, e))?;
    let address = listener.local_addr().unwrap_or(options.http_address);
    tracing::info!(%address, "serving /healthz, /readyz and /metrics");
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(serve(listener, health.clone(), stopped.clone()));
    tokio::spawn(crate::memory::trim_after_work(metrics.reconciles.clone()));
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("stopping: letting reconciles in flight finish");
        let _ = stop.send(true);
    });

    let Some(election) = &options.leader_election else {
        metrics.leader.set(1);
        run_controllers(clients, &options, &health, wait_true(stopped)).await;
        return Ok(());
    };
    let lease_client = counting_client(config, lease_requests).map_err(RunError::Client)?;
    // Renew when a third of the Lease is left, so one slow request does not lose it.
    let grace = (election.lease_duration_seconds / 3).max(1);
    let manager = LeaseManagerBuilder::new(lease_client, &election.lease_name)
        .with_namespace(&election.lease_namespace)
        .with_identity(&options.instance)
        .with_duration(election.lease_duration_seconds)
        .with_grace(grace)
        .with_field_manager(crate::FIELD_MANAGER)
        .build()
        .await?;
    let (mut leading, lease_task) = manager.watch().await;
    // A standby is healthy and ready: it serves nothing until it leads.
    health.readiness.set_started(true);
    tracing::info!(lease = %election.lease_name, namespace = %election.lease_namespace, "waiting to lead");
    let outcome = tokio::select! {
        became = leading.wait_for(|leader| *leader) => match became {
            Ok(_) => Some(()),
            Err(_) => None,
        },
        _ = wait_true(stopped.clone()) => None,
    };
    let mut result = Ok(());
    if outcome.is_some() {
        tracing::info!("leading: starting the controller");
        metrics.leader.set(1);
        let mut lost_watch = leading.clone();
        let mut stopped_watch = stopped.clone();
        let lost = Arc::new(AtomicBool::new(false));
        let lost_flag = lost.clone();
        let until = async move {
            tokio::select! {
                _ = lost_watch.wait_for(|leader| !*leader) => lost_flag.store(true, Ordering::Relaxed),
                _ = stopped_watch.wait_for(|stop| *stop) => {},
            }
        };
        run_controllers(clients, &options, &health, until).await;
        metrics.leader.set(0);
        if lost.load(Ordering::Relaxed) {
            result = Err(RunError::LostLease);
        }
    }
    // Dropping the receiver makes the lease task release the Lease, so a standby takes over at
    // once instead of after the Lease expires.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("released the Lease"),
        Ok(Ok(Err(error))) => tracing::warn!(%error, "could not release the Lease"),
        Ok(Err(error)) => tracing::warn!(%error, "lease task failed"),
        Err(_) => tracing::warn!("timed out releasing the Lease"),
    }
    result
}

/// Resolves once the channel holds `true` (or its sender is gone).
async fn wait_true(mut receiver: watch::Receiver<bool>) {
    let _ = receiver.wait_for(|value| *value).await;
}

/// One controller per watched namespace (or one for all), until `until` resolves.
async fn run_controllers(
    clients: Clients,
    options: &Options,
    health: &Probes,
    until: impl Future<Output = ()> + Send + 'static,
) {
    let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    // Each controller needs its own stop future; fan one out through a channel.
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        until.await;
        let _ = stop.send(true);
    });
    let mut running = Vec::new();
    let mut contexts = Vec::new();
    // One index of claims for all: a host is one whichever namespace claims it.
    let claims = Arc::new(RouteClaims::new(&options.cluster_domain));
    for namespace in scopes {
        let settings = Settings {
            namespace,
            cluster_domain: options.cluster_domain.clone(),
            reporter: Reporter {
                controller: crate::FIELD_MANAGER.to_owned(),
                instance: Some(options.instance.clone()),
            },
            min_analysis_interval: options.min_analysis_interval,
            check_gateway_pods: options.namespaces.is_empty(),
            traffic_providers: options.traffic_providers.clone(),
        };
        let (ctx, future) = controller::controller(
            clients.clone(),
            settings,
            health.metrics.clone(),
            health.readiness.clone(),
            claims.clone(),
            wait_true(stopped.clone()),
        );
        contexts.push(ctx);
        running.push(future);
    }
    health.readiness.set_started(false);
    let readiness = health.readiness.clone();
    tokio::spawn(async move {
        // Polled, not awaited: a store wakes only the last task that waited on it, and the
        // controller waits on the release store too (see `Stores::wait_ready`).
        for ctx in &contexts {
            while !ctx.stores.ready() || ctx.releases.wait_until_ready().now_or_never().is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        readiness.set_started(true);
        tracing::info!("caches synced; ready");
    });
    futures::future::join_all(running).await;
}

async fn serve(listener: tokio::net::TcpListener, health: Probes, stopped: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(wait_true(stopped))
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "HTTP server failed");
    }
}

async fn readyz(State(health): State<Probes>) -> impl IntoResponse {
    match health.readiness.check() {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(problems) => (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n")),
    }
}

async fn metrics(State(health): State<Probes>) -> impl IntoResponse {
    match health.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "cannot encode metrics".to_owned(),
        ),
    }
}
