//! The operator against the real local control plane (`make cluster-up`): every behaviour of the
//! CanaryRelease issue, with the operator running in-process and scoped to each test's namespace.
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use canary_operator::api::CanaryRelease;
use canary_operator::api::istio::{DestinationRule, Gateway, VirtualService};
use common::operator::{install_crd, start_operator};
use common::{TestNs, setup, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn example(file: &str) -> Value {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("read example");
    serde_norway::from_str(&text).expect("parse example")
}

/// The lab example, in the test's namespace.
fn lab() -> Value {
    example("lab.yaml")
}

fn api<K>(ns: &TestNs) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(ns.client.clone(), &ns.name)
}

/// Applies a release as a user would (`kubectl apply --server-side`), in the test's namespace.
async fn apply_release(ns: &TestNs, mut release: Value) -> Result<CanaryRelease, kube::Error> {
    release["metadata"]["namespace"] = json!(ns.name);
    let name = release["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    api::<CanaryRelease>(ns)
        .patch(
            &name,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&release),
        )
        .await
}

async fn demo_secret(ns: &TestNs) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "azure-openai"},
        "stringData": {"AZURE_API_KEY": "not-a-real-key"},
    }))
    .expect("secret");
    api::<Secret>(ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
}

fn condition(release: &CanaryRelease, type_: &str) -> Option<(String, String, String)> {
    let c = release
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the release's `type_` condition has `status` and `reason` for its current generation.
async fn wait_condition(
    ns: &TestNs,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> CanaryRelease {
    let releases = api::<CanaryRelease>(ns);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
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
        if tokio::time::Instant::now() >= deadline {
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
            panic!(
                "timed out waiting for {name}: {type_}={status} ({reason}); last status: {seen:?}; deployments: {deployments:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_ready(ns: &TestNs, name: &str) -> CanaryRelease {
    wait_condition(ns, name, "Ready", "True", "Available").await
}

async fn wait_weights(ns: &TestNs, name: &str, expected: &[(&str, i32)]) -> VirtualService {
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

async fn patch_release(ns: &TestNs, name: &str, patch: Value) {
    api::<CanaryRelease>(ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch release");
}

async fn events(ns: &TestNs, reason: &str) -> Vec<Event> {
    let list = api::<Event>(ns)
        .list(&ListParams::default())
        .await
        .expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

async fn wait_event(ns: &TestNs, reason: &str, note_fragment: &str) -> Event {
    wait_for(
        &format!("Event {reason} mentioning {note_fragment:?}"),
        WAIT,
        async || {
            events(ns, reason)
                .await
                .into_iter()
                .find(|e| e.note.as_deref().is_some_and(|n| n.contains(note_fragment)))
        },
    )
    .await
}

fn controlled_by(object: &impl Resource, release: &CanaryRelease) -> bool {
    object.meta().owner_references.iter().flatten().any(|o| {
        o.controller == Some(true)
            && Some(&o.uid) == release.metadata.uid.as_ref()
            && o.kind == "CanaryRelease"
    })
}

/// Lets in-flight reconciles (triggered by our own writes' watch events) finish.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn lab_example_creates_every_object_of_the_lab() {
    let Some(ns) = setup("lab-example").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    demo_secret(&ns).await;
    apply_release(&ns, lab()).await.expect("apply lab example");
    let release = wait_ready(&ns, "azureopenaichat").await;

    let status = release.status.clone().expect("status");
    assert_eq!(
        (status.stable_weight, status.canary_weight),
        (Some(75), Some(25))
    );
    let stable = status.stable.expect("stable status");
    let canary = status.canary.expect("canary status");
    assert_eq!(
        (stable.name.as_str(), stable.model.as_str()),
        ("v1", "gpt-4.1")
    );
    assert_eq!(
        (canary.name.as_str(), canary.model.as_str()),
        ("v2", "gpt-4o")
    );
    assert_eq!((canary.desired_replicas, canary.ready_replicas), (1, 1));
    let (_, _, message) = condition(&release, "Ready").expect("Ready");
    assert!(
        message.contains("75% to v1 (gpt-4.1), 25% to v2 (gpt-4o)"),
        "{message}"
    );
    assert_eq!(
        condition(&release, "Degraded").map(|c| c.0),
        Some("False".to_owned())
    );
    assert_eq!(
        condition(&release, "Progressing").map(|c| c.1),
        Some("RolloutComplete".to_owned())
    );

    for (version, model) in [("v1", "gpt-4.1"), ("v2", "gpt-4o")] {
        let name = format!("azureopenaichat-{version}");
        let cm = api::<ConfigMap>(&ns).get(&name).await.expect("ConfigMap");
        assert!(controlled_by(&cm, &release));
        let data = cm.data.clone().expect("data");
        assert_eq!(
            data.get("AZURE_MODEL_NAME").map(String::as_str),
            Some(model)
        );
        assert_eq!(
            data.get("AZURE_API_URL").map(String::as_str),
            Some("https://example.openai.azure.com/")
        );
        assert!(
            !data.contains_key("AZURE_API_KEY"),
            "the key stays in the Secret"
        );

        let deployment = api::<Deployment>(&ns).get(&name).await.expect("Deployment");
        assert!(controlled_by(&deployment, &release));
        let labels = deployment
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .expect("pod labels");
        assert_eq!(
            labels.get("app").map(String::as_str),
            Some("azureopenaichat")
        );
        assert_eq!(labels.get("version").map(String::as_str), Some(version));
        let container = &deployment
            .spec
            .template
            .spec
            .as_ref()
            .expect("pod spec")
            .containers[0];
        let env_from = serde_json::to_value(&container.env_from).expect("json");
        assert_eq!(
            env_from,
            json!([{"configMapRef": {"name": name}}, {"secretRef": {"name": "azure-openai"}}])
        );
        // The HPA owns the replica count: our field manager must not.
        let owns_replicas = deployment
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| {
                m.manager.as_deref() == Some("canary-operator")
                    && m.fields_v1
                        .as_ref()
                        .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
            });
        assert!(
            !owns_replicas,
            "{name}: canary-operator must not own spec.replicas when autoscaling"
        );

        let hpa = api::<HorizontalPodAutoscaler>(&ns)
            .get(&name)
            .await
            .expect("HPA");
        assert!(controlled_by(&hpa, &release));
        assert_eq!(
            (hpa.spec.min_replicas, hpa.spec.max_replicas),
            (Some(1), 10)
        );
        assert_eq!(hpa.spec.scale_target_ref.name, name);
    }

    let service = api::<Service>(&ns)
        .get("azureopenaichat")
        .await
        .expect("Service");
    assert!(controlled_by(&service, &release));
    let spec = service.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(
        spec.selector.expect("selector"),
        [
            ("app.kubernetes.io/instance", "azureopenaichat"),
            ("app.kubernetes.io/managed-by", "canary-operator"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        "only the release's own pods"
    );

    let host = format!("azureopenaichat.{}.svc.cluster.local", ns.name);
    let rule = api::<DestinationRule>(&ns)
        .get("azureopenaichat")
        .await
        .expect("DestinationRule");
    assert!(controlled_by(&rule, &release));
    assert_eq!(rule.spec.host, host);
    let subsets: Vec<_> = rule
        .spec
        .subsets
        .iter()
        .map(|s| (s.name.as_str(), s.labels["version"].as_str()))
        .collect();
    assert_eq!(subsets, [("v1", "v1"), ("v2", "v2")]);

    let vs = api::<VirtualService>(&ns)
        .get("azureopenaichat")
        .await
        .expect("VirtualService");
    assert!(controlled_by(&vs, &release));
    assert_eq!(vs.spec.gateways, ["azureopenaichat"]);
    assert_eq!(vs.spec.hosts, ["*"]);
    assert_eq!(vs.weights(), [("v1".to_owned(), 75), ("v2".to_owned(), 25)]);
    assert!(
        vs.spec.http[0]
            .route
            .iter()
            .all(|r| r.destination.host == host),
        "one FQDN host everywhere"
    );

    let gateway = api::<Gateway>(&ns)
        .get("azureopenaichat")
        .await
        .expect("Gateway");
    assert!(controlled_by(&gateway, &release));
    assert_eq!(
        gateway.spec.selector.get("istio").map(String::as_str),
        Some("aks-istio-ingressgateway-external")
    );
    assert_eq!(gateway.spec.servers[0].port.number, 80);
}

#[tokio::test]
async fn weight_shifts_cost_one_route_write_and_one_status_write() {
    let Some(ns) = setup("weight-shift").await else {
        return;
    };
    let operator = start_operator(&ns).await;
    demo_secret(&ns).await;
    apply_release(&ns, lab()).await.expect("apply");
    wait_ready(&ns, "azureopenaichat").await;
    settle().await;

    for weight in [50, 0, 100] {
        let before = operator.writes();
        patch_release(&ns, "azureopenaichat", json!({"spec": {"weight": weight}})).await;
        wait_weights(
            &ns,
            "azureopenaichat",
            &[("v1", 100 - weight), ("v2", weight)],
        )
        .await;
        let release = wait_ready(&ns, "azureopenaichat").await;
        assert_eq!(
            release.status.as_ref().and_then(|s| s.canary_weight),
            Some(weight)
        );
        settle().await;
        let writes = operator.writes() - before;
        assert_eq!(
            writes, 2,
            "weight {weight}: one VirtualService write and one status write, got {writes}"
        );
    }
}

#[tokio::test]
async fn a_reconcile_that_finds_everything_in_place_writes_nothing() {
    let Some(ns) = setup("steady-state").await else {
        return;
    };
    let operator = start_operator(&ns).await;
    demo_secret(&ns).await;
    // Quantities the API server stores in another spelling ("500m", "1536Mi") must not look like drift.
    let mut release = lab();
    release["spec"]["canary"]["resources"] = json!({"requests": {"cpu": "0.5", "memory": "1.5Gi"}});
    apply_release(&ns, release).await.expect("apply");
    wait_ready(&ns, "azureopenaichat").await;
    settle().await;
    let stored = api::<Deployment>(&ns)
        .get("azureopenaichat-v2")
        .await
        .expect("deployment");
    let requests =
        serde_json::to_value(&stored.spec.template.spec.expect("pod").containers[0].resources)
            .expect("json");
    assert_eq!(
        requests["requests"],
        json!({"cpu": "500m", "memory": "1536Mi"}),
        "the server canonicalised them"
    );

    let (writes, reconciles) = (operator.writes(), operator.reconciles());
    // A label edit changes the release without changing its spec: it triggers a full reconcile.
    patch_release(
        &ns,
        "azureopenaichat",
        json!({"metadata": {"labels": {"touched": "yes"}}}),
    )
    .await;
    wait_for("a reconcile after the label edit", WAIT, async || {
        (operator.reconciles() > reconciles).then_some(())
    })
    .await;
    settle().await;
    assert_eq!(
        operator.writes() - writes,
        0,
        "nothing changed, so nothing may be written"
    );
}

#[tokio::test]
async fn manual_edits_and_deletions_are_put_back_with_an_event() {
    let Some(ns) = setup("drift").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    demo_secret(&ns).await;
    apply_release(&ns, lab()).await.expect("apply");
    wait_ready(&ns, "azureopenaichat").await;

    // Someone edits the split by hand, as `kubectl edit` would (an update by another manager).
    let services = api::<VirtualService>(&ns);
    let mut vs = services.get("azureopenaichat").await.expect("vs");
    vs.spec.http[0].route[0].weight = 10;
    vs.spec.http[0].route[1].weight = 90;
    services
        .replace("azureopenaichat", &PostParams::default(), &vs)
        .await
        .expect("manual edit");
    wait_weights(&ns, "azureopenaichat", &[("v1", 75), ("v2", 25)]).await;
    wait_event(
        &ns,
        "DriftCorrected",
        "VirtualService azureopenaichat was changed outside the operator",
    )
    .await;

    api::<DestinationRule>(&ns)
        .delete("azureopenaichat", &DeleteParams::default())
        .await
        .expect("delete rule");
    wait_for("DestinationRule recreated", WAIT, async || {
        api::<DestinationRule>(&ns)
            .get_opt("azureopenaichat")
            .await
            .ok()
            .flatten()
    })
    .await;
    wait_event(
        &ns,
        "DriftCorrected",
        "DestinationRule azureopenaichat was deleted; recreated it",
    )
    .await;

    // Without the managed-by label the Service is no longer one of the operator's in its cache,
    // only a name with an owner reference: still the release's, so it is relabelled, not left alone.
    let managed_by = "app.kubernetes.io/managed-by";
    api::<Service>(&ns)
        .patch(
            "azureopenaichat",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {managed_by: null}}})),
        )
        .await
        .expect("remove the label");
    wait_for("Service relabelled", WAIT, async || {
        let service = api::<Service>(&ns).get("azureopenaichat").await.ok()?;
        (service.labels().get(managed_by).map(String::as_str) == Some("canary-operator"))
            .then_some(())
    })
    .await;
    wait_event(
        &ns,
        "DriftCorrected",
        "Service azureopenaichat was changed outside the operator",
    )
    .await;
}

#[tokio::test]
async fn an_object_we_did_not_create_is_never_overwritten_or_adopted() {
    let Some(ns) = setup("conflict").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    let theirs: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "azureopenaichat-v1", "labels": {"team": "someone-else"}},
        "data": {"AZURE_MODEL_NAME": "their-model"},
    }))
    .expect("cm");
    let configmaps = api::<ConfigMap>(&ns);
    configmaps
        .create(&PostParams::default(), &theirs)
        .await
        .expect("create theirs");
    demo_secret(&ns).await;
    apply_release(&ns, lab()).await.expect("apply");

    let release = wait_condition(
        &ns,
        "azureopenaichat",
        "Ready",
        "False",
        "OwnershipConflict",
    )
    .await;
    let (_, _, message) = condition(&release, "Ready").expect("Ready");
    assert!(
        message.contains(&format!(
            "ConfigMap {}/azureopenaichat-v1 already exists",
            ns.name
        )),
        "{message}"
    );
    assert_eq!(
        condition(&release, "Degraded").map(|c| c.0),
        Some("True".to_owned())
    );
    wait_event(&ns, "OwnershipConflict", "azureopenaichat-v1").await;
    settle().await;

    let after = configmaps.get("azureopenaichat-v1").await.expect("theirs");
    assert_eq!(after.data, theirs.data, "their data is untouched");
    assert!(after.metadata.owner_references.is_none(), "not adopted");
    assert_eq!(after.labels().get("app.kubernetes.io/managed-by"), None);
    assert!(
        configmaps
            .get_opt("azureopenaichat-v2")
            .await
            .expect("get")
            .is_none(),
        "nothing else was created"
    );
    assert!(
        api::<VirtualService>(&ns)
            .get_opt("azureopenaichat")
            .await
            .expect("get")
            .is_none()
    );

    // Once their object is gone, the release converges.
    configmaps
        .delete("azureopenaichat-v1", &DeleteParams::default())
        .await
        .expect("delete theirs");
    wait_ready(&ns, "azureopenaichat").await;
}

