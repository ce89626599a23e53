//! Rollouts judged by real measurements: Prometheus scraping the two chat backends that the
//! ingress stand-in sends real requests to, in the split the operator writes.

use std::time::Duration;

use canary_operator::api::TrafficProvider;
use canary_operator::api::istio::VirtualService;
use canary_operator::rollout::Verb;

use crate::common::gateway_api;
use crate::common::lab::{api, events, wait_canary_weight, wait_event_noting, wait_split};
use crate::common::operator::start_operator;
use crate::common::setup;
use crate::stage::{
    NAME, Stage, Versions, WeightLog, analysis, apply, ask, automatic, rollout, wait_phase,
};

const WITHIN: Duration = Duration::from_secs(90);

const STEPS: [(i32, &str, bool); 3] = [(10, "4s", false), (50, "4s", false), (100, "2s", false)];

/// A healthy canary goes 10 → 50 → 100, and the check values are in status.
#[tokio::test]
async fn a_healthy_canary_is_promoted_step_by_step() {
    healthy_rollout("rollout-healthy", TrafficProvider::Istio).await;
}

/// The same rollout with the Gateway API provider: an HTTPRoute on the platform's Gateway, which
/// istiod programs into the Gateway's proxy (the stand-in), steps through the same weights and is
/// promoted, judged by the same analysis of the same real traffic.
#[tokio::test]
async fn a_healthy_canary_routed_by_the_gateway_api_is_promoted() {
    healthy_rollout("rollout-healthy-gateway-api", TrafficProvider::GatewayApi).await;
}

/// A healthy canary's rollout through the stand-in, routed by Istio or by the Gateway API.
async fn healthy_rollout(test: &str, provider: TrafficProvider) {
    let Some(ns) = setup(test).await else {
        return;
    };
    let versions = Versions {
        stable_env: &[],
        canary_env: &[],
        canary_scraped: true,
        provider,
    };
    let Some(mut stage) = Stage::start_with(&ns, test, versions).await else {
        return;
    };
    stage.load(20);
    let _operator = start_operator(&ns).await;
    let (log, mut release) = (
        WeightLog::start(&ns, provider),
        automatic(&ns, &STEPS, Some(analysis(&stage.prometheus.url()))),
    );
    release = gateway_api::routed_by(&ns, release, provider);
    apply(&ns, release).await;
    let promoted = wait_phase(&ns, "Promoted", None, WITHIN).await;
    wait_split(&ns, NAME, 0, 100).await;
    assert_eq!(log.since_ready(), [10, 50, 100]);
    let check = promoted
        .checks
        .first()
        .expect("the check's last measurement in status");
    assert_eq!(
        (check.name.as_str(), check.verdict.as_str()),
        ("error-rate", "Pass")
    );
    assert_eq!(
        check.value,
        Some(0.0),
        "the canary answered without errors: {check:?}"
    );
    assert!(check.passes >= 1, "{check:?}");
    assert!(check.message.contains("canary 0"), "{}", check.message);
    // What nginx was told, in order, as the stand-in applied it (with the Gateway API, the
    // routes istiod pushed for the HTTPRoute: the versions' Services).
    let mut applied = Vec::new();
    while applied.last().map(String::as_str) != Some("applied v1=0 v2=100") {
        applied.push(stage.gateway.next_applied(Duration::from_secs(10)));
    }
    for step in ["applied v1=90 v2=10", "applied v1=50 v2=50"] {
        assert!(applied.iter().any(|l| l == step), "{step}: {applied:?}");
    }
    if provider == TrafficProvider::GatewayApi {
        assert!(
            api::<VirtualService>(&ns)
                .get_opt(NAME)
                .await
                .expect("get")
                .is_none(),
            "no Istio route"
        );
    }
}

