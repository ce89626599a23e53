//! Every release under examples/ applies, becomes ready, and is clean for `istioctl analyze`, as
//! written and routed by the other traffic provider.

use canary_operator::api::TrafficProvider;
use canary_operator::api::gateway_api::HTTPRoute;
use canary_operator::api::istio::{Gateway, VirtualService};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::common::examples::example;
use crate::common::gateway_api;
use crate::common::istio::assert_analyze_clean;
use crate::common::lab::{api, apply_release, create_secret, wait_ready};
use crate::common::operator::start_operator;
use crate::common::{WAIT, setup, wait_for};

/// The examples that become Ready without a rollout's metrics.
const READY_EXAMPLES: [&str; 6] = [
    "lab.yaml",
    "existing-gateway.yaml",
    "no-autoscaling.yaml",
    "image-override.yaml",
    "chat-backend.yaml",
    "sticky-mesh.yaml",
];

/// Applies each of [`READY_EXAMPLES`] as `route` turns it, and returns the releases' names.
async fn apply_examples(
    ns: &crate::common::TestNs,
    route: impl Fn(serde_json::Value) -> serde_json::Value,
) -> Vec<String> {
    let mut names = Vec::new();
    for file in READY_EXAMPLES {
        let release = route(example(file));
        names.push(
            release["metadata"]["name"]
                .as_str()
                .expect("name")
                .to_owned(),
        );
        apply_release(ns, release)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    names
}

#[tokio::test]
async fn every_example_applies_and_becomes_ready() {
    let Some(ns) = setup("examples").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    platform_gateway(&ns).await;
    let names = apply_examples(&ns, |release| release).await;
    for name in &names {
        wait_ready(&ns, name).await;
    }
    // Also when the test namespace is dropped; here so that this test is named for it.
    assert_analyze_clean(&ns.name);
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

/// The examples that become Ready without a rollout's metrics, each routed by the provider its
/// file does not use: the Istio ones by an HTTPRoute on the platform's Gateway API Gateway (which
/// istiod accepts), the Gateway API one by Istio.
#[tokio::test]
async fn every_example_becomes_ready_routed_by_the_other_provider() {
    let Some(ns) = setup("examples-other-provider").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    gateway_api::platform_gateway(&ns).await;
    let names = apply_examples(&ns, |release| {
        gateway_api::routed_by_gateway_api(&ns, release, gateway_api::PLATFORM)
    })
    .await;
    for name in &names {
        wait_ready(&ns, name).await;
        let route = api::<HTTPRoute>(&ns)
            .get(name)
            .await
            .expect("the HTTPRoute");
        assert!(
            gateway_api::parent_conditions(&route)
                .iter()
                .any(|(_, t, status, _)| t == "Accepted" && status == "True"),
            "{name}: {:?}",
            route.status
        );
        assert!(
            api::<VirtualService>(&ns)
                .get_opt(name)
                .await
                .expect("get")
                .is_none()
        );
    }
    let sticky = api::<HTTPRoute>(&ns)
        .get("chat-sticky")
        .await
        .expect("route");
    let rules: Vec<Option<String>> = sticky.spec.rules.iter().map(|r| r.name.clone()).collect();
    assert_eq!(
        rules,
        [
            Some("sticky-v2".into()),
            Some("sticky-v1".into()),
            Some("canary-split".into())
        ],
        "the sticky example keeps its stickiness"
    );

    // The Gateway API example, as written and routed by Istio, each in a namespace of its own
    // (it is named like the lab's release).
    for istio in [false, true] {
        let Some(alone) = setup(&format!("example gateway-api.yaml istio={istio}")).await else {
            return;
        };
        let _operator = start_operator(&alone).await;
        create_secret(&alone).await;
        let mut release = example("gateway-api.yaml");
        if istio {
            release = gateway_api::routed_by_istio(&alone, release);
        }
        apply_release(&alone, release)
            .await
            .expect("gateway-api.yaml");
        wait_ready(&alone, "azureopenaichat").await;
        let (route, service) = (
            api::<HTTPRoute>(&alone)
                .get_opt("azureopenaichat")
                .await
                .expect("get"),
            api::<VirtualService>(&alone)
                .get_opt("azureopenaichat")
                .await
                .expect("get"),
        );
        assert_eq!(
            (route.is_some(), service.is_some()),
            (!istio, istio),
            "istio={istio}"
        );
    }
}

/// The Gateway `istio-ingress/public` that existing-gateway.yaml binds to, as a platform team
/// would run it (for chat.example.com on the external ingress gateway). Without it Istio has no
/// gateway to bind the route to (istioctl analyze: referenced gateway not found). Applied, not
/// created: it outlives the test, as such a Gateway outlives its tenants.
async fn platform_gateway(ns: &crate::common::TestNs) {
    let params = PatchParams::apply("canary-operator-tests").force();
    Api::<Namespace>::all(ns.client.clone())
        .patch(
            "istio-ingress",
            &params,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-ingress"}})),
        )
        .await
        .expect("namespace istio-ingress");
    let gateway = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "public", "namespace": "istio-ingress"},
        "spec": {
            "selector": {"istio": "aks-istio-ingressgateway-external"},
            "servers": [{
                "port": {"number": 80, "name": "http", "protocol": "HTTP"},
                "hosts": ["chat.example.com"],
            }],
        },
    });
    Api::<Gateway>::namespaced(ns.client.clone(), "istio-ingress")
        .patch("public", &params, &Patch::Apply(gateway))
        .await
        .expect("Gateway istio-ingress/public");
}

/// The automatic rollouts' examples, each alone (both are named like the lab's release), as
/// written and routed by the Gateway API: their routing objects as the operator writes them at the
/// start of a rollout, judged by istioctl analyze (Istio's) and accepted by istiod (the HTTPRoute).
#[tokio::test]
async fn the_rollout_examples_are_clean_for_istioctl_analyze() {
    let examples = TrafficProvider::ALL
        .into_iter()
        .flat_map(|p| [("progressive.yaml", p), ("llm-rollout.yaml", p)]);
    for (file, provider) in examples {
        let Some(ns) = setup(&format!("example {file} {}", provider.as_str())).await else {
            return;
        };
        let _operator = start_operator(&ns).await;
        create_secret(&ns).await;
        let mut release = example(file);
        if provider == TrafficProvider::GatewayApi {
            gateway_api::platform_gateway(&ns).await;
        }
        release = gateway_api::routed_by(&ns, release, provider);
        let name = release["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        apply_release(&ns, release)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        // The route is applied after the objects it names (Services, DestinationRule, Gateway);
        // its weights are the rollout's business, not analyze's.
        match provider {
            TrafficProvider::GatewayApi => {
                let routes = api::<HTTPRoute>(&ns);
                wait_for(
                    &format!("{file}: the HTTPRoute, accepted"),
                    WAIT,
                    async || {
                        let route = routes.get_opt(&name).await.ok().flatten()?;
                        gateway_api::parent_conditions(&route)
                            .iter()
                            .any(|(_, t, status, _)| t == "Accepted" && status == "True")
                            .then_some(())
                    },
                )
                .await;
            }
            TrafficProvider::Istio => {
                let routes = api::<VirtualService>(&ns);
                wait_for(&format!("{file}: the VirtualService"), WAIT, async || {
                    routes.get_opt(&name).await.ok().flatten()
                })
                .await;
            }
        }
        assert_analyze_clean(&ns.name);
    }
}
