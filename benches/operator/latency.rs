//! Weight-shift latency: one `spec.weight` edit at a time, each timed from the PATCH response to
//! the VirtualService watch event that carries the new weights, and beside it the floor this
//! machine allows at that moment. When the cluster runs istiod, each edit is also timed to the
//! moment istiod pushes the new weights to the ingress gateway (read by `xdsroutes` connected as
//! the gateway's proxy): the latency users experience, Istio's debounce (100 ms) included.
//!
//! The floor is a direct patch of a VirtualService that no operator touches, timed from sending the
//! patch to its watch event: one route write and one watch event, the least any change of a route
//! costs, and what the lab's users paid by editing the VirtualService by hand. A weight edit costs
//! that plus the release's watch event and the reconcile. Floor patches are interleaved with the
//! edits, so both see the same load; on a shared machine the ratio says more than either figure.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use canary_operator::api::istio::VirtualService;
use canary_operator::api::{CanaryRelease, TrafficProvider};
use canary_operator::reconcile::traffic::applied_split;
use futures::{Stream, StreamExt};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::figures::Distribution;
use crate::istio::RouteWatch;

/// The longest the bench waits for one edit to show; an edit that takes longer is counted as
/// timed out instead of stalling the run.
const EDIT_LIMIT: Duration = Duration::from_secs(30);

/// A pause between edits, as between two people's edits: the status write that follows the
/// VirtualService write triggers one more (no-op) reconcile, which should not overlap the next edit.
const BETWEEN_EDITS: Duration = Duration::from_millis(50);

/// The VirtualService of the floor measurement, beside the release's.
const FLOOR_ROUTE: &str = "bench-floor";

/// What a run of edits measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Shifts {
    pub edits: usize,
    /// Milliseconds from the PATCH response to the VirtualService event, one per edit that showed.
    pub samples_ms: Vec<f64>,
    /// Edits whose VirtualService event did not come within [`EDIT_LIMIT`].
    pub timed_out: usize,
    /// Edits whose VirtualService event came before the PATCH response was read (counted as 0).
    pub before_response: usize,
    /// Milliseconds from sending a direct VirtualService patch to its event, one per edit.
    pub floor_ms: Vec<f64>,
    pub floor_timed_out: usize,
    /// Milliseconds from the PATCH response to istiod's push of the new weights to the gateway,
    /// one per edit that reached it (empty without istiod).
    pub gateway_ms: Vec<f64>,
    /// Edits whose weights istiod did not push within [`EDIT_LIMIT`] (0 without istiod).
    pub gateway_timed_out: usize,
}

/// [`Shifts`] summed up for the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub edits: usize,
    pub timed_out: usize,
    pub vs_event_before_patch_response: usize,
    pub ms: Distribution,
    pub floor_ms: Distribution,
    pub floor_timed_out: usize,
    /// Edit -> the gateway's new route, pushed by istiod.
    pub gateway_ms: Distribution,
    pub gateway_timed_out: usize,
    /// Weight shift over floor, at the median and at p99 (None without floor samples).
    pub ratio_p50: Option<f64>,
    pub ratio_p99: Option<f64>,
}

impl Shifts {
    pub fn summary(&self) -> Summary {
        let ms = Distribution::of(&self.samples_ms);
        let floor_ms = Distribution::of(&self.floor_ms);
        let ratio = |a: f64, b: f64| (floor_ms.samples > 0 && b > 0.0).then(|| a / b);
        Summary {
            edits: self.edits,
            timed_out: self.timed_out,
            vs_event_before_patch_response: self.before_response,
            ratio_p50: ratio(ms.p50, floor_ms.p50),
            ratio_p99: ratio(ms.p99, floor_ms.p99),
            ms,
            floor_ms,
            floor_timed_out: self.floor_timed_out,
            gateway_ms: Distribution::of(&self.gateway_ms),
            gateway_timed_out: self.gateway_timed_out,
        }
    }
}

/// Watch events of one named object, as they arrive.
fn watch_one<K>(
    api: Api<K>,
    name: &str,
) -> impl Stream<Item = Result<K, watcher::Error>> + Unpin + use<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
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

/// The canary weight `route` (the release's route, whichever provider routes it) carries, if it
/// names both versions and their shares add up to 100: read as the plugin reads it.
fn canary_weight(release: &CanaryRelease, route: &DynamicObject) -> Option<i32> {
    let split = applied_split(release, route)?;
    let (s, c) = (split.stable?, split.canary?);
    (s + c == 100).then_some(c)
}

