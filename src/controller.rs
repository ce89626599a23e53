//! Wires the reconciler to the API server: the watches that feed the caches of releases and of the
//! children they own, the kube-runtime `Controller`, and the retry policy. What a reconcile shares
//! (client, caches, settings) is in [`crate::context`], below the steps that use it.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::{CanaryRelease, TrafficProvider};
use crate::cache::ChildStore;
use crate::client::Clients;
use crate::context::{Child, Context, Failures, Settings, Stores, Unseen};
use crate::metrics::Metrics;
use crate::readiness::{Readiness, WatchBackoff};
use crate::route_claims::RouteClaims;
use crate::{Error, reconcile};

fn error_policy(release: Arc<CanaryRelease>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failed(error.step().as_str(), error.metric_label());
    let delay = ctx.next_backoff(&release);
    tracing::warn!(
        namespace = release.namespace().unwrap_or_default(),
        name = release.name_any(),
        step = error.step().as_str(),
        reason = error.metric_label(),
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed: {error}"
    );
    Action::requeue(delay)
}

/// How to install the CanaryRelease CRD, for messages at start and when it goes missing.
pub const CRD_INSTALL_HINT: &str = "install it with `kubectl apply --server-side -f crd/canaryrelease.yaml` (or `canary-operator crd | kubectl apply --server-side -f -`)";

/// Why the operator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "the CanaryRelease CRD (canaryreleases.canary.dev) is not installed: {CRD_INSTALL_HINT}"
    )]
    CrdMissing,
    #[error("{} are not installed: {}", .0.crds(), .0.install_hint())]
    ProviderMissing(TrafficProvider),
    #[error(
        "not allowed to {verb} {resource} in {scope}: grant `{verb}` and `watch` on {resource} to the operator's identity (the Helm chart's ClusterRole does), or run it only for namespaces it may read: `--namespace a,b` (the chart's `--set watchNamespaces={{a,b}}`). The apiserver said: {message}"
    )]
    Forbidden {
        verb: &'static str,
        resource: String,
        scope: String,
        message: String,
    },
    #[error("cannot reach the Kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

/// Checks that the APIs the operator needs are served and that it may read them, so a missing
/// CRD or a missing grant is one clear message at start instead of a stream of watch errors.
/// Only the traffic providers the operator runs with are checked.
pub async fn check_apis(
    client: &Client,
    namespace: Option<&str>,
    providers: &[TrafficProvider],
) -> Result<(), StartError> {
    check_api::<CanaryRelease>(client, namespace, StartError::CrdMissing).await?;
    macro_rules! check_provider_kinds {
        ($($field:ident: $kind:ty => $policy:ident),* $(,)?) => {
            $(
                if let Some(provider) = TrafficProvider::of_group(&<$kind as Resource>::group(&()))
                    && providers.contains(&provider)
                {
                    check_api::<$kind>(client, namespace, StartError::ProviderMissing(provider))
                        .await?;
                }
            )*
        };
    }
    crate::with_child_kinds!(check_provider_kinds);
    Ok(())
}

async fn check_api<K>(
    client: &Client,
    namespace: Option<&str>,
    missing: StartError,
) -> Result<(), StartError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let probe = ListParams::default().limit(1);
    let api = scoped::<K>(client, namespace);
    let deadline = tokio::time::Instant::now() + START_PATIENCE;
    let mut pause = Duration::from_millis(250);
    loop {
        match api.list_metadata(&probe).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => return Err(missing),
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(StartError::Forbidden {
                    verb: "list",
                    resource: resource_name::<K>(),
                    scope: scope_name(namespace),
                    message: s.message,
                });
            }
            // An apiserver that is still starting (503 until its APIs are installed), is
            // overloaded (429) or unreachable for a moment: the answer will change by itself.
            Err(error) if passing(&error) && tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, resource = resource_name::<K>(), "the Kubernetes API cannot answer yet; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(StartError::Api(error)),
        }
    }
}

/// How long the checks at start wait for an apiserver that is still coming up or out of reach,
/// before the operator gives up with the error (and its restart backoff takes over).
const START_PATIENCE: Duration = Duration::from_secs(60);

