//! Wires the reconciler to the API server: caches (reflectors) of releases and of the children they
//! own, the kube-runtime `Controller`, and the retry policy.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::CanaryRelease;
use crate::api::istio::{DestinationRule, Gateway, VirtualService};
use crate::cache::{ChildStore, Compact};
use crate::metrics::Metrics;
use crate::{Error, reconcile};

/// What the operator watches and how it names things.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch one namespace, or all when `None`.
    pub namespace: Option<String>,
    /// DNS suffix of Services, used to write Istio hosts as fully qualified names.
    pub cluster_domain: String,
    /// Reported as the source of Events (`reportingController`/`reportingInstance`).
    pub reporter: Reporter,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            namespace: None,
            cluster_domain: "cluster.local".to_owned(),
            reporter: Reporter {
                controller: crate::FIELD_MANAGER.to_owned(),
                instance: None,
            },
        }
    }
}

/// Read-only caches of the children, kept compact ([`ChildStore`]).
#[derive(Clone)]
pub struct Stores {
    pub config_maps: ChildStore<ConfigMap>,
    pub deployments: ChildStore<Deployment>,
    pub autoscalers: ChildStore<HorizontalPodAutoscaler>,
    pub services: ChildStore<Service>,
    pub destination_rules: ChildStore<DestinationRule>,
    pub gateways: ChildStore<Gateway>,
    pub virtual_services: ChildStore<VirtualService>,
}

impl Stores {
    /// Waits (bounded) until every cache has listed once: before that a cache cannot tell a
    /// missing child from one not listed yet, and a reconcile would fail and back off.
    ///
    /// Polled: at a (re)start every queued reconcile waits here at once, and kube's
    /// `Store::wait_until_ready` (still used for the releases) wakes only the task that polled it
    /// last, which added 30 s to every start with releases present (seen with `make bench`).
    pub async fn wait_ready(&self) {
        // Past the limit a reconcile goes on and fails with `CacheNotReady`, to retry with backoff.
        let limit = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.ready() && tokio::time::Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// True once every cache has listed.
    fn ready(&self) -> bool {
        self.config_maps.listed()
            && self.deployments.listed()
            && self.autoscalers.listed()
            && self.services.listed()
            && self.destination_rules.listed()
            && self.gateways.listed()
            && self.virtual_services.listed()
    }
}

/// Longest wait for a cache to show our own write; past it the reconcile ends anyway.
const CACHE_LAG_LIMIT: Duration = Duration::from_secs(5);

/// Waits (bounded) until `seen` holds, checking the caches every few milliseconds.
///
/// A reconcile that wrote something ends only once the caches show the write. Otherwise the next
/// reconcile of the same release (triggered by that very write) could read the older cached copy,
/// judge it stale, and send the same write again: harmless on the server, but a write all the same.
pub async fn await_cache(what: &str, seen: impl Fn() -> bool) {
    let start = tokio::time::Instant::now();
    while !seen() {
        if start.elapsed() >= CACHE_LAG_LIMIT {
            tracing::debug!(what, "cache did not show our write in time");
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tracing::trace!(
        what,
        waited_ms = start.elapsed().as_millis() as u64,
        "cache caught up"
    );
}

/// A kind of object a release owns.
pub trait Child:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Compact
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    fn store(stores: &Stores) -> &ChildStore<Self>;
}

macro_rules! child {
    ($kind:ty, $field:ident) => {
        impl Child for $kind {
            fn store(stores: &Stores) -> &ChildStore<Self> {
                &stores.$field
            }
        }
    };
}
child!(ConfigMap, config_maps);
child!(Deployment, deployments);
child!(HorizontalPodAutoscaler, autoscalers);
child!(Service, services);
child!(DestinationRule, destination_rules);
child!(Gateway, gateways);
child!(VirtualService, virtual_services);

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    /// The controller's own cache of releases.
    pub releases: Store<CanaryRelease>,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per release, for the backoff. An entry lives until the release next
    /// reconciles successfully, so one deleted while failing leaves a few bytes behind.
    failures: Mutex<HashMap<ObjectRef<CanaryRelease>, u32>>,
}

impl Context {
    pub fn api<K: Child>(&self, namespace: &str) -> Api<K> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Forgets the failure streak of a release after a successful reconcile.
    pub fn reset_backoff(&self, release: &CanaryRelease) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&ObjectRef::from(release));
        }
    }

    /// Exponential backoff per release: 0.5 s, 1 s, 2 s, ... capped at 5 minutes.
    fn next_backoff(&self, release: &CanaryRelease) -> Duration {
        let streak = match self.failures.lock() {
            Ok(mut failures) => {
                let n = failures.entry(ObjectRef::from(release)).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 10,
        };
        let millis = 500u64.saturating_mul(1u64 << streak.saturating_sub(1).min(20));
        Duration::from_millis(millis.min(300_000))
    }
}

fn error_policy(release: Arc<CanaryRelease>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failures
        .get_or_create(&vec![("reason", error.metric_label().to_owned())])
        .inc();
    let delay = ctx.next_backoff(&release);
    tracing::warn!(
        namespace = release.namespace().unwrap_or_default(),
        name = release.name_any(),
        reason = error.metric_label(),
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed: {error}"
    );
    Action::requeue(delay)
}

