//! Istio's own control plane judging what the operator writes: the route istiod generates for the
//! ingress gateway is the split the release asks for, and follows its edits; and `istioctl
//! analyze` (run on every test namespace when it is dropped, see `TestNs`) does find what is
//! wrong in an Istio object the schema accepts.

use std::time::Duration;

use canary_operator::api::istio::VirtualService;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::common::istio::{RouteWatch, analyze};
use crate::common::lab::{
    api, apply, apply_release, condition, create_secret, patch_release, set_weight, wait_condition,
    wait_event_noting, wait_ready,
};
use crate::common::operator::start_operator;
use crate::common::{host, setup};

/// Longest wait for istiod to push a changed route: its debounce is 100 ms.
const PUSH: Duration = Duration::from_secs(30);

#[tokio::test]
async fn istiod_routes_the_gateway_as_the_release_says_and_follows_weight_edits() {
    let Some(ns) = setup("istiod routes").await else {
        return;
    };
    let mut routes = match RouteWatch::start() {
        Ok(routes) => routes,
        Err(why) => {
            return host::skip(
                "istiod routes",
                &why,
                "run `make cluster-up` (it starts istiod)",
            );
        }
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    let name = "azureopenaichat";
    apply(&ns, name).await;
    wait_ready(&ns, name).await;
    let (gateway_host, fqdn) = (ns.host(name), ns.fqdn(name));

    // What the gateway's Envoy would be sent: the lab's 75/25, to the DestinationRule's subsets
    // of the release's Service, on the port the backend listens on.
    let push = routes
        .wait_split(&gateway_host, &fqdn, &[("v1", 75), ("v2", 25)], PUSH)
        .await;
    let clusters: Vec<String> = push
        .virtual_hosts
        .iter()
        .find(|v| v.domains.contains(&gateway_host))
        .map(|v| {
            v.routes[0]
                .clusters
                .iter()
                .map(|c| c.name.clone())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        clusters,
        [
            format!("outbound|5000|v1|{fqdn}"),
            format!("outbound|5000|v2|{fqdn}")
        ],
        "the route of host {gateway_host}: {push:?}"
    );

    // Each edit of the weight reaches the gateway's route; at 0 and 100 istiod leaves the
    // empty subset out, so all traffic goes to one cluster.
    for (weight, expected) in [
        (40, vec![("v1", 60), ("v2", 40)]),
        (0, vec![("v1", 100)]),
        (100, vec![("v2", 100)]),
        (25, vec![("v1", 75), ("v2", 25)]),
    ] {
        set_weight(&ns, name, weight).await.expect("set the weight");
        routes
            .wait_split(&gateway_host, &fqdn, &expected, PUSH)
            .await;
    }
}

#[tokio::test]
async fn istioctl_analyze_finds_what_the_schema_accepts() {
    let Some(mut ns) = setup("analyze finds").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    let name = "azureopenaichat";
    apply(&ns, name).await;
    wait_ready(&ns, name).await;
    let clean = analyze(&ns.name).expect("istioctl analyze");
    assert!(
        clean.iter().all(|f| f.level == "Info"),
        "the lab's release as the operator writes it: {clean:?}"
    );

    // A VirtualService of our own (not the operator's) that the schema accepts but Istio cannot
    // route: a subset no DestinationRule defines, and a gateway that does not exist.
    let broken = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "broken"},
        "spec": {
            "hosts": [format!("broken.{}.test", ns.name)],
            "gateways": ["no-such-gateway"],
            "http": [{"route": [{"destination": {"host": ns.fqdn(name), "subset": "v3"}}]}],
        },
    });
    api::<VirtualService>(&ns)
        .patch(
            "broken",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&broken),
        )
        .await
        .expect("the apiserver accepts the broken VirtualService");
    let findings = analyze(&ns.name).expect("istioctl analyze");
    let about_broken: Vec<_> = findings
        .iter()
        .filter(|f| f.origin.contains("broken") && f.level == "Error")
        .collect();
    assert!(
        about_broken.iter().any(|f| f.message.contains("v3")),
        "the undefined subset: {findings:?}"
    );
    assert!(
        about_broken
            .iter()
            .any(|f| f.message.contains("no-such-gateway")),
        "the missing gateway: {findings:?}"
    );
    ns.exempt_from_analyze("holds a VirtualService broken on purpose");
}

#[tokio::test]
async fn a_gateway_selector_that_matches_no_pod_is_reported() {
    let Some(mut ns) = setup("gateway selects nothing").await else {
        return;
    };
    // A Gateway that selects no pod, on purpose: istioctl analyze reports it too (IST0101).
    ns.exempt_from_analyze("a Gateway whose selector matches no pod, on purpose");
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    let name = "azureopenaichat";
    let mut release = crate::common::lab::release(&ns, name);
    // The lab's label with a typo, as a user might make it.
    let typo = "aks-istio-ingressgateway-externl";
    release["spec"]["gateway"]["selector"] = json!({"istio": typo});
    apply_release(&ns, release).await.expect("apply");
    // Every object is in place and both versions run, but no traffic can arrive.
    wait_ready(&ns, name).await;
    let release = wait_condition(&ns, name, "IngressGateway", "False", "NoWorkload").await;
    let (_, _, message) = condition(&release, "IngressGateway").expect("the condition");
    assert!(message.contains(&format!("istio={typo}")), "{message}");
    assert!(
        message.contains(&format!("kubectl get pods -A -l istio={typo}")),
        "{message}"
    );
    let event = wait_event_noting(&ns, "NoGatewayWorkload", typo).await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    // Fixed: the selector matches the external ingress gateway's pod that `make cluster-up` runs.
    patch_release(
        &ns,
        name,
        json!({"spec": {"gateway": {"selector": {"istio": "aks-istio-ingressgateway-external"}}}}),
    )
    .await;
    let release = wait_condition(&ns, name, "IngressGateway", "True", "WorkloadFound").await;
    let (_, _, message) = condition(&release, "IngressGateway").expect("the condition");
    assert!(
        message.contains("aks-istio-ingress/"),
        "names the pod: {message}"
    );
}