/// Errors that time alone may resolve: server errors, throttling, no connection.
fn passing(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// `plural.group`, as RBAC rules and `kubectl get` name a resource (`deployments.apps`).
fn resource_name<K: Resource<DynamicType = ()>>() -> String {
    let group = K::group(&());
    if group.is_empty() {
        K::plural(&()).into_owned()
    } else {
        format!("{}.{group}", K::plural(&()))
    }
}

fn scope_name(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("namespace {ns}"),
        None => "all namespaces".to_owned(),
    }
}

/// Registers the watch of `K` with `readiness` and returns its path, the key of its state.
fn register_watch<K: Resource<DynamicType = ()>>(
    readiness: &Readiness,
    namespace: Option<&str>,
    install_hint: Option<&str>,
) -> String {
    let path = K::url_path(&(), namespace);
    let what = format!("{} in {}", resource_name::<K>(), scope_name(namespace));
    readiness.register(path.clone(), what, install_hint.map(str::to_owned));
    path
}

/// A watch stream with its own short backoff, whose errors go to `readiness` (logged there) and
/// stop here. kube's `Controller` pauses all its trigger streams at once after any error they
/// yield (0.8 s doubling to 30 s, reset only after 120 s without one): after an apiserver restart
/// every watch's late errors kept all of them asleep, and unread, for minutes. Each watch retries
/// on its own instead.
fn watch_stream<K>(
    api: Api<K>,
    config: watcher::Config,
    readiness: Arc<Readiness>,
    path: String,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher(api, config)
        .backoff(WatchBackoff::default())
        .filter_map(move |item| {
            match &item {
                Ok(_) => readiness.succeeded(&path),
                Err(error) => readiness.failed(&path, error),
            }
            std::future::ready(item.ok().map(Ok))
        })
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
    readiness: &Arc<Readiness>,
    claims: Arc<RouteClaims>,
) -> (
    ChildStore<K>,
    impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
) {
    let store = ChildStore::default();
    let writer = store.clone();
    // Every object of the kind, not only ours: see `ChildStore`.
    let config = watcher::Config::default().page_size(LIST_PAGE_SIZE);
    let hint = TrafficProvider::of_group(&K::group(&())).map(TrafficProvider::install_hint);
    let path = register_watch::<K>(readiness, namespace, hint);
    let stream = watch_stream(
        scoped::<K>(client, namespace),
        config,
        readiness.clone(),
        path,
    )
    // The routes of others claim hosts too; the index keeps what they claim (nothing is kept
    // of the kinds that do not route).
    .inspect_ok({
        let scope = namespace.map(str::to_owned);
        move |event| claims.observe_child(event, scope.as_deref())
    })
    .try_filter_map(move |event| std::future::ready(Ok(writer.apply(event))));
    (store, stream)
}

macro_rules! watch_children {
    ($($field:ident: $kind:ty => $policy:ident),* $(,)?) => {
        /// A cache of every kind of child (see [`crate::kinds`]), and `controller` told to
        /// reconcile a release when one of its children changes.
        ///
        /// A kind of a traffic provider the operator was not started with is not watched (its
        /// CRDs may not be installed, and its RBAC not granted).
        fn watch_children(
            client: &Client,
            namespace: Option<&str>,
            providers: &[TrafficProvider],
            readiness: &Arc<Readiness>,
            claims: &Arc<RouteClaims>,
            mut controller: Controller<CanaryRelease>,
        ) -> (Stores, Controller<CanaryRelease>) {
            let mut stores = Stores::default();
            $(
                let group = <$kind as Resource>::group(&());
                if TrafficProvider::of_group(&group).is_none_or(|p| providers.contains(&p)) {
                    let (store, stream) =
                        child_cache::<$kind>(client, namespace, readiness, claims.clone());
                    stores.$field = store;
                    controller = controller.owns_stream(stream);
                } else {
                    stores.$field = ChildStore::unwatched();
                }
            )*
            (stores, controller)
        }
    };
}
crate::with_child_kinds!(watch_children);

