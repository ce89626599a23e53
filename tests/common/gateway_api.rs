//! The Gateway API side of the test kit: Gateways of class `istio` (the local istiod is their
//! controller and writes their routes' status), releases routed by an HTTPRoute, and the waits for
//! what istiod and the operator do about them.

use canary_operator::api::TrafficProvider;
use canary_operator::api::gateway_api::HTTPRoute;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::Deserialize;
use serde_json::{Value, json};

use super::lab::api;
use super::{TestNs, WAIT, wait_for};

/// The platform's shared Gateway in the examples (`examples/gateway-api.yaml`).
pub const PLATFORM: (&str, &str) = ("istio-ingress", "public");

/// The ingress stand-in's flags that make it the proxy of [`PLATFORM`]: its workload's label
/// (see [`gateway`]), in its namespace.
pub const PLATFORM_PROXY: [&str; 4] = [
    "--proxy-namespace",
    "istio-ingress",
    "--proxy-label",
    "gateway.networking.k8s.io/gateway-name=public",
];

/// Field manager of what the tests write as the platform team.
const PLATFORM_TEAM: &str = "canary-operator-tests";

/// Applies a Gateway of class `istio` named `name` in `namespace` with one HTTP listener `http` on
/// port 80 that takes routes from `from` (`All` or `Same`). Applied, not created: the platform's
/// Gateway outlives the tests, as such a Gateway outlives its tenants.
pub async fn gateway(ns: &TestNs, namespace: &str, name: &str, from: &str) {
    let params = PatchParams::apply(PLATFORM_TEAM).force();
    Api::<Namespace>::all(ns.client.clone())
        .patch(
            namespace,
            &params,
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("namespace {namespace}: {e}"));
    let gateway = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [{
                "name": "http",
                "port": 80,
                "protocol": "HTTP",
                "allowedRoutes": {"namespaces": {"from": from}},
            }],
        },
    });
    let resource = kube::core::ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "Gateway".into(),
        plural: "gateways".into(),
    };
    Api::<kube::core::DynamicObject>::namespaced_with(ns.client.clone(), namespace, &resource)
        .patch(name, &params, &Patch::Apply(gateway))
        .await
        .unwrap_or_else(|e| panic!("Gateway {namespace}/{name}: {e}"));
    gateway_workload(ns, namespace, name).await;
}

/// What istiod's gateway deployment controller would create for a Gateway of class `istio` in a
/// cluster with sidecar injection (this one has none): a Deployment of proxy pods (kwok's, with
/// IPs and Ready) and the Service `<name>-istio` over them. istiod assigns the Service's address
/// to the Gateway and reports it Programmed, and a proxy with the pods' labels receives its routes.
async fn gateway_workload(ns: &TestNs, namespace: &str, name: &str) {
    let labels = json!({"gateway.networking.k8s.io/gateway-name": name});
    proxy_workload(ns, namespace, &format!("{name}-istio"), labels).await;
}

/// A gateway's proxies as the platform would run them, with `labels`: a Deployment `workload` of
/// kwok pods (no proxy runs in them; `xdsroutes` plays their Envoy) and a Service of the same
/// name on port 80, in `namespace`. Gateway selectors match the pods, and `istioctl analyze`
/// checks Gateways' ports against the Service.
pub async fn proxy_workload(ns: &TestNs, namespace: &str, workload: &str, labels: Value) {
    let params = PatchParams::apply(PLATFORM_TEAM).force();
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": workload, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{
                    "name": "istio-proxy",
                    "image": "istio/proxyv2:not-pulled-kwok-runs-no-image",
                    "ports": [{"containerPort": 80, "name": "http"}],
                }]},
            },
        },
    });
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(ns.client.clone(), namespace)
        .patch(workload, &params, &Patch::Apply(deployment))
        .await
        .unwrap_or_else(|e| panic!("Deployment {namespace}/{workload}: {e}"));
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": workload, "namespace": namespace, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80}]},
    });
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(ns.client.clone(), namespace)
        .patch(workload, &params, &Patch::Apply(service))
        .await
        .unwrap_or_else(|e| panic!("Service {namespace}/{workload}: {e}"));
}

