//! A Gateway API release's HTTPRoute (a Service per version) followed through istiod, with the
//! stand-in as the proxy of a Gateway of class istio.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use crate::backend::{IngressStandin, nginx};
use crate::common;
use crate::common::{istiod, setup};
use crate::objects::apply;
use crate::traffic::{
    FOLLOW, REQUESTS, ask, counts, first_routing, http_client, sticky_cookie, version_of, versions,
};

/// The HTTPRoute a Gateway API release would have: the header route of v2, then the split between
/// one Service per version, each backend's answers naming its version in a cookie.
fn http_route(v2: u32) -> Value {
    let backend = |version: &str, weight: u32| {
        json!({
            "name": format!("chat-{version}"), "port": 5000, "weight": weight,
            "filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                "add": [{"name": "set-cookie", "value": sticky_cookie(version)}]}}],
        })
    };
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "chat"},
        "spec": {
            "parentRefs": [{"name": "chat"}],
            "rules": [
                {"matches": [{"headers": [{"type": "Exact", "name": "x-canary-model", "value": "v2"}]}],
                 "backendRefs": [{"name": "chat-v2", "port": 5000}]},
                {"matches": [{"headers": [{"type": "RegularExpression", "name": "cookie",
                                           "value": r"^(.*;\s*)?canary-model=v2(;.*)?$"}]}],
                 "backendRefs": [{"name": "chat-v2", "port": 5000}]},
                {"backendRefs": [backend("v1", 100 - v2), backend("v2", v2)]},
            ],
        },
    })
}

/// A Gateway API Gateway of class istio, with istiod as its controller. istiod would deploy its
/// proxy (a Deployment and the Service `chat-istio`, selecting
/// `gateway.networking.k8s.io/gateway-name: chat`), but it has no gateway template here, so the
/// test creates them as it would: a kwok pod, and the Service whose port the listener is on.
/// istiod binds a Gateway API Gateway to the proxies that are endpoints of that Service, and
/// takes a proxy it knows no pod of by its namespace and labels: which is how `xdsroutes`
/// connects.
pub async fn standin_gateway_follows_an_httproute_to_a_service_per_version() {
    const TEST: &str = "standin_gateway_follows_an_httproute_to_a_service_per_version";
    let Some(nginx) = nginx(TEST) else { return };
    let Some(ns) = setup(TEST).await else {
        return;
    };
    let Some(xds) = istiod(TEST) else { return };
    let gateway_host = ns.host("chat");
    let label = "gateway.networking.k8s.io/gateway-name";
    for version in ["v1", "v2"] {
        apply(&ns, json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("chat-{version}")},
            "spec": {"selector": {"app": "chat", "version": version},
                     "ports": [{"name": "http", "port": 5000}]},
        }))
        .await;
    }
    apply(
        &ns,
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "chat-istio"},
            "spec": {"selector": {label: "chat"}, "ports": [{"name": "http", "port": 80}]},
        }),
    )
    .await;
    apply(&ns, json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "chat-istio"},
        "spec": {
            "selector": {"matchLabels": {label: "chat"}},
            "template": {"metadata": {"labels": {label: "chat"}}, "spec": {"containers": [
                {"name": "istio-proxy", "image": "istio/proxyv2:not-pulled-kwok-runs-no-image"}]}},
        },
    }))
    .await;
    apply(&ns, json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "chat"},
        "spec": {"gatewayClassName": "istio", "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP", "hostname": gateway_host}]},
    }))
    .await;
    apply(&ns, http_route(25)).await;

    let (v1, v2) = versions().await;
    let upstreams: [(&str, SocketAddr); 2] = [("v1", v1.addr), ("v2", v2.addr)];
    let selects = format!("{label}=chat");
    let proxy = ["--proxy-namespace", &ns.name, "--proxy-label", &selects];
    let mut gateway = IngressStandin::start(
        &nginx,
        &xds,
        (&ns.name, "chat", &gateway_host),
        &upstreams,
        &proxy,
    );
    let chat = gateway.url("/chat");
    let client = http_client();
    for (phase, v2_share) in [25, 60].into_iter().enumerate() {
        let v1_share = 100 - v2_share;
        let applied = if phase == 0 {
            first_routing(|| gateway.next_applied(FOLLOW))
        } else {
            apply(&ns, http_route(v2_share)).await;
            gateway.next_applied(FOLLOW)
        };
        assert_eq!(
            applied,
            format!("applied v1={v1_share} v2={v2_share} match:v2 match:v2")
        );
        let mut models = BTreeMap::new();
        for _ in 0..REQUESTS {
            let answer = ask(&client, &chat, &[]).await;
            assert_eq!(
                answer.set_cookie,
                [sticky_cookie(version_of(&answer.model))]
            );
            *models.entry(answer.model).or_insert(0) += 1;
        }
        assert_eq!(models, counts(&[("m1", v1_share), ("m2", v2_share)]));
        for headers in [
            [("x-canary-model", "v2")],
            [("cookie", "a=b; canary-model=v2")],
        ] {
            let answer = ask(&client, &chat, &headers).await;
            assert_eq!(answer.model, "m2", "{headers:?}: {answer:?}");
            assert!(answer.set_cookie.is_empty(), "{answer:?}");
        }
    }

    // What the Gateway's status says once its proxy's pod runs; `istioctl analyze` (when the
    // namespace is dropped) reports a Gateway that is not programmed.
    let gateways = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "Gateway",
    ));
    let api = Api::<DynamicObject>::namespaced_with(ns.client.clone(), &ns.name, &gateways);
    common::wait_for("the Gateway to be Programmed", FOLLOW, async || {
        let gateway = api.get("chat").await.ok()?;
        let conditions = gateway.data["status"]["conditions"].as_array()?.clone();
        conditions
            .iter()
            .any(|c| c["type"] == "Programmed" && c["status"] == "True")
            .then_some(())
    })
    .await;
}
