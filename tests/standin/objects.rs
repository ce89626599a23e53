//! What the tests apply to the control plane around the routes: the Service, DestinationRule and
//! Gateway of `chat`, a pod per version, and any object as JSON.

use canary_operator::api::istio::{DestinationRule, Gateway};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use crate::common::TestNs;

/// What the operator would write around a VirtualService `chat`, by hand: the Service whose
/// subsets it splits, the DestinationRule naming them, and a Gateway on the external ingress
/// gateway for `host`.
pub async fn mesh_objects(ns: &TestNs, host: &str) {
    let apply = PatchParams::apply("test").force();
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "chat"},
        "spec": {"selector": {"app": "chat"}, "ports": [{"name": "http", "port": 5000}]},
    });
    Api::<Service>::namespaced(ns.client.clone(), &ns.name)
        .patch("chat", &apply, &Patch::Apply(&service))
        .await
        .expect("the Service");
    let rule = json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "chat"},
        "spec": {"host": "chat", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
        ]},
    });
    Api::<DestinationRule>::namespaced(ns.client.clone(), &ns.name)
        .patch("chat", &apply, &Patch::Apply(&rule))
        .await
        .expect("the DestinationRule");
    let gateway = json!({
        "apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "chat"},
        "spec": {
            "selector": {"istio": "aks-istio-ingressgateway-external"},
            "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": [host]}],
        },
    });
    Api::<Gateway>::namespaced(ns.client.clone(), &ns.name)
        .patch("chat", &apply, &Patch::Apply(&gateway))
        .await
        .expect("the Gateway");
}

/// Applies `object` (JSON with apiVersion, kind and metadata.name) in the test namespace, whatever
/// its kind: the routes below carry fields (match conditions, response headers, HTTPRoutes) that
/// the operator's own Istio types leave out.
pub async fn apply(ns: &TestNs, object: Value) {
    let (group, version) = match object["apiVersion"].as_str().expect("an apiVersion") {
        api_version @ "v1" => ("", api_version),
        api_version => api_version.split_once('/').expect("group/version"),
    };
    let kind = object["kind"].as_str().expect("a kind");
    let name = object["metadata"]["name"].as_str().expect("a name");
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::<DynamicObject>::namespaced_with(ns.client.clone(), &ns.name, &resource)
        .patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
}

/// A pod per version for the DestinationRule's subsets to select, as a release's Deployments
/// would run (kwok's: no container runs; the stand-in's `--upstream` processes answer instead).
/// `istioctl analyze` reports subsets that select no pod.
pub async fn version_pods(ns: &TestNs) {
    for version in ["v1", "v2"] {
        let labels = json!({"app": "chat", "version": version});
        apply(
            ns,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": format!("chat-{version}")},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                        {"name": "chat", "image": "chat:not-pulled-kwok-runs-no-image"}]}},
                },
            }),
        )
        .await;
    }
}
