//! What every reconcile shares: the client, the caches of the children and of the releases, the
//! settings and metrics; waiting for the caches to show the reconcile's own writes; Events.
//!
//! It sits below the reconcile's steps and above the caches: the controller fills it, the steps
//! read it, and it imports neither.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::CanaryRelease;
use crate::api::TrafficProvider;
use crate::cache::{ChildStore, Compact};
use crate::metrics::Metrics;

/// What the operator watches and how it names things.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch one namespace, or all when `None`.
    pub namespace: Option<String>,
    /// DNS suffix of Services, used to write Istio hosts as fully qualified names.
    pub cluster_domain: String,
    /// Reported as the source of Events (`reportingController`/`reportingInstance`).
    pub reporter: Reporter,
    /// Shortest analysis interval a release may ask for (`--min-analysis-interval`).
    pub min_analysis_interval: Duration,
    /// Whether to check that Gateways' selectors match pods, which lists pods cluster-wide: only
    /// an operator watching every namespace is granted that.
    pub check_gateway_pods: bool,
    /// The traffic providers whose objects the operator watches and writes
    /// (`--traffic-providers`); a release asking for another is refused with a condition.
    pub traffic_providers: Vec<TrafficProvider>,
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
            min_analysis_interval: crate::rollout::DEFAULT_MIN_INTERVAL,
            check_gateway_pods: true,
            traffic_providers: vec![TrafficProvider::Istio],
        }
    }
}

macro_rules! stores {
    ($($field:ident: $kind:ty => $policy:ident),* $(,)?) => {
        /// Read-only caches of the children, one per kind of [`crate::kinds`], kept compact
        /// ([`ChildStore`]).
        #[derive(Clone, Default)]
        pub struct Stores {
            $(pub $field: ChildStore<$kind>,)*
        }

        impl Stores {
            /// True once every cache has listed and none is listing again. During a list again
            /// (after a watch fell too far behind, as after an apiserver restart) a cache still
            /// holds its older copies, which may miss a deletion made meanwhile; a reconcile waits
            /// for the new list.
            pub fn ready(&self) -> bool {
                true $(&& self.$field.current())*
            }
        }

        $(
            impl Child for $kind {
                fn store(stores: &Stores) -> &ChildStore<Self> {
                    &stores.$field
                }
            }
        )*
    };
}
crate::with_child_kinds!(stores);

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
}

/// Longest wait for a cache to show our own write; past it the reconcile goes on anyway.
pub const CACHE_LAG_LIMIT: Duration = Duration::from_secs(5);

/// Waits (bounded) until `seen` holds, checking the caches every few milliseconds.
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

/// Tells whether the caches show one write of a reconcile.
pub type Sighting = Box<dyn Fn() -> bool + Send + Sync>;

/// The writes of each release that the caches may not show yet.
///
/// A reconcile that reads a cache older than the release's last writes would judge those objects
/// stale and send the same writes again: harmless on the server, but writes all the same. So a
/// reconcile of a release whose previous writes the caches do not all show yet does nothing: the
/// watch events of those very writes are on their way, and each one triggers the release again.
/// Waiting for them instead would hold one of the controller's concurrency slots for as long as
/// the watches lag, which at a cold start with thousands of releases is what the slots would
/// spend most of their time on.
#[derive(Default)]
pub struct Unseen {
    by_release: Mutex<HashMap<String, (tokio::time::Instant, Vec<Sighting>)>>,
}

/// Entries are swept (those older than [`CACHE_LAG_LIMIT`], which no wait would honour anyway)
/// when there are more than this many: a deleted release leaves its last entry behind.
const UNSEEN_SWEEP_ABOVE: usize = 1024;

impl Unseen {
    /// Notes writes of the release `uid` that its next reconcile must find in the caches.
    pub fn hold(&self, uid: &str, sightings: Vec<Sighting>) {
        if sightings.is_empty() {
            return;
        }
        let Ok(mut by_release) = self.by_release.lock() else {
            return;
        };
        let now = tokio::time::Instant::now();
        if by_release.len() > UNSEEN_SWEEP_ABOVE {
            by_release.retain(|_, (at, _)| now.duration_since(*at) < CACHE_LAG_LIMIT);
        }
        by_release
            .entry(uid.to_owned())
            .or_insert_with(|| (now, Vec::new()))
            .1
            .extend(sightings);
    }

