//! Weight-shift latency: one `spec.weight` edit at a time, each timed from the PATCH response to
//! the VirtualService watch event that carries the new weights.

use std::time::{Duration, Instant};

use canary_operator::api::CanaryRelease;
use canary_operator::api::istio::VirtualService;
use futures::{Stream, StreamExt};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;

/// The longest the bench waits for one edit to show; an edit that takes longer is counted as
/// timed out instead of stalling the run.
const EDIT_LIMIT: Duration = Duration::from_secs(30);

/// A pause between edits, as between two people's edits: the status write that follows the
/// VirtualService write triggers one more (no-op) reconcile, which should not overlap the next edit.
const BETWEEN_EDITS: Duration = Duration::from_millis(50);

pub struct Shifts {
    /// Milliseconds from the PATCH response to the VirtualService event, one per edit that showed.
    pub samples_ms: Vec<f64>,
    /// Edits whose VirtualService event did not come within [`EDIT_LIMIT`].
    pub timed_out: usize,
    /// Edits whose VirtualService event came before the PATCH response was read (counted as 0).
    pub before_response: usize,
}

/// Watch events of one named object, as they arrive.
fn watch_one<K>(
    api: Api<K>,
    name: &str,
) -> impl Stream<Item = Result<K, watcher::Error>> + Unpin + use<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher(api, config)
        .default_backoff()
        .applied_objects()
        .boxed()
}

/// Reads `stream` until `matches` holds for an object, or the deadline; true if it did.
async fn until<K>(
    stream: &mut (impl Stream<Item = Result<K, watcher::Error>> + Unpin),
    deadline: Instant,
    matches: impl Fn(&K) -> bool,
) -> bool {
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.next()).await {
            Ok(Some(Ok(object))) if matches(&object) => return true,
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return false,
        }
    }
}

/// The canary weight the VirtualService routes, if its route carries `stable` and `canary`
/// subsets that add up to 100.
fn canary_weight(vs: &VirtualService, stable: &str, canary: &str) -> Option<i32> {
    let (s, c) = (vs.weight_of(stable)?, vs.weight_of(canary)?);
    (s + c == 100).then_some(c)
}

/// `count` edits of the release's weight, one at a time. `offset` varies the sequence of weights
/// between runs; consecutive weights always differ.
pub async fn shift(
    client: &Client,
    namespace: &str,
    name: &str,
    (stable, canary): (&str, &str),
    count: usize,
    offset: usize,
) -> Shifts {
    let releases: Api<CanaryRelease> = Api::namespaced(client.clone(), namespace);
    // A task of its own stamps each VirtualService event when it arrives, not when the edit loop
    // gets round to reading it.
    let (tx, mut routes) = futures::channel::mpsc::unbounded::<(Instant, Option<i32>)>();
    let mut events = watch_one(
        Api::<VirtualService>::namespaced(client.clone(), namespace),
        name,
    );
    let (stable_name, canary_name) = (stable.to_owned(), canary.to_owned());
    let watching = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let Ok(vs) = event else { continue };
            let weight = canary_weight(&vs, &stable_name, &canary_name);
            if tx.unbounded_send((Instant::now(), weight)).is_err() {
                break;
            }
        }
    });
    let mut statuses = watch_one(releases.clone(), name);
    // Both watches list first; waiting for that keeps their start-up out of the first sample.
    let primed = Instant::now() + EDIT_LIMIT;
    let _ = tokio::time::timeout_at(primed.into(), routes.next()).await;
    let _ = until(&mut statuses, primed, |_| true).await;

    let mut shifts = Shifts {
        samples_ms: Vec::with_capacity(count),
        timed_out: 0,
        before_response: 0,
    };
    for i in 0..count {
        // 37 is coprime to 99, so the weights walk through 1..=99 and never repeat back to back.
        let weight = 1 + ((i + offset) * 37 % 99) as i32;
        let sent = Instant::now();
        let patched = releases
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"weight": weight}})),
            )
            .await
            .expect("patch spec.weight");
        let responded = Instant::now();
        let generation = patched.metadata.generation;
        let deadline = sent + EDIT_LIMIT;
        let mut seen = None;
        while let Ok(Some((at, routed))) =
            tokio::time::timeout_at(deadline.into(), routes.next()).await
        {
            if routed == Some(weight) {
                seen = Some(at);
                break;
            }
        }
        match seen {
            Some(at) => {
                if at < responded {
                    shifts.before_response += 1;
                }
                let ms = at.saturating_duration_since(responded).as_secs_f64() * 1000.0;
                shifts.samples_ms.push(ms);
            }
            None => shifts.timed_out += 1,
        }
        // The status shows the edit last; the next edit waits for it so edits never overlap.
        let _ = until(&mut statuses, deadline, |r: &CanaryRelease| {
            r.status.as_ref().is_some_and(|s| {
                s.observed_generation == generation && s.canary_weight == Some(weight)
            })
        })
        .await;
        tokio::time::sleep(BETWEEN_EDITS).await;
    }
    watching.abort();
    shifts
}
