//! What a reconcile costs: the writes of a weight shift, and none when everything is in place.

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

use crate::common::lab::{
    api, apply_release, create_secret, lab, patch_release, wait_event_noting, wait_ready,
    wait_split,
};
use crate::common::operator::{Operator, start_operator};
use crate::common::{TestNs, WAIT, setup, wait_for};
use crate::gateway_api::routed_lab;
use crate::settle;
use canary_operator::api::TrafficProvider;

#[tokio::test]
async fn weight_shifts_cost_one_route_write_one_status_write_and_an_event() {
    let Some(ns) = setup("weight-shift").await else {
        return;
    };
    let operator = start_operator(&ns).await;
    create_secret(&ns).await;
    apply_release(&ns, lab()).await.expect("apply");
    each_shift_writes_three_times(&ns, &operator, TrafficProvider::Istio).await;
}

#[tokio::test]
async fn a_weight_shift_costs_one_httproute_write_one_status_write_and_an_event() {
    let Some(ns) = setup("gateway-api-writes").await else {
        return;
    };
    let operator = routed_lab(&ns).await;
    each_shift_writes_three_times(&ns, &operator, TrafficProvider::GatewayApi).await;
}

/// Shifts the lab's release to 50, 0 and 100 %: each costs one route write (the VirtualService,
/// or the HTTPRoute), one status write and one Event. With the Gateway API, istiod writes the
/// route's status for its new generation meanwhile: a change the operator sees, and for which it
/// writes nothing.
async fn each_shift_writes_three_times(
    ns: &TestNs,
    operator: &Operator,
    provider: TrafficProvider,
) {
    let name = "azureopenaichat";
    wait_ready(ns, name).await;
    settle().await;
    for weight in [50, 0, 100] {
        let before = operator.writes();
        patch_release(ns, name, json!({"spec": {"weight": weight}})).await;
        wait_split(ns, name, 100 - weight, weight).await;
        let release = wait_ready(ns, name).await;
        assert_eq!(
            release.status.as_ref().and_then(|s| s.canary_weight),
            Some(weight)
        );
        wait_event_noting(ns, "WeightChanged", &format!(", {weight}% to v2 (gpt-4o)")).await;
        settle().await;
        let writes = operator.writes() - before;
        assert_eq!(
            writes, 3,
            "weight {weight} ({provider:?}): one route write, one status write and one Event, got {writes}"
        );
    }
}

#[tokio::test]
async fn a_reconcile_that_finds_everything_in_place_writes_nothing() {
    let Some(ns) = setup("steady-state").await else {
        return;
    };
    let operator = start_operator(&ns).await;
    create_secret(&ns).await;
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