/// An event as it arrived: when, and the value the bench looks for in it.
type Stamped = (Instant, Option<i64>);

/// Forwards each event of `stream`, stamped when it arrives (a task of its own, so not when the
/// edit loop gets round to reading it), with the value `read` finds in it.
fn stamp<K: Send + 'static>(
    mut stream: impl Stream<Item = Result<K, watcher::Error>> + Unpin + Send + 'static,
    read: impl Fn(&K) -> Option<i64> + Send + 'static,
) -> (
    futures::channel::mpsc::UnboundedReceiver<Stamped>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = futures::channel::mpsc::unbounded::<Stamped>();
    let task = tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            let Ok(object) = event else { continue };
            if tx.unbounded_send((Instant::now(), read(&object))).is_err() {
                break;
            }
        }
    });
    (rx, task)
}

/// Waits until an event carrying `value` arrives (bounded by `deadline`); when it arrived.
async fn arrival(
    events: &mut futures::channel::mpsc::UnboundedReceiver<Stamped>,
    value: i64,
    deadline: Instant,
) -> Option<Instant> {
    while let Ok(Some((at, seen))) = tokio::time::timeout_at(deadline.into(), events.next()).await {
        if seen == Some(value) {
            return Some(at);
        }
    }
    None
}

/// The ingress gateway's view of the release: what istiod pushes to it for the release's host.
struct GatewayView {
    routes: RouteWatch,
    host: String,
    fqdn: String,
    canary: String,
}

/// The canary weight of the gateway's route for host `host` in a push, when the route splits
/// the subsets of service `fqdn` only.
fn gateway_canary_weight(
    push: &crate::istio::Push,
    host: &str,
    fqdn: &str,
    canary: &str,
) -> Option<i64> {
    let split = push.split(host, fqdn)?;
    (split.values().sum::<u32>() == 100 && split.len() <= 2)
        .then(|| i64::from(split.get(canary).copied().unwrap_or(0)))
}

/// Edits one release's weight and patches the floor route, with the watches that time both.
pub struct Shifter {
    releases: Api<CanaryRelease>,
    floor: Api<VirtualService>,
    name: String,
    routes: futures::channel::mpsc::UnboundedReceiver<Stamped>,
    floor_events: futures::channel::mpsc::UnboundedReceiver<Stamped>,
    statuses: std::pin::Pin<Box<dyn Stream<Item = Result<CanaryRelease, watcher::Error>> + Send>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Edits so far: varies the weights, and numbers the floor patches.
    count: usize,
    gateway: Option<GatewayView>,
}

/// What one edit measured.
pub struct Edit {
    /// Milliseconds from the PATCH response to the VirtualService event (None: not in time).
    pub ms: Option<f64>,
    /// The event came before the response.
    early: bool,
    /// Milliseconds from the PATCH response to istiod's push (None: not in time, or no istiod).
    gateway_ms: Option<f64>,
}