    /// Whether the caches show every write of the release `uid` noted so far (or the oldest of
    /// them is older than [`CACHE_LAG_LIMIT`], past which they are not waited for). Forgets
    /// the writes once true.
    pub fn shown(&self, uid: &str) -> bool {
        let Ok(mut by_release) = self.by_release.lock() else {
            return true;
        };
        let Some((at, sightings)) = by_release.get(uid) else {
            return true;
        };
        let shown = sightings.iter().all(|seen| seen());
        if !shown && at.elapsed() < CACHE_LAG_LIMIT {
            return false;
        }
        if !shown {
            tracing::debug!("caches did not show the release's writes in time; going on");
        }
        by_release.remove(uid);
        true
    }
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

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    /// The controller's own cache of releases.
    pub releases: Store<CanaryRelease>,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per release, for the backoff. An entry lives until the release next
    /// reconciles successfully (or the watches recover from an outage), so one deleted while
    /// failing leaves a few bytes behind.
    pub failures: Failures,
    pub unseen: Unseen,
    /// The client of the rollouts' metric analysis; `None` if it could not be built (then every
    /// query is an error, which pauses rollouts and never rolls them back).
    pub prometheus: Option<crate::prometheus::Prometheus>,
    /// Whether the Gateways' selectors match pods, per selector.
    pub gateway_pods: crate::gateway_pods::GatewayPods,
    /// Who claims which host where: the releases' and everybody else's routes.
    pub claims: Arc<crate::route_claims::RouteClaims>,
}

/// Consecutive failures per release; shared with the controller, which clears them after an outage.
pub type Failures = Arc<Mutex<HashMap<ObjectRef<CanaryRelease>, u32>>>;

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
    pub fn next_backoff(&self, release: &CanaryRelease) -> Duration {
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

/// Records an Event on the release, naming the child it is about, if any.
///
/// Events are best effort: failing to record one must not fail or repeat the reconcile. A new
/// recorder each time, because a shared one folds events with the same reason into a series that
/// keeps the first note, and our notes differ (which child, which problem). Events are only sent
/// on transitions, so there is no flood to fold.
pub async fn publish<C: Resource<DynamicType = ()>>(
    ctx: &Context,
    release: &CanaryRelease,
    type_: EventType,
    reason: &str,
    note: String,
    related: Option<&C>,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(fit_note(note)),
        action: "Reconcile".to_owned(),
        secondary: related.map(|child| child.object_ref(&())),
    };
    let recorder = Recorder::new(ctx.client.clone(), ctx.settings.reporter.clone());
    if let Err(error) = recorder.publish(&event, &release.object_ref(&())).await {
        tracing::warn!(%error, reason, "could not record an Event");
    }
}

/// Longest note the API server accepts on an Event (events.k8s.io/v1: 1 kB).
const MAX_NOTE_BYTES: usize = 1024;

/// The note, cut at a character boundary with an ellipsis when it is longer than an Event may
/// carry: a rollout's message can name every check, and an Event refused for its length is lost.
/// The status keeps the whole message.
fn fit_note(note: String) -> String {
    if note.len() <= MAX_NOTE_BYTES {
        return note;
    }
    const MORE: &str = " …";
    let mut end = MAX_NOTE_BYTES - MORE.len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MORE}", &note[..end])
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn notes_fit_in_an_event() {
        let short = "rolled back".to_owned();
        assert_eq!(fit_note(short.clone()), short);
        let exact = "x".repeat(MAX_NOTE_BYTES);
        assert_eq!(fit_note(exact.clone()), exact);
        // Multi-byte characters (× in "1.3 × stable") are never split.
        let long = "1.3 × stable; ".repeat(200);
        let fitted = fit_note(long.clone());
        assert!(fitted.len() <= MAX_NOTE_BYTES, "{}", fitted.len());
        assert!(fitted.ends_with(" …"));
        assert!(long.starts_with(fitted.trim_end_matches(" …")));
    }

    use super::*;

    fn flag() -> (Arc<AtomicBool>, Sighting) {
        let shown = Arc::new(AtomicBool::new(false));
        let seen = shown.clone();
        (shown, Box::new(move || seen.load(Ordering::Relaxed)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_waits_until_every_write_shows() {
        let unseen = Unseen::default();
        let (children, children_seen) = flag();
        let (status, status_seen) = flag();
        unseen.hold("a", vec![children_seen]);
        unseen.hold("a", vec![status_seen]);
        assert!(!unseen.shown("a"), "nothing shows yet");
        children.store(true, Ordering::Relaxed);
        assert!(!unseen.shown("a"), "the status write does not show yet");
        status.store(true, Ordering::Relaxed);
        assert!(unseen.shown("a"), "both show");
        // Forgotten once shown: a later write of the same object is not held against it.
        children.store(false, Ordering::Relaxed);
        assert!(unseen.shown("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn another_release_never_waits_and_a_lost_write_only_for_the_limit() {
        let unseen = Unseen::default();
        let (_never, never_seen) = flag();
        unseen.hold("a", vec![never_seen]);
        assert!(unseen.shown("b"), "b wrote nothing");
        tokio::time::advance(CACHE_LAG_LIMIT - Duration::from_millis(1)).await;
        assert!(!unseen.shown("a"));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            unseen.shown("a"),
            "past the limit the write is not waited for"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn entries_of_deleted_releases_are_swept() {
        let unseen = Unseen::default();
        for i in 0..=UNSEEN_SWEEP_ABOVE {
            unseen.hold(&format!("old-{i}"), vec![flag().1]);
        }
        tokio::time::advance(CACHE_LAG_LIMIT).await;
        unseen.hold("new", vec![flag().1]);
        let left = unseen.by_release.lock().map(|m| m.len()).unwrap_or(0);
        assert_eq!(left, 1, "only the new entry is left");
    }
}