/// Builds the controller. The returned future runs it until `shutdown` resolves, letting
/// reconciles in flight finish; the context stays readable meanwhile (tests read its counters).
///
/// `claims` may be shared by several controllers of one operator (one per watched namespace):
/// each feeds it what its watches see, and is told which of its releases to look at again when a
/// claim overlapping theirs changes.
pub fn controller(
    clients: impl Into<Clients>,
    settings: Settings,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    claims: Arc<RouteClaims>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> (Arc<Context>, impl Future<Output = ()> + Send + 'static) {
    let Clients {
        requests: client,
        child_watches,
    } = clients.into();
    let ns = settings.namespace.clone();
    let ns = ns.as_deref();
    let settings_providers = settings.traffic_providers.clone();
    let (releases, release_writer) = reflector::store();
    let release_path = register_watch::<CanaryRelease>(&readiness, ns, Some(CRD_INSTALL_HINT));
    let release_stream = watch_stream(
        scoped::<CanaryRelease>(&client, ns),
        watcher::Config::default().page_size(LIST_PAGE_SIZE),
        readiness.clone(),
        release_path,
    )
    .modify(|release| {
        // Neither is ever read; `kubectl apply` leaves a copy of the whole spec in the annotation.
        release.managed_fields_mut().clear();
        release
            .annotations_mut()
            .remove("kubectl.kubernetes.io/last-applied-configuration");
    })
    // Before the release store and the controller see it: a reconcile finds its claims current.
    .inspect_ok({
        let claims = claims.clone();
        let settings = settings.clone();
        move |event| {
            let scope = settings.namespace.as_deref();
            claims.observe_release(event, scope, |release| release_binds(release, &settings))
        }
    })
    .reflect(release_writer)
    .applied_objects();

    metrics.watch_releases(releases.clone());
    let failures = Failures::default();
    // Once every watch works again after an outage, every release is looked at again (from the
    // caches: no request when all is in place), and retries waiting out a backoff built up during
    // the outage run at once.
    let streaks = failures.clone();
    let recoveries = readiness.recoveries().map(move |()| {
        tracing::info!("every watch works again; reconciling every release");
        if let Ok(mut streaks) = streaks.lock() {
            streaks.clear();
        }
    });
    let controller = Controller::for_stream(release_stream, releases.clone());
    let (stores, controller) = watch_children(
        &child_watches,
        ns,
        &settings_providers,
        &readiness,
        &claims,
        controller,
    );
    let claimed = claims.subscribe(settings.namespace.clone());
    let ctx = Arc::new(Context {
        releases,
        client,
        stores,
        settings,
        metrics,
        failures,
        unseen: Unseen::default(),
        prometheus: crate::prometheus::Prometheus::new()
            .inspect_err(|error| tracing::error!(%error, "cannot build the Prometheus client; metric analysis will fail"))
            .ok(),
        gateway_pods: Default::default(),
        claims,
    });
    let running = controller
        .reconcile_all_on(recoveries)
        .reconcile_on(claimed)
        .with_config(ControllerConfig::default().concurrency(CONCURRENT_RECONCILES))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, ctx.clone())
        .for_each(|_| std::future::ready(()));
    (ctx, running)
}

/// What a release claims, from its spec: nothing when the operator cannot act on the spec (an
/// invalid release routes nothing), so that it keeps no host from others.
fn release_binds(release: &CanaryRelease, settings: &Settings) -> Vec<crate::claims::Bind> {
    use reconcile::validate::{provider_enabled, validate_with};
    validate_with(
        release,
        &settings.cluster_domain,
        settings.min_analysis_interval,
    )
    .and_then(|v| provider_enabled(&v, &settings.traffic_providers).map(|()| v))
    .map(|v| v.binds())
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("test", "Test")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn only_errors_that_time_resolves_are_waited_out_at_start() {
        let cases = [
            (503, true),
            (500, true),
            (429, true),
            (404, false),
            (403, false),
            (401, false),
            (400, false),
        ];
        for (code, waited_out) in cases {
            assert_eq!(passing(&api_error(code)), waited_out, "HTTP {code}");
        }
    }
}