impl Drop for Shifter {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Shifter {
    /// Starts the watches (and creates the floor route if missing) and waits until both have
    /// listed, which keeps their start-up out of the first sample.
    pub async fn start(
        client: &Client,
        namespace: &str,
        name: &str,
        canary: &str,
        offset: usize,
    ) -> Shifter {
        let gateway = match RouteWatch::start() {
            Ok(routes) => Some(GatewayView {
                routes,
                host: crate::cluster::host(namespace, name),
                fqdn: format!("{name}.{namespace}.svc.cluster.local"),
                canary: canary.to_owned(),
            }),
            Err(why) => {
                eprintln!("bench: no gateway figures: {why}");
                None
            }
        };
        let releases: Api<CanaryRelease> = Api::namespaced(client.clone(), namespace);
        let floor: Api<VirtualService> = Api::namespaced(client.clone(), namespace);
        let route = serde_json::from_value::<VirtualService>(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": FLOOR_ROUTE, "namespace": namespace},
            "spec": {
                "hosts": [FLOOR_ROUTE],
                "http": [{"route": [{"destination": {"host": FLOOR_ROUTE}}]}],
            },
        }))
        .expect("the floor route is a VirtualService");
        match floor.create(&PostParams::default(), &route).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => panic!("create the floor VirtualService: {error}"),
        }
        let release = releases
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("read release {name}: {e}"));
        let resource = TrafficProvider::of_release(&release).route_resource();
        let (mut routes, route_task) = stamp(
            watch_one(
                Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource),
                name,
            ),
            move |route| canary_weight(&release, route).map(i64::from),
        );
        let (mut floor_events, floor_task) = stamp(watch_one(floor.clone(), FLOOR_ROUTE), |vs| {
            vs.metadata
                .annotations
                .as_ref()?
                .get("bench/sequence")?
                .parse()
                .ok()
        });
        let mut statuses = Box::pin(watch_one(releases.clone(), name));
        let primed = Instant::now() + EDIT_LIMIT;
        let _ = tokio::time::timeout_at(primed.into(), routes.next()).await;
        let _ = tokio::time::timeout_at(primed.into(), floor_events.next()).await;
        let _ = until(&mut statuses, primed, |_| true).await;
        Shifter {
            releases,
            floor,
            name: name.to_owned(),
            routes,
            floor_events,
            statuses,
            tasks: vec![route_task, floor_task],
            count: offset,
            gateway,
        }
    }

    /// One weight edit, timed to the VirtualService event and to istiod's push. Returns once the
    /// status shows the edit and the push came (or the limit passed), so that edits never overlap.
    pub async fn edit(&mut self) -> Edit {
        // 37 is coprime to 99, so the weights walk through 1..=99 and never repeat back to back.
        let weight = 1 + (self.count * 37 % 99) as i32;
        self.count += 1;
        let sent = Instant::now();
        let patched = self
            .releases
            .patch(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"weight": weight}})),
            )
            .await
            .expect("patch spec.weight");
        let responded = Instant::now();
        // istiod's pushes are stamped by xdsroutes with the wall clock of this same machine.
        let responded_wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let generation = patched.metadata.generation;
        let deadline = sent + EDIT_LIMIT;
        let seen = arrival(&mut self.routes, i64::from(weight), deadline).await;
        let _ = until(&mut self.statuses, deadline, |r: &CanaryRelease| {
            r.status.as_ref().is_some_and(|s| {
                s.observed_generation == generation && s.canary_weight == Some(weight)
            })
        })
        .await;
        let gateway_ms = match &mut self.gateway {
            Some(gateway) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let want = i64::from(weight);
                let GatewayView {
                    routes,
                    host,
                    fqdn,
                    canary,
                } = gateway;
                routes
                    .next_matching(left, |push| {
                        gateway_canary_weight(push, host, fqdn, canary) == Some(want)
                    })
                    .await
                    .map(|push| {
                        (i128::from(push.received_unix_nano) - responded_wall as i128) as f64 / 1e6
                    })
            }
            None => None,
        };
        let (ms, early) = seen.map_or((None, false), |at| {
            let ms = at.saturating_duration_since(responded).as_secs_f64() * 1000.0;
            (Some(ms), at < responded)
        });
        Edit {
            ms,
            early,
            gateway_ms,
        }
    }

    /// One direct patch of the floor route: milliseconds from sending it to its watch event.
    pub async fn floor(&mut self) -> Option<f64> {
        let sequence = self.count as i64;
        let sent = Instant::now();
        self.floor
            .patch(
                FLOOR_ROUTE,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"bench/sequence": sequence.to_string()}}}),
                ),
            )
            .await
            .expect("patch the floor VirtualService");
        let at = arrival(&mut self.floor_events, sequence, sent + EDIT_LIMIT).await?;
        Some(at.saturating_duration_since(sent).as_secs_f64() * 1000.0)
    }

    /// `count` edits, each followed by a floor patch.
    pub async fn run(&mut self, count: usize) -> Shifts {
        let mut shifts = Shifts {
            edits: count,
            ..Shifts::default()
        };
        for _ in 0..count {
            let edit = self.edit().await;
            match edit.ms {
                Some(ms) => {
                    shifts.samples_ms.push(ms);
                    shifts.before_response += usize::from(edit.early);
                }
                None => shifts.timed_out += 1,
            }
            match (edit.gateway_ms, &self.gateway) {
                (Some(ms), _) => shifts.gateway_ms.push(ms),
                (None, Some(_)) => shifts.gateway_timed_out += 1,
                (None, None) => {}
            }
            tokio::time::sleep(BETWEEN_EDITS).await;
            match self.floor().await {
                Some(ms) => shifts.floor_ms.push(ms),
                None => shifts.floor_timed_out += 1,
            }
            tokio::time::sleep(BETWEEN_EDITS).await;
        }
        shifts
    }
}