/// Another application's Deployment whose pods carry the lab's own labels (`app: web` and a
/// version): the worst case for a selector by `app`.
async fn foreign_app(ns: &TestNs, name: &str, version: &str, replicas: i32) {
    let labels = json!({"app": "web", "version": version, "team": "someone-else"});
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]},
            },
        },
    }))
    .expect("deployment");
    api::<Deployment>(ns)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create the foreign Deployment");
}

/// Ready pods labelled `app: web`, split into the release's and the others' by whether a
/// ReplicaSet of the release's Deployments controls them.
async fn web_pods(ns: &TestNs) -> (BTreeSet<String>, BTreeSet<String>) {
    let pods = api::<Pod>(ns)
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list pods");
    let mut ours = BTreeSet::new();
    let mut theirs = BTreeSet::new();
    for pod in pods.items {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !ready {
            continue;
        }
        let owner = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.name.clone())
            .unwrap_or_default();
        if owner.starts_with("web-v1-") || owner.starts_with("web-v2-") {
            ours.insert(pod.name_any());
        } else {
            theirs.insert(pod.name_any());
        }
    }
    (ours, theirs)
}

/// Pods behind the Service `web`, from its EndpointSlices (what kube-proxy and Istio route to).
async fn web_endpoints(ns: &TestNs) -> BTreeSet<String> {
    let slices = api::<EndpointSlice>(ns)
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .expect("list EndpointSlices");
    slices
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter_map(|e| e.target_ref.as_ref()?.name.clone())
        .collect()
}