/// A canary answering every second request with 500 is rolled back after failureLimit + 1
/// failed measurements, and is not rolled out again until `retry`.
#[tokio::test]
async fn a_faulty_canary_is_rolled_back_and_stays_so() {
    let Some(ns) = setup("rollout-faulty").await else {
        return;
    };
    let Some(mut stage) = Stage::start(&ns, "rollout-faulty", &[("FAULT_EVERY", "2")]).await else {
        return;
    };
    stage.load(20);
    let _operator = start_operator(&ns).await;
    apply(
        &ns,
        automatic(&ns, &STEPS, Some(analysis(&stage.prometheus.url()))),
    )
    .await;
    let rolled_back = wait_phase(&ns, "RolledBack", None, WITHIN).await;
    wait_canary_weight(&ns, NAME, 0, WITHIN).await;
    assert_eq!(rolled_back.weight, 0);
    assert_eq!(rolled_back.step, 1, "rolled back at the first step");
    assert_eq!(
        rolled_back.failed_revision.as_deref(),
        Some(rolled_back.revision.as_str())
    );
    let check = rolled_back.checks.first().expect("the check in status");
    assert_eq!(check.verdict, "Fail");
    assert_eq!(
        check.failures, 2,
        "failureLimit 1: the second failed measurement rolls back: {check:?}"
    );
    assert!(check.value.is_some_and(|v| v > 0.05), "{check:?}");
    assert!(
        check.message.contains("above max 0.05"),
        "{}",
        check.message
    );
    wait_event_noting(&ns, "RolledBack", "error-rate").await;
    // Not re-run by itself.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let still = rollout(&ns).await.expect("rollout status");
    assert_eq!((still.phase.as_str(), still.weight), ("RolledBack", 0));
    let starts = |evs: &[k8s_openapi::api::events::v1::Event]| {
        evs.iter()
            .filter(|e| e.reason.as_deref() == Some("RolloutStarted"))
            .count()
    };
    assert_eq!(starts(&events(&ns).await), 1);
    // Retry rolls the same revision out again (and, still faulty, it fails again).
    ask(&ns, Verb::Retry).await;
    wait_event_noting(&ns, "RolloutStarted", &rolled_back.revision).await;
    let again = wait_phase(&ns, "RolledBack", None, WITHIN).await;
    assert_eq!(again.revision, rolled_back.revision);
}

/// No traffic: every measurement is inconclusive, the rollout pauses (NoData) with the weight
/// held, and is never promoted. Prometheus killed then, the queries fail, and the reason follows:
/// MetricsUnavailable.
#[tokio::test]
async fn no_traffic_pauses_for_no_data_and_never_promotes() {
    let Some(ns) = setup("rollout-nodata").await else {
        return;
    };
    let Some(mut stage) = Stage::start(&ns, "rollout-nodata", &[]).await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    apply(
        &ns,
        automatic(&ns, &STEPS, Some(analysis(&stage.prometheus.url()))),
    )
    .await;
    let paused = wait_phase(&ns, "Paused", Some("NoData"), WITHIN).await;
    assert_eq!((paused.step, paused.weight), (1, 10));
    assert!(paused.inconclusive >= 4, "{paused:?}");
    wait_event_noting(&ns, "Paused", "NoData").await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let still = rollout(&ns).await.expect("rollout status");
    assert_eq!(
        (still.phase.as_str(), still.step, still.weight),
        ("Paused", 1, 10),
        "never promoted on no data"
    );
    stage.prometheus.kill();
    let blind = wait_phase(&ns, "Paused", Some("MetricsUnavailable"), WITHIN).await;
    assert_eq!((blind.step, blind.weight), (1, 10), "weight held");
    assert!(blind.message.contains("query errors"), "{}", blind.message);
    wait_event_noting(&ns, "Paused", "MetricsUnavailable").await;
}

/// Prometheus killed mid-step: the rollout pauses (MetricsUnavailable) with the weight held,
/// never rolls back; Prometheus back, it resumes by itself and is promoted.
#[tokio::test]
async fn a_prometheus_outage_pauses_and_the_rollout_resumes_after_it() {
    let Some(ns) = setup("rollout-outage").await else {
        return;
    };
    let Some(mut stage) = Stage::start(&ns, "rollout-outage", &[]).await else {
        return;
    };
    stage.load(20);
    let _operator = start_operator(&ns).await;
    let steps = [(10, "4s", false), (50, "6s", false), (100, "2s", false)];
    apply(
        &ns,
        automatic(&ns, &steps, Some(analysis(&stage.prometheus.url()))),
    )
    .await;
    wait_canary_weight(&ns, NAME, 50, WITHIN).await;
    stage.prometheus.kill();
    let paused = wait_phase(&ns, "Paused", Some("MetricsUnavailable"), WITHIN).await;
    assert_eq!((paused.step, paused.weight), (2, 50), "weight held");
    assert!(
        paused.message.contains("query errors in a row"),
        "{}",
        paused.message
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let held = rollout(&ns).await.expect("rollout status");
    assert_eq!(
        (held.phase.as_str(), held.weight),
        ("Paused", 50),
        "not rolled back, not promoted, while blind"
    );
    stage.prometheus.start_again().await;
    wait_event_noting(&ns, "Resumed", "").await;
    wait_phase(&ns, "Promoted", None, WITHIN).await;
    wait_canary_weight(&ns, NAME, 100, WITHIN).await;
}
