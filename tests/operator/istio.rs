//! Istio's own control plane judging what the operator writes: the route istiod generates for the
//! ingress gateway is the split the release asks for, and follows its edits; and `istioctl
//! analyze` (run on every test namespace when it is dropped, see `TestNs`) does find what is
//! wrong in an Istio object the schema accepts.

use std::time::Duration;

use canary_operator::api::istio::{Gateway, VirtualService};
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::common::istio::{RouteWatch, analyze};
use crate::common::lab::{
    api, apply, apply_release, condition, create_secret, patch_release, set_weight, wait_condition,
    wait_event_noting, wait_gone, wait_ready,
};
use crate::common::operator::start_operator;
use crate::common::{WAIT, host, setup, wait_for};

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

/// `traffic.mesh`: the VirtualService is bound to the mesh's sidecars as well, for the Service's
/// own host; without a gateway, to the mesh alone, and the Gateway the release had goes.
#[tokio::test]
async fn mesh_traffic_is_routed_with_or_without_a_gateway() {
    let Some(ns) = setup("mesh routing").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    let name = "azureopenaichat";
    let mut release = crate::common::lab::release(&ns, name);
    release["spec"]["traffic"] = json!({"mesh": true});
    // A mesh-bound VirtualService must not claim `*`: its own host, as a release would name it.
    release["spec"]["gateway"]["hosts"] = json!([ns.host(name)]);
    apply_release(&ns, release).await.expect("apply");
    wait_ready(&ns, name).await;
    let services = api::<VirtualService>(&ns);
    let vs = services.get(name).await.expect("VirtualService");
    assert_eq!(vs.spec.gateways, [name, "mesh"]);
    assert_eq!(vs.spec.hosts, [ns.host(name), ns.fqdn(name)]);
    assert_eq!(vs.weights(), [("v1".to_owned(), 75), ("v2".to_owned(), 25)]);
    // What istiod sends a sidecar in the mesh for calls to the Service's port: the split, by
    // subset, where without `mesh` it would balance over all the Service's pods.
    let fqdn = ns.fqdn(name);
    match RouteWatch::sidecar(&ns.name, 5000) {
        Ok(mut sidecar) => {
            sidecar
                .wait_split(&fqdn, &fqdn, &[("v1", 75), ("v2", 25)], PUSH)
                .await;
            set_weight(&ns, name, 40).await.expect("set the weight");
            sidecar
                .wait_split(&fqdn, &fqdn, &[("v1", 60), ("v2", 40)], PUSH)
                .await;
        }
        Err(why) => host::skip(
            "mesh routing",
            &why,
            "run `make cluster-up` (it starts istiod)",
        ),
    }

    // Mesh only: no gateway at all.
    let mesh_only = json!({"spec": {"gateway": null}});
    patch_release(&ns, name, mesh_only).await;
    wait_gone::<Gateway>(&ns, name).await;
    let ready = wait_ready(&ns, name).await;
    let vs = services.get(name).await.expect("VirtualService");
    assert_eq!(vs.spec.gateways, ["mesh"]);
    assert_eq!(vs.spec.hosts, [ns.fqdn(name)]);
    assert!(
        condition(&ready, "IngressGateway").is_none(),
        "no gateway, no gateway condition: {:?}",
        ready.status
    );
}

/// `traffic.stickiness`: a match route per version with a share of the traffic sends its
/// conversations back to it, and the split's answers carry the version; istiod turns each into a
/// route of the gateway's. A version at 0 % loses its match route.
#[tokio::test]
async fn a_sticky_release_routes_conversations_back_to_their_version() {
    let Some(ns) = setup("sticky routing").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    let name = "azureopenaichat";
    let mut release = crate::common::lab::release(&ns, name);
    release["spec"]["traffic"] =
        json!({"stickiness": {"cookie": {"name": "canary-model", "maxAge": "1h"}}});
    apply_release(&ns, release).await.expect("apply");
    wait_ready(&ns, name).await;
    let services = api::<VirtualService>(&ns);
    let routes = |vs: &VirtualService| -> Vec<String> {
        vs.spec.http.iter().filter_map(|r| r.name.clone()).collect()
    };
    let vs = services.get(name).await.expect("VirtualService");
    assert_eq!(routes(&vs), ["sticky-v2", "sticky-v1", "canary-split"]);
    let cookie = vs.spec.http[0].match_[0]
        .headers
        .get("cookie")
        .and_then(|m| m.regex.clone());
    assert_eq!(cookie.as_deref(), Some(r"^(.*;\s*)?canary-model=v2(;.*)?$"));
    let added = |i: usize| {
        vs.spec.http[2].route[i]
            .headers
            .as_ref()
            .and_then(|h| h.response.as_ref())
            .and_then(|r| r.add.get("set-cookie").cloned())
    };
    assert_eq!(
        added(0).as_deref(),
        Some("canary-model=v1; Path=/; Max-Age=3600")
    );
    assert_eq!(
        added(1).as_deref(),
        Some("canary-model=v2; Path=/; Max-Age=3600")
    );

    // Rolled back to 0 %: the canary's conversations fall through to the split, to the stable.
    set_weight(&ns, name, 0).await.expect("weight 0");
    wait_for("the canary's match route gone", WAIT, async || {
        let vs = services.get(name).await.ok()?;
        (routes(&vs) == ["sticky-v1", "canary-split"]).then_some(())
    })
    .await;
    // Fully shifted: the stable's go to the canary.
    set_weight(&ns, name, 100).await.expect("weight 100");
    wait_for("the stable's match route gone", WAIT, async || {
        let vs = services.get(name).await.ok()?;
        (routes(&vs) == ["sticky-v2", "canary-split"]).then_some(())
    })
    .await;
}