/// Waits until the Service's endpoints are exactly the release's ready pods (two or more), then
/// watches them for a few seconds more: no pod of the other application may ever show up.
async fn assert_endpoints_are_ours(ns: &TestNs, when: &str) {
    let check = async || {
        let (ours, theirs) = web_pods(ns).await;
        let endpoints = web_endpoints(ns).await;
        let foreign: Vec<_> = endpoints.intersection(&theirs).collect();
        assert!(
            foreign.is_empty(),
            "{when}: the release's Service has the other app's pods {foreign:?} among {endpoints:?} (ours: {ours:?})"
        );
        (ours, theirs, endpoints)
    };
    wait_for(
        &format!("{when}: endpoints = the release's pods"),
        WAIT,
        async || {
            let (ours, _, endpoints) = check().await;
            (ours.len() >= 2 && endpoints == ours).then_some(())
        },
    )
    .await;
    let (_, theirs, _) = check().await;
    assert!(!theirs.is_empty(), "{when}: the other app's pods run");
    for _ in 0..12 {
        check().await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A release named `web` in a namespace where another application labelled `app: web` runs: its
/// Service and subsets select only its own pods, whichever came first and whatever is deleted.
#[tokio::test]
async fn the_release_never_selects_another_apps_pods() {
    let Some(ns) = setup("foreign-pods").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    demo_secret(&ns).await;

    // Theirs first, with a Service of the release's name.
    foreign_app(&ns, "web", "v1", 2).await;
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }))
    .expect("service");
    api::<Service>(&ns)
        .create(&PostParams::default(), &service)
        .await
        .expect("create their Service");
    let mut release = lab();
    release["metadata"]["name"] = json!("web");
    apply_release(&ns, release).await.expect("apply");
    wait_condition(&ns, "web", "Ready", "False", "OwnershipConflict").await;

    // The user removes only their Service: the release's takes its place.
    api::<Service>(&ns)
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete their Service");
    wait_ready(&ns, "web").await;
    assert_endpoints_are_ours(&ns, "their app first").await;

    // Theirs again after the release, as the canary's version this time.
    foreign_app(&ns, "web-copy", "v2", 2).await;
    wait_for("the second foreign app's pods", WAIT, async || {
        (web_pods(&ns).await.1.len() >= 4).then_some(())
    })
    .await;
    assert_endpoints_are_ours(&ns, "their app after the release").await;

    // The subsets say the same.
    let rule = api::<DestinationRule>(&ns).get("web").await.expect("rule");
    for subset in &rule.spec.subsets {
        assert_eq!(
            subset
                .labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("canary-operator"),
            "{subset:?}"
        );
        assert_eq!(
            subset
                .labels
                .get("app.kubernetes.io/instance")
                .map(String::as_str),
            Some("web"),
            "{subset:?}"
        );
    }
}

