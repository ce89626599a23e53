//! The lab's release (examples/lab.yaml) in a test namespace, the edits people make to it, and
//! the waits for what the operator does about them.

use std::time::{Duration, Instant};

use canary_operator::api::CanaryRelease;
use canary_operator::api::istio::VirtualService;
use canary_operator::reconcile::traffic::{Split, read_applied};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::examples;
pub use super::examples::lab;
use super::process::Process;
use super::{TestNs, WAIT, wait_for};

/// The API of kind `K` in the test's namespace.
pub fn api<K>(ns: &TestNs) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(ns.client.clone(), &ns.name)
}

/// examples/lab.yaml, named `name`, in the test's namespace.
pub fn release(ns: &TestNs, name: &str) -> Value {
    let mut release = lab();
    release["metadata"]["namespace"] = json!(ns.name);
    release["metadata"]["name"] = json!(name);
    release
}

/// The Secret the lab's release references.
pub async fn create_secret(ns: &TestNs) {
    if let Err(e) = api::<Secret>(ns)
        .create(&PostParams::default(), &examples::secret())
        .await
    {
        panic!("create the Secret: {e}");
    }
}

/// `release` with its own host ([`TestNs::host`]) where its Gateway would claim `*` (as written,
/// or by default), and as its HTTPRoute's only host name: tests share one ingress gateway
/// workload and one Gateway API Gateway, as tenants of a cluster do.
pub fn own_host(ns: &TestNs, mut release: Value) -> Value {
    let name = release["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if let Some(gateway) = release["spec"]["gateway"].as_object_mut()
        && gateway.get("existing").is_none_or(Value::is_null)
        && gateway.get("hosts").is_none_or(|h| *h == json!(["*"]))
    {
        gateway.insert("hosts".to_owned(), json!([ns.host(&name)]));
    }
    if let Some(api) = release["spec"]["traffic"]["gatewayAPI"].as_object_mut() {
        api.insert("hostnames".to_owned(), json!([ns.host(&name)]));
    }
    release
}

/// `kubectl apply --server-side` of `release`, in the test's namespace, with [`own_host`].
pub async fn apply_release(ns: &TestNs, release: Value) -> Result<CanaryRelease, kube::Error> {
    let mut release = own_host(ns, release);
    release["metadata"]["namespace"] = json!(ns.name);
    let Some(name) = release["metadata"]["name"].as_str().map(str::to_owned) else {
        panic!("a release without a name: {release}")
    };
    api::<CanaryRelease>(ns)
        .patch(
            &name,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&release),
        )
        .await
}

/// `kubectl apply --server-side` of the lab's release named `name`.
pub async fn apply(ns: &TestNs, name: &str) {
    if let Err(e) = try_apply(ns, name).await {
        panic!("apply release {name}: {e}");
    }
}

pub async fn try_apply(ns: &TestNs, name: &str) -> Result<(), kube::Error> {
    apply_release(ns, release(ns, name)).await.map(|_| ())
}

/// `kubectl patch --type merge` of the release.
pub async fn patch_release(ns: &TestNs, name: &str, patch: Value) {
    if let Err(e) = api::<CanaryRelease>(ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        panic!("patch release {name}: {e}");
    }
}

/// `kubectl patch --type merge` of the release's weight.
pub async fn set_weight(ns: &TestNs, name: &str, weight: i32) -> Result<(), kube::Error> {
    api::<CanaryRelease>(ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"weight": weight}})),
        )
        .await
        .map(|_| ())
}

/// The canary's weight in the release's VirtualService (its subset is `v2` in the lab).
/// The split the route of release `name` carries, read as the plugin reads it (through the
/// traffic seam, whichever provider routes it); `None` without the release or its route.
pub async fn split(ns: &TestNs, name: &str) -> Option<Split> {
    let release = api::<CanaryRelease>(ns).get(name).await.ok()?;
    read_applied(&ns.client, &release).await.ok()?
}

/// The canary's weight in the route of release `name`.
pub async fn canary_weight(ns: &TestNs, name: &str) -> Option<i32> {
    split(ns, name).await?.canary
}

