//! The operator under test: in this process (the CRD from the code being tested, and a
//! controller scoped to one test namespace), or as a process scoped the same way.

use std::sync::Arc;
use std::time::Duration;

use canary_operator::api::CanaryRelease;
use canary_operator::api::TrafficProvider;
use canary_operator::context::{Context, Settings};
use canary_operator::controller;
use canary_operator::metrics::Metrics;
use canary_operator::readiness::Readiness;
use canary_operator::requests::{RequestCounts, counting_client};
use canary_operator::route_claims::RouteClaims;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, CustomResourceExt};

use super::process::{Process, Spawn};
use super::{TestNs, wait_for};

/// The operator, running in this process against the test's namespace; stopped when dropped.
pub struct Operator {
    pub ctx: Arc<Context>,
    counts: Arc<RequestCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Operator {
    /// Write requests (POST, PUT, PATCH, DELETE) the operator has sent.
    pub fn writes(&self) -> u64 {
        self.counts.writes()
    }

    pub fn reconciles(&self) -> u64 {
        self.ctx.metrics.reconciles.get()
    }
}

/// Installs (or updates) the CRD from the code under test, so a cluster started before a CRD
/// change still tests the current schema.
pub async fn install_crd(ns: &TestNs) {
    install_crd_on(&ns.client).await;
}

/// [`install_crd`] on the API server of `client`.
pub async fn install_crd_on(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let applied = crds
        .patch(
            "canaryreleases.canary.dev",
            &PatchParams::apply("canary-operator-tests").force(),
            &Patch::Apply(CanaryRelease::crd()),
        )
        .await;
    if let Err(e) = applied {
        panic!("apply CRD: {e}");
    }
    wait_for("CRD established", Duration::from_secs(60), async || {
        let crd = crds.get("canaryreleases.canary.dev").await.ok()?;
        let established = crd
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
}

/// Installs the CRD and starts the operator for the test's namespace.
pub async fn start_operator(ns: &TestNs) -> Operator {
    // The operator's logs, for a failing test: TEST_LOG=canary_operator=debug cargo test ...
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("TEST_LOG"))
        .with_test_writer()
        .try_init();
    install_crd(ns).await;
    let config = kube::Config::infer()
        .await
        .unwrap_or_else(|e| panic!("kube config: {e}"));
    let counts = Arc::new(RequestCounts::default());
    let client = counting_client(config, counts.clone()).unwrap_or_else(|e| panic!("client: {e}"));
    let providers = TrafficProvider::ALL.to_vec();
    if let Err(e) = controller::check_apis(&client, Some(&ns.name), &providers).await {
        panic!("CRDs installed: {e}");
    }
    let settings = Settings {
        namespace: Some(ns.name.clone()),
        // Rollout tests measure every second or two, against a Prometheus scraping every second.
        min_analysis_interval: Duration::from_secs(1),
        traffic_providers: providers,
        ..Settings::default()
    };
    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());
    let claims = Arc::new(RouteClaims::new(&settings.cluster_domain));
    let (ctx, running) = controller::controller(
        client,
        settings,
        metrics,
        readiness,
        claims,
        std::future::pending(),
    );
    Operator {
        ctx,
        counts,
        task: tokio::spawn(running),
    }
}

impl Process {
    /// Starts the operator binary for the test's namespace, with `extra` arguments; waits until
    /// it has logged its HTTP address.
    pub fn start(ns: &TestNs, extra: &[&str]) -> Process {
        Process::start_logging(ns, extra, "info")
    }

    /// [`Process::start`] with the log filter `log` (OPERATOR_LOG overrides it:
    /// OPERATOR_LOG=canary_operator=debug cargo test ... for a failing test's story).
    pub fn start_logging(ns: &TestNs, extra: &[&str], log: &str) -> Process {
        Spawn::new()
            .namespace(&ns.name)
            .args(extra)
            .log_filter(&std::env::var("OPERATOR_LOG").unwrap_or_else(|_| log.to_owned()))
            .echo()
            .start()
    }
}