#[tokio::test]
async fn a_config_change_updates_the_configmap_and_rolls_the_pods() {
    let Some(ns) = setup("config-rolls").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    demo_secret(&ns).await;
    apply_release(&ns, lab()).await.expect("apply");
    wait_ready(&ns, "azureopenaichat").await;
    let hash = async || {
        let d = api::<Deployment>(&ns)
            .get("azureopenaichat-v2")
            .await
            .expect("deployment");
        d.spec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|a| a.get("canary.dev/config-hash").cloned())
    };
    let before = hash().await.expect("config hash");

    patch_release(
        &ns,
        "azureopenaichat",
        json!({"spec": {"config": {"AZURE_API_URL": "https://other.openai.azure.com/"}}}),
    )
    .await;
    wait_for("ConfigMap updated", WAIT, async || {
        let cm = api::<ConfigMap>(&ns).get("azureopenaichat-v2").await.ok()?;
        (cm.data?.get("AZURE_API_URL")? == "https://other.openai.azure.com/").then_some(())
    })
    .await;
    let after = hash().await.expect("config hash");
    assert_ne!(before, after, "the pod template changed");
    wait_for("a second ReplicaSet for the canary", WAIT, async || {
        let list = api::<ReplicaSet>(&ns)
            .list(&ListParams::default().labels("version=v2"))
            .await
            .ok()?;
        (list.items.len() >= 2).then_some(())
    })
    .await;
    wait_ready(&ns, "azureopenaichat").await;
}