/// Waits until the route of the lab-like release `name`, whichever provider routes it, splits
/// `stable`/`canary`.
pub async fn wait_split(ns: &TestNs, name: &str, stable: i32, canary: i32) {
    let wanted = Split {
        stable: Some(stable),
        canary: Some(canary),
    };
    wait_for(
        &format!("the route of {name} at {stable}/{canary}"),
        WAIT,
        async || (split(ns, name).await? == wanted).then_some(()),
    )
    .await;
}

/// Waits until the release's route gives the canary `weight` %. On timeout the panic says
/// where things stood: the weight, the release's rollout and conditions, and the canary's
/// Deployment and pods, so a failure seen only in CI explains itself.
pub async fn wait_canary_weight(ns: &TestNs, name: &str, weight: i32, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = canary_weight(ns, name).await;
        if now == Some(weight) {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {within:?} waiting for the route of {name} at {weight}% canary (it is at {now:?})\n{}",
                describe(ns, name).await
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What a failing wait reports: the release's rollout and conditions, the canary's Deployment
/// (its applied hash, generations and replica counts) and its pods with their conditions.
pub async fn describe(ns: &TestNs, name: &str) -> String {
    let mut lines = Vec::new();
    match api::<CanaryRelease>(ns).get(name).await {
        Ok(release) => {
            let status = release.status.unwrap_or_default();
            lines.push(format!(
                "release: rollout {}",
                serde_json::to_string(&status.rollout).unwrap_or_default()
            ));
            for c in &status.conditions {
                lines.push(format!(
                    "  condition {}={} {}: {}",
                    c.type_, c.status, c.reason, c.message
                ));
            }
        }
        Err(e) => lines.push(format!("release: {e}")),
    }
    let deployment = format!("{name}-v2");
    match api::<Deployment>(ns).get(&deployment).await {
        Ok(d) => lines.push(format!(
            "deployment {deployment}: generation {:?}, applied hash {:?}, status {}",
            d.metadata.generation,
            d.annotations().get(canary_operator::labels::APPLIED_HASH),
            serde_json::to_string(&d.status).unwrap_or_default()
        )),
        Err(e) => lines.push(format!("deployment {deployment}: {e}")),
    }
    let pods = api::<k8s_openapi::api::core::v1::Pod>(ns)
        .list(&ListParams::default().labels("version=v2"))
        .await;
    for pod in pods.map(|l| l.items).unwrap_or_default() {
        let conditions: Vec<String> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .map(|c| format!("{}={}", c.type_, c.status))
            .collect();
        lines.push(format!(
            "pod {}: node {:?}, deleting {}, created {:?}, {}",
            pod.name_any(),
            pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            pod.metadata.deletion_timestamp.is_some(),
            pod.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string()),
            conditions.join(" ")
        ));
    }
    lines.join("\n")
}

/// Waits until the release's VirtualService routes exactly `expected` (subset, weight), in order.
pub async fn wait_weights(ns: &TestNs, name: &str, expected: &[(&str, i32)]) -> VirtualService {
    let services = api::<VirtualService>(ns);
    let expected: Vec<(String, i32)> = expected
        .iter()
        .map(|(s, w)| ((*s).to_owned(), *w))
        .collect();
    wait_for(
        &format!("VirtualService {name} weights {expected:?}"),
        WAIT,
        async || {
            let vs = services.get(name).await.ok()?;
            (vs.weights() == expected).then_some(vs)
        },
    )
    .await
}

/// The release's condition `type_`: status, reason and message.
pub fn condition(release: &CanaryRelease, type_: &str) -> Option<(String, String, String)> {
    let c = release
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the release's `type_` condition has `status` and `reason` for its current
/// generation.
pub async fn wait_condition(
    ns: &TestNs,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> CanaryRelease {
    wait_condition_of(ns, None, name, (type_, status, reason)).await
}

/// Waits until the release is Ready (Available) for its current generation.
pub async fn wait_ready(ns: &TestNs, name: &str) -> CanaryRelease {
    wait_condition(ns, name, "Ready", "True", "Available").await
}

/// [`wait_ready`] with the operator running as `operator`: fails as soon as it exits, and shows
/// its log on a timeout.
pub async fn wait_ready_of(ns: &TestNs, operator: &mut Process, name: &str) -> CanaryRelease {
    wait_condition_of(ns, Some(operator), name, ("Ready", "True", "Available")).await
}

async fn wait_condition_of(
    ns: &TestNs,
    mut operator: Option<&mut Process>,
    name: &str,
    (type_, status, reason): (&str, &str, &str),
) -> CanaryRelease {
    let releases = api::<CanaryRelease>(ns);
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(why) = operator.as_mut().and_then(|o| o.exited()) {
            panic!("waiting for {name}: {type_}={status} ({reason}), the operator exited: {why}");
        }
        let release = releases.get(name).await.ok();
        if let Some(release) = &release {
            let current = release.status.as_ref().map(|s| s.observed_generation)
                == Some(release.metadata.generation);
            if let Some((s, r, _)) = condition(release, type_)
                && current
                && s == status
                && r == reason
            {
                return release.clone();
            }
        }
        if Instant::now() >= deadline {
            let seen = release.map(|r| serde_json::to_string(&r.status).unwrap_or_default());
            let deployments = api::<Deployment>(ns)
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .map(|d| {
                            format!(
                                "{}: {}",
                                d.name_any(),
                                serde_json::to_string(&d.status).unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>()
                });
            let log = operator
                .map(|o| format!("; operator log:\n{}", o.log_tail(40)))
                .unwrap_or_default();
            panic!(
                "timed out waiting for {name}: {type_}={status} ({reason}); last status: {seen:?}; deployments: {deployments:?}{log}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the object `name` of kind `K` is gone, or marked for deletion (deleted in the
/// background: gone for a test's purposes).
pub async fn wait_gone<K>(ns: &TestNs, name: &str)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api = api::<K>(ns);
    let what = format!("{} {name} deleted", K::kind(&()));
    wait_for(&what, WAIT, async || match api.get_opt(name).await {
        Ok(None) => Some(()),
        Ok(Some(o)) if o.meta().deletion_timestamp.is_some() => Some(()),
        _ => None,
    })
    .await;
}

/// The Events in the test's namespace.
pub async fn events(ns: &TestNs) -> Vec<Event> {
    match api::<Event>(ns).list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => panic!("list events: {e}"),
    }
}

/// Whether the operator instance `instance` (its pod's name) reported `event`.
pub fn reported_by(event: &Event, instance: &str) -> bool {
    event.reporting_controller.as_deref() == Some(canary_operator::FIELD_MANAGER)
        && event.reporting_instance.as_deref() == Some(instance)
}

/// Waits for an Event that `matches`, named `what` in the timeout's message.
pub async fn wait_event(ns: &TestNs, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
    wait_for(what, WAIT, async || {
        events(ns).await.into_iter().find(|e| matches(e))
    })
    .await
}

/// Waits for an Event with `reason` whose note contains `note_fragment`.
pub async fn wait_event_noting(ns: &TestNs, reason: &str, note_fragment: &str) -> Event {
    wait_event(
        ns,
        &format!("Event {reason} mentioning {note_fragment:?}"),
        |e| {
            e.reason.as_deref() == Some(reason)
                && e.note.as_deref().is_some_and(|n| n.contains(note_fragment))
        },
    )
    .await
}

/// Creates `release` as `kubectl create` does (POST with strict field validation; kube's
/// PostParams cannot say so, hence a raw request) and asserts that the apiserver refuses it (422
/// or 400) with a message holding `fragment`. Server-side apply would report a wrongly typed
/// field as an internal error instead of a validation failure.
pub async fn assert_refused(ns: &TestNs, release: &Value, what: &str, fragment: &str) {
    use kube::core::{ApiResource, DynamicObject};
    let resource = ApiResource::erase::<CanaryRelease>(&());
    let url = format!(
        "{}?fieldValidation=Strict",
        DynamicObject::url_path(&resource, Some(&ns.name))
    );
    let body = serde_json::to_vec(release).unwrap_or_else(|e| panic!("{what}: serialize: {e}"));
    let request = http::Request::post(url.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|e| panic!("{what}: request: {e}"));
    match ns.client.request::<DynamicObject>(request).await {
        Err(kube::Error::Api(s)) => {
            assert!(
                s.code == 422 || s.code == 400,
                "{what}: expected 422/400, got {}: {}",
                s.code,
                s.message
            );
            assert!(
                s.message.contains(fragment),
                "{what}: message {:?} lacks {fragment:?}",
                s.message
            );
        }
        other => panic!("{what}: expected a rejection, got {other:?}"),
    }
}
