//! The operator as a process, as it runs in a pod: HTTP endpoints, metrics, leader election on a
//! real Lease, and a graceful stop on SIGTERM. Runs against the local control plane.
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

mod common;

use std::time::Duration;

use common::process::Process;
use common::{WAIT, lab, setup, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

const RELEASE: &str = "azureopenaichat";

#[tokio::test]
async fn serves_health_readiness_and_metrics() {
    let Some(ns) = setup("runtime-http").await else {
        return;
    };
    let operator = Process::start(&ns, &[]);
    assert_eq!(operator.get("/healthz").await.map(|r| r.0), Some(200));
    wait_for("/readyz to answer 200", WAIT, async || {
        (operator.get("/readyz").await?.0 == 200).then_some(())
    })
    .await;

    lab::create_secret(&ns).await;
    lab::apply(&ns, RELEASE).await;
    lab::wait_canary_weight(&ns, RELEASE, 25, WAIT).await;
    let weight = format!(
        "canary_operator_release_canary_weight{{namespace=\"{}\",name=\"azureopenaichat\"}}",
        ns.name
    );
    wait_for("the weight gauge at 25", WAIT, async || {
        (operator.metric(&weight).await? == 25.0).then_some(())
    })
    .await;
    lab::set_weight(&ns, RELEASE, 40)
        .await
        .expect("patch weight");
    wait_for("the weight gauge at 40", WAIT, async || {
        (operator.metric(&weight).await? == 40.0).then_some(())
    })
    .await;

    let reconciles = operator
        .metric("canary_operator_reconciles_total")
        .await
        .expect("reconciles");
    assert!(reconciles >= 2.0, "{reconciles}");
    let writes = operator
        .metric("canary_operator_api_requests_total{client=\"controller\",kind=\"write\"}")
        .await
        .expect("writes");
    assert!(
        writes >= 11.0,
        "ten children and a status at least: {writes}"
    );
    assert!(
        operator
            .metric("canary_operator_reconcile_duration_seconds_count")
            .await
            .expect("histogram")
            >= reconciles
    );
    assert_eq!(
        operator.metric("canary_operator_leader").await,
        Some(1.0),
        "without leader election it always leads"
    );
}

#[tokio::test]
async fn one_leader_at_a_time_and_a_fast_handover() {
    let Some(ns) = setup("runtime-leader").await else {
        return;
    };
    let lease_args = [
        "--leader-elect",
        "--lease-namespace",
        &ns.name,
        "--lease-duration-seconds",
        "4",
    ];
    let mut first = Process::start(&ns, &[&lease_args[..], &["--instance", "first"]].concat());
    let leases = Api::<Lease>::namespaced(ns.client.clone(), &ns.name);
    let holder = async || {
        leases
            .get_opt("canary-operator")
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
    };
    wait_for("first to lead", WAIT, async || {
        (holder().await? == "first").then_some(())
    })
    .await;
    let mut second = Process::start(&ns, &[&lease_args[..], &["--instance", "second"]].concat());
    wait_for("second to be ready as a standby", WAIT, async || {
        (second.get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    assert_eq!(second.metric("canary_operator_leader").await, Some(0.0));

    lab::create_secret(&ns).await;
    lab::apply(&ns, RELEASE).await;
    lab::wait_canary_weight(&ns, RELEASE, 25, WAIT).await;
    assert_eq!(first.metric("canary_operator_leader").await, Some(1.0));
    assert_eq!(
        second.metric("canary_operator_reconciles_total").await,
        Some(0.0),
        "the standby must not reconcile"
    );

    // A leader that dies without releasing the Lease is replaced once the Lease expires.
    first.signal("KILL");
    assert!(
        first.wait_exit(Duration::from_secs(10)).is_none(),
        "killed, so no exit code"
    );
    wait_for("second to lead", Duration::from_secs(30), async || {
        (holder().await? == "second").then_some(())
    })
    .await;
    lab::set_weight(&ns, RELEASE, 60)
        .await
        .expect("patch weight");
    lab::wait_canary_weight(&ns, RELEASE, 60, WAIT).await;

    // SIGTERM: finish, release the Lease (holder cleared), exit 0.
    second.signal("TERM");
    assert_eq!(
        second.wait_exit(Duration::from_secs(20)),
        Some(0),
        "a clean exit"
    );
    let lease = leases.get("canary-operator").await.expect("lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        None,
        "the Lease was released"
    );
}

/// An operator started with its default traffic provider (Istio alone, as an install without the
/// Gateway API's CRDs would be) refuses a release that asks for the Gateway API, saying how to
/// enable it, and writes nothing for it.
#[tokio::test]
async fn a_provider_the_operator_does_not_run_with_is_refused_with_the_way_to_enable_it() {
    let Some(ns) = setup("runtime-providers").await else {
        return;
    };
    let _operator = Process::start(&ns, &[]);
    lab::create_secret(&ns).await;
    let release = common::gateway_api::routed_by_gateway_api(
        &ns,
        lab::release(&ns, RELEASE),
        common::gateway_api::PLATFORM,
    );
    lab::apply_release(&ns, release).await.expect("apply");
    let refused = lab::wait_condition(&ns, RELEASE, "Ready", "False", "InvalidSpec").await;
    let (_, _, message) = lab::condition(&refused, "Ready").expect("Ready");
    assert!(
        message.contains("spec.traffic.provider: gatewayAPI is not among the traffic providers this operator runs with (istio)")
            && message.contains("--traffic-providers"),
        "{message}"
    );
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(ns.client.clone(), &ns.name);
    let children = configmaps
        .list(
            &kube::api::ListParams::default()
                .labels("app.kubernetes.io/managed-by=canary-operator"),
        )
        .await
        .expect("list");
    assert!(children.items.is_empty(), "no child written");
}