#[tokio::test]
async fn turning_autoscaling_off_and_on_removes_and_restores_the_hpas() {
    let Some(ns) = setup("autoscaling-toggle").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    demo_secret(&ns).await;
    apply_release(&ns, lab()).await.expect("apply");
    wait_ready(&ns, "azureopenaichat").await;
    let hpas = api::<HorizontalPodAutoscaler>(&ns);
    assert_eq!(
        hpas.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        2
    );

    let mut release = lab();
    release["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("autoscaling");
    release["spec"]["stable"]["replicas"] = json!(2);
    apply_release(&ns, release)
        .await
        .expect("apply without autoscaling");
    wait_for("HPAs deleted", WAIT, async || {
        hpas.list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    wait_event(&ns, "Pruned", "HorizontalPodAutoscaler azureopenaichat-v1").await;
    let release = wait_ready(&ns, "azureopenaichat").await;
    assert_eq!(
        release
            .status
            .and_then(|s| s.stable)
            .map(|s| s.ready_replicas),
        Some(2)
    );
    let stable = api::<Deployment>(&ns)
        .get("azureopenaichat-v1")
        .await
        .expect("deployment");
    assert_eq!(stable.spec.replicas, Some(2));

    apply_release(&ns, lab())
        .await
        .expect("apply with autoscaling");
    wait_for("HPAs back", WAIT, async || {
        (hpas.list(&ListParams::default()).await.ok()?.items.len() == 2).then_some(())
    })
    .await;
    wait_ready(&ns, "azureopenaichat").await;
}

#[tokio::test]
async fn renaming_a_version_replaces_its_objects() {
    let Some(ns) = setup("version-rename").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    demo_secret(&ns).await;
    apply_release(&ns, lab()).await.expect("apply");
    wait_ready(&ns, "azureopenaichat").await;

    patch_release(
        &ns,
        "azureopenaichat",
        json!({"spec": {"canary": {"name": "v3", "model": "gpt-5"}}}),
    )
    .await;
    wait_weights(&ns, "azureopenaichat", &[("v1", 75), ("v3", 25)]).await;
    wait_for("v2 objects removed", WAIT, async || {
        let cm = api::<ConfigMap>(&ns)
            .get_opt("azureopenaichat-v2")
            .await
            .ok()?;
        let deploy = api::<Deployment>(&ns)
            .get_opt("azureopenaichat-v2")
            .await
            .ok()?;
        let hpa = api::<HorizontalPodAutoscaler>(&ns)
            .get_opt("azureopenaichat-v2")
            .await
            .ok()?;
        (cm.is_none() && deploy.is_none() && hpa.is_none()).then_some(())
    })
    .await;
    let rule = api::<DestinationRule>(&ns)
        .get("azureopenaichat")
        .await
        .expect("rule");
    assert_eq!(
        rule.spec
            .subsets
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["v1", "v3"]
    );
    let release = wait_ready(&ns, "azureopenaichat").await;
    assert_eq!(
        release.status.and_then(|s| s.canary).map(|c| c.model),
        Some("gpt-5".to_owned())
    );
}

#[tokio::test]
async fn deleting_the_release_lets_the_garbage_collector_remove_every_child() {
    let Some(ns) = setup("delete-gc").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    demo_secret(&ns).await;
    apply_release(&ns, lab()).await.expect("apply");
    wait_ready(&ns, "azureopenaichat").await;

    api::<CanaryRelease>(&ns)
        .delete("azureopenaichat", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("every child garbage-collected", WAIT, async || {
        let selector = ListParams::default().labels("app.kubernetes.io/instance=azureopenaichat");
        let counts = [
            api::<ConfigMap>(&ns)
                .list(&selector)
                .await
                .ok()?
                .items
                .len(),
            api::<Deployment>(&ns)
                .list(&selector)
                .await
                .ok()?
                .items
                .len(),
            api::<HorizontalPodAutoscaler>(&ns)
                .list(&selector)
                .await
                .ok()?
                .items
                .len(),
            api::<Service>(&ns).list(&selector).await.ok()?.items.len(),
            api::<DestinationRule>(&ns)
                .list(&selector)
                .await
                .ok()?
                .items
                .len(),
            api::<VirtualService>(&ns)
                .list(&selector)
                .await
                .ok()?
                .items
                .len(),
            api::<Gateway>(&ns).list(&selector).await.ok()?.items.len(),
        ];
        (counts == [0; 7]).then_some(())
    })
    .await;
    // The Secret is the user's: it is referenced, never owned, so it stays.
    assert!(
        api::<Secret>(&ns)
            .get_opt("azure-openai")
            .await
            .expect("get")
            .is_some()
    );
}

#[tokio::test]
async fn every_example_applies_and_becomes_ready() {
    let Some(ns) = setup("examples").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    demo_secret(&ns).await;
    let mut names = Vec::new();
    for file in [
        "lab.yaml",
        "existing-gateway.yaml",
        "no-autoscaling.yaml",
        "image-override.yaml",
        "chat-backend.yaml",
    ] {
        let release = example(file);
        names.push(
            release["metadata"]["name"]
                .as_str()
                .expect("name")
                .to_owned(),
        );
        apply_release(&ns, release)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    for name in &names {
        wait_ready(&ns, name).await;
    }
    let shared = api::<VirtualService>(&ns)
        .get("chat-shared-gateway")
        .await
        .expect("vs");
    assert_eq!(shared.spec.gateways, ["istio-ingress/public"]);
    assert!(
        api::<Gateway>(&ns)
            .get_opt("chat-shared-gateway")
            .await
            .expect("get")
            .is_none()
    );
    let canary = api::<Deployment>(&ns)
        .get("chat-new-build-v2")
        .await
        .expect("deployment");
    let container = &canary.spec.template.spec.expect("pod").containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("myregistry.azurecr.io/canarydeploymentapplication:1.5.0-rc1")
    );
    let fixed = api::<Deployment>(&ns)
        .get("chat-fixed-stable")
        .await
        .expect("deployment");
    assert_eq!(fixed.spec.replicas, Some(3));
    let cm = api::<ConfigMap>(&ns)
        .get("chat-new-build-v2")
        .await
        .expect("cm");
    assert_eq!(
        cm.data.expect("data").get("LOG_LEVEL").map(String::as_str),
        Some("debug")
    );
}

/// Each case: a change to the lab example, and a fragment of the apiserver's rejection message.
#[tokio::test]
async fn invalid_specs_are_rejected_at_admission() {
    let Some(ns) = setup("admission").await else {
        return;
    };
    install_crd(&ns).await;
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "weight above 100",
            |r| r["spec"]["weight"] = json!(101),
            "spec.weight",
        ),
        (
            "negative weight",
            |r| r["spec"]["weight"] = json!(-1),
            "spec.weight",
        ),
        (
            "weight as a string",
            |r| r["spec"]["weight"] = json!("25"),
            "spec.weight",
        ),
        (
            "same version names",
            |r| r["spec"]["canary"]["name"] = json!("v1"),
            "stable.name and canary.name must differ",
        ),
        (
            "version name not a DNS label",
            |r| r["spec"]["canary"]["name"] = json!("V2_new"),
            "spec.canary.name",
        ),
        (
            "min above max",
            |r| r["spec"]["autoscaling"]["minReplicas"] = json!(11),
            "minReplicas must not exceed maxReplicas",
        ),
        ("port 0", |r| r["spec"]["port"] = json!(0), "spec.port"),
        (
            "port above 65535",
            |r| r["spec"]["port"] = json!(70000),
            "spec.port",
        ),
        (
            "empty image",
            |r| r["spec"]["image"] = json!(""),
            "spec.image",
        ),
        (
            "empty model",
            |r| r["spec"]["stable"]["model"] = json!(""),
            "spec.stable.model",
        ),
        (
            "no model",
            |r| {
                r["spec"]["canary"]
                    .as_object_mut()
                    .expect("canary")
                    .remove("model");
            },
            "spec.canary.model",
        ),
        (
            "gateway both created and existing",
            |r| r["spec"]["gateway"]["existing"] = json!(["gw"]),
            "set exactly one of gateway.selector",
        ),
        (
            "gateway neither",
            |r| {
                r["spec"]["gateway"]
                    .as_object_mut()
                    .expect("gw")
                    .remove("selector");
                r["spec"]["gateway"]
                    .as_object_mut()
                    .expect("gw")
                    .remove("port");
            },
            "set exactly one of gateway.selector",
        ),
        (
            "replicas with autoscaling",
            |r| r["spec"]["stable"]["replicas"] = json!(3),
            "must be unset when autoscaling is set",
        ),
        (
            "model variable not a name",
            |r| r["spec"]["modelEnv"] = json!("1-MODEL"),
            "spec.modelEnv",
        ),
        (
            "gateway port on an existing gateway",
            |r| {
                r["spec"]["gateway"]
                    .as_object_mut()
                    .expect("gw")
                    .remove("selector");
                r["spec"]["gateway"]["existing"] = json!(["gw"]);
            },
            "gateway.port applies only",
        ),
        (
            "unknown field",
            |r| r["spec"]["wieght"] = json!(30),
            "wieght",
        ),
    ];
    // Created as `kubectl create` does (POST, strict field validation; kube's PostParams cannot say
    // so, hence a raw request): server-side apply would report a wrongly typed field as an
    // internal error instead of a validation failure.
    let resource = ApiResource::erase::<CanaryRelease>(&());
    let url = format!(
        "{}?fieldValidation=Strict",
        DynamicObject::url_path(&resource, Some(&ns.name))
    );
    for (i, (what, edit, fragment)) in cases.into_iter().enumerate() {
        let mut release = lab();
        release["metadata"]["name"] = json!(format!("bad-{i}"));
        release["metadata"]["namespace"] = json!(ns.name);
        edit(&mut release);
        let request = http::Request::post(url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&release).expect("serialize"))
            .expect("request");
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
    let releases = api::<CanaryRelease>(&ns);
    assert!(
        releases
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

/// Specs the schema accepts but the operator cannot act on: a condition and an Event, and no child.
#[tokio::test]
async fn specs_the_schema_cannot_judge_are_reported_as_conditions() {
    let Some(ns) = setup("invalid-spec").await else {
        return;
    };
    let operator = start_operator(&ns).await;
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "API key in config",
            |r| r["spec"]["config"]["AZURE_API_KEY"] = json!("sk-123"),
            "spec.config.AZURE_API_KEY: AZURE_API_KEY looks like a credential",
        ),
        (
            "a bearer token under a harmless name",
            |r| r["spec"]["config"]["AUTH_HEADER"] = json!("Bearer sk-proj-abc123"),
            "spec.config.AUTH_HEADER: the value of AUTH_HEADER looks like a credential (an Authorization header value",
        ),
        (
            "model variable in config",
            |r| r["spec"]["config"]["AZURE_MODEL_NAME"] = json!("x"),
            "AZURE_MODEL_NAME is set from stable.model and canary.model",
        ),
        (
            "bad variable name",
            |r| r["spec"]["canary"]["config"] = json!({"MY VAR": "1"}),
            "spec.canary.config.MY VAR",
        ),
        (
            "URL as a host",
            |r| r["spec"]["gateway"]["hosts"] = json!(["https://chat.example.com"]),
            "is not a host name",
        ),
        (
            "three-part gateway reference",
            |r| {
                r["spec"]["gateway"] = json!({"existing": ["a/b/c"]});
            },
            "is not a gateway reference",
        ),
        (
            "name unusable for a Service",
            |r| r["metadata"]["name"] = json!("chat.v1"),
            "cannot name the release's Service",
        ),
    ];
    let mut names = Vec::new();
    for (i, (what, edit, fragment)) in cases.iter().enumerate() {
        let mut release = lab();
        release["metadata"]["name"] = json!(format!("invalid-{i}"));
        edit(&mut release);
        let name = release["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        apply_release(&ns, release)
            .await
            .unwrap_or_else(|e| panic!("{what}: the schema should accept it: {e}"));
        names.push((name, *what, *fragment));
    }
    for (name, what, fragment) in &names {
        let release = wait_condition(&ns, name, "Ready", "False", "InvalidSpec").await;
        let (_, _, message) = condition(&release, "Degraded").expect("Degraded");
        assert!(
            message.contains(fragment),
            "{what}: {message:?} lacks {fragment:?}"
        );
        assert!(
            !message.contains("sk-proj"),
            "{what}: a credential is never repeated in status: {message:?}"
        );
        wait_event(&ns, "InvalidSpec", fragment).await;
    }
    settle().await;
    let children = api::<ConfigMap>(&ns)
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=canary-operator"))
        .await
        .expect("list");
    assert!(
        children.items.is_empty(),
        "no child of an invalid release is created"
    );
    assert!(
        api::<VirtualService>(&ns)
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );

    // Invalid specs wait for a change instead of retrying: no further writes while nothing changes.
    let writes = operator.writes();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        operator.writes(),
        writes,
        "an invalid spec must not be retried in a loop"
    );

    // Fixing the spec is enough to converge.
    let mut fixed = lab();
    fixed["metadata"]["name"] = json!("invalid-0");
    demo_secret(&ns).await;
    apply_release(&ns, fixed).await.expect("fix");
    wait_ready(&ns, "invalid-0").await;
}

#[tokio::test]
async fn a_child_the_apiserver_refuses_is_reported_not_retried() {
    let Some(ns) = setup("rejected-child").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    demo_secret(&ns).await;
    let mut release = lab();
    release["spec"]["canary"]["resources"] =
        json!({"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}});
    apply_release(&ns, release).await.expect("apply");
    let release = wait_condition(&ns, "azureopenaichat", "Ready", "False", "Rejected").await;
    let (_, _, message) = condition(&release, "Degraded").expect("Degraded");
    assert!(message.contains("azureopenaichat-v2"), "{message}");
    assert!(
        message.contains("must be less than or equal to memory limit"),
        "{message}"
    );
}