/// The platform's Gateway `istio-ingress/public`, open to routes from every namespace.
pub async fn platform_gateway(ns: &TestNs) {
    gateway(ns, PLATFORM.0, PLATFORM.1, "All").await;
}

/// `release` (as written, routed by Istio) routed by `provider`: as it is for Istio; for the
/// Gateway API by an HTTPRoute on the platform's Gateway ([`routed_by_gateway_api`]).
pub fn routed_by(ns: &TestNs, release: Value, provider: TrafficProvider) -> Value {
    match provider {
        TrafficProvider::Istio => release,
        TrafficProvider::GatewayApi => routed_by_gateway_api(ns, release, PLATFORM),
    }
}

/// `release` (a release as written, routed by Istio or not) routed by an HTTPRoute attached to
/// the listener `http` of Gateway `parent` (namespace, name), for its own host name: the Istio
/// gateway settings go, the stickiness stays.
pub fn routed_by_gateway_api(ns: &TestNs, mut release: Value, parent: (&str, &str)) -> Value {
    let name = release["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let spec = &mut release["spec"];
    if let Some(spec) = spec.as_object_mut() {
        spec.remove("gateway");
    }
    let stickiness = spec["traffic"]["stickiness"].clone();
    spec["traffic"] = json!({
        "provider": "gatewayAPI",
        "gatewayAPI": {
            "parentRefs": [{"name": parent.1, "namespace": parent.0, "sectionName": "http"}],
            "hostnames": [ns.host(&name)],
        },
    });
    if !stickiness.is_null() {
        spec["traffic"]["stickiness"] = stickiness;
    }
    release
}

/// `release` (routed by the Gateway API as written) routed by Istio instead, through a Gateway of
/// its own on the external ingress gateway; the stickiness stays.
pub fn routed_by_istio(ns: &TestNs, mut release: Value) -> Value {
    let name = release["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let spec = &mut release["spec"];
    let stickiness = spec["traffic"]["stickiness"].clone();
    if let Some(spec) = spec.as_object_mut() {
        spec.remove("traffic");
    }
    spec["gateway"] = json!({
        "selector": {"istio": "aks-istio-ingressgateway-external"},
        "hosts": [ns.host(&name)],
    });
    if !stickiness.is_null() {
        spec["traffic"] = json!({"stickiness": stickiness});
    }
    release
}

/// The Gateway API's CRD `name` (such as `httproutes.gateway.networking.k8s.io`) as
/// `make cluster-up` installed it: from `gateway-api-crds.yaml` beside the cluster's binaries.
pub fn crd(name: &str) -> CustomResourceDefinition {
    let file = super::istio::tool("gateway-api-crds.yaml").unwrap_or_else(|| {
        panic!("no gateway-api-crds.yaml on PATH (hack/build-tools.sh writes it)")
    });
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_norway::Deserializer::from_str(&text)
        .filter_map(|document| Value::deserialize(document).ok())
        .filter(|d| d["kind"] == "CustomResourceDefinition" && d["metadata"]["name"] == name)
        .find_map(|d| serde_json::from_value(d).ok())
        .unwrap_or_else(|| panic!("no CRD {name} in {}", file.display()))
}

/// Waits until the release's HTTPRoute routes exactly `expected` (Service, weight), in order.
pub async fn wait_route_weights(ns: &TestNs, name: &str, expected: &[(&str, i32)]) -> HTTPRoute {
    let routes = api::<HTTPRoute>(ns);
    let expected: Vec<(String, i32)> = expected
        .iter()
        .map(|(s, w)| ((*s).to_owned(), *w))
        .collect();
    wait_for(
        &format!("HTTPRoute {name} weights {expected:?}"),
        WAIT,
        async || {
            let route = routes.get(name).await.ok()?;
            (route.weights() == expected).then_some(route)
        },
    )
    .await
}

/// The conditions a parent's controller reported on the route: (controller, type, status, reason).
pub fn parent_conditions(route: &HTTPRoute) -> Vec<(String, String, String, String)> {
    route
        .status
        .iter()
        .flat_map(|s| &s.parents)
        .flat_map(|p| {
            p.conditions.iter().map(|c| {
                (
                    p.controller_name.clone(),
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                )
            })
        })
        .collect()
}
