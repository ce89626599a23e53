//! The release's Service and subsets select its own pods only, beside another application with
//! the same labels.

use std::collections::BTreeSet;
use std::time::Duration;

use canary_operator::api::istio::DestinationRule;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::common::lab::{api, apply_release, create_secret, lab, wait_condition, wait_ready};
use crate::common::operator::start_operator;
use crate::common::{TestNs, WAIT, setup, wait_for};

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
    create_secret(&ns).await;

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