/// Why the operator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "the CanaryRelease CRD (canaryreleases.canary.dev) is not installed: install it with `kubectl apply --server-side -f crd/canaryrelease.yaml` (or `canary-operator crd | kubectl apply --server-side -f -`)"
    )]
    CrdMissing,
    #[error(
        "Istio's networking CRDs (virtualservices/destinationrules/gateways.networking.istio.io, v1) are not installed: install Istio, or its CRDs, first"
    )]
    IstioMissing,
    #[error("cannot reach the Kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

/// Checks that the APIs the operator needs are served, so a missing CRD is one clear message at
/// start instead of a stream of watch errors.
pub async fn check_apis(client: &Client, namespace: Option<&str>) -> Result<(), StartError> {
    let probe = ListParams::default().limit(1);
    let releases: Api<CanaryRelease> = scoped(client, namespace);
    match releases.list_metadata(&probe).await {
        Err(kube::Error::Api(s)) if s.code == 404 => return Err(StartError::CrdMissing),
        other => other.map(|_| ())?,
    }
    let routes: Api<VirtualService> = scoped(client, namespace);
    match routes.list_metadata(&probe).await {
        Err(kube::Error::Api(s)) if s.code == 404 => Err(StartError::IstioMissing),
        other => other.map(|_| ()).map_err(StartError::from),
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Reconciles running at once. Unbounded, a start with 1,000 releases ran 1,000 at once: each held
/// its built children and a connection of its own (about 200 MiB at peak, kept by the allocator
/// afterwards), and the apiserver timed out Service creates. 32 keeps the apiserver just as busy
/// (`make bench`: cold convergence no slower) at a fraction of the memory.
pub const CONCURRENT_RECONCILES: u16 = 32;

/// Objects per page of a cache's initial list. Each page is decoded whole, managed fields
/// included, before the cache keeps its compact copies, and the eight caches list at once: the
/// pages in flight set the peak of a start with 1,000 releases in place (`make bench`: kube's
/// default of 500 kept about 15 MiB more resident than 100). 25 costs 40 list requests per 1,000
/// objects.
const LIST_PAGE_SIZE: u32 = 25;

/// A cache of one child kind, and the stream of changes that drives the controller: only those
/// the reconciler can see ([`ChildStore::apply`]). The full objects live only while decoded.
pub fn child_cache<K: Child>(
    client: &Client,
    namespace: Option<&str>,
) -> (
    ChildStore<K>,
    impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
) {
    let store = ChildStore::default();
    let writer = store.clone();
    // Every object of the kind, not only ours: see `ChildStore`.
    let config = watcher::Config::default().page_size(LIST_PAGE_SIZE);
    let stream = watcher(scoped::<K>(client, namespace), config)
        .default_backoff()
        .try_filter_map(move |event| std::future::ready(Ok(writer.apply(event))));
    (store, stream)
}

/// Builds the controller. The returned future runs it until `shutdown` resolves, letting
/// reconciles in flight finish; the context stays readable meanwhile (tests read its counters).
pub fn controller(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> (Arc<Context>, impl Future<Output = ()> + Send + 'static) {
    let ns = settings.namespace.clone();
    let ns = ns.as_deref();
    let (config_maps, cm_stream) = child_cache::<ConfigMap>(&client, ns);
    let (deployments, deploy_stream) = child_cache::<Deployment>(&client, ns);
    let (autoscalers, hpa_stream) = child_cache::<HorizontalPodAutoscaler>(&client, ns);
    let (services, svc_stream) = child_cache::<Service>(&client, ns);
    let (destination_rules, dr_stream) = child_cache::<DestinationRule>(&client, ns);
    let (gateways, gw_stream) = child_cache::<Gateway>(&client, ns);
    let (virtual_services, vs_stream) = child_cache::<VirtualService>(&client, ns);

    let (releases, release_writer) = reflector::store();
    let release_stream = watcher(
        scoped::<CanaryRelease>(&client, ns),
        watcher::Config::default().page_size(LIST_PAGE_SIZE),
    )
    .default_backoff()
    .modify(|release| {
        // Neither is ever read; `kubectl apply` leaves a copy of the whole spec in the annotation.
        release.managed_fields_mut().clear();
        release
            .annotations_mut()
            .remove("kubectl.kubernetes.io/last-applied-configuration");
    })
    .reflect(release_writer)
    .applied_objects();

    metrics.watch_releases(releases.clone());
    let ctx = Arc::new(Context {
        releases: releases.clone(),
        client,
        stores: Stores {
            config_maps,
            deployments,
            autoscalers,
            services,
            destination_rules,
            gateways,
            virtual_services,
        },
        settings,
        metrics,
        failures: Mutex::new(HashMap::new()),
    });
    let running = Controller::for_stream(release_stream, releases)
        .owns_stream(cm_stream)
        .owns_stream(deploy_stream)
        .owns_stream(hpa_stream)
        .owns_stream(svc_stream)
        .owns_stream(dr_stream)
        .owns_stream(gw_stream)
        .owns_stream(vs_stream)
        .with_config(ControllerConfig::default().concurrency(CONCURRENT_RECONCILES))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, ctx.clone())
        .for_each(|_| std::future::ready(()));
    (ctx, running)
}
