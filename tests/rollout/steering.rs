//! Rollouts steered by time, approvals and requests, without analysis: the steps' weights reach
//! the VirtualService in order; approval, pause, resume, abort and retry act once; an operator
//! killed mid-step resumes it; a GitOps re-apply of the same spec changes nothing.

use std::time::{Duration, Instant};

use canary_operator::api::TrafficProvider;
use canary_operator::api::istio::VirtualService;
use canary_operator::rollout::Verb;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};

use crate::common::lab::{api, own_host, wait_canary_weight, wait_event_noting};
use crate::common::operator::start_operator;
use crate::common::process::Process;
use crate::common::setup;
use crate::stage::{NAME, WeightLog, apply, ask, automatic, rollout, wait_phase};

const WITHIN: Duration = Duration::from_secs(60);

/// Without analysis, each step lasts its duration and the weights are exactly the steps.
#[tokio::test]
async fn steps_advance_on_time_and_the_canary_is_promoted() {
    let Some(ns) = setup("rollout-steps").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    let log = WeightLog::start(&ns, TrafficProvider::Istio);
    let started = Instant::now();
    apply(
        &ns,
        automatic(
            &ns,
            &[(10, "2s", false), (50, "2s", false), (100, "1s", false)],
            None,
        ),
    )
    .await;
    wait_canary_weight(&ns, NAME, 10, WITHIN).await;
    let deployments = api::<k8s_openapi::api::apps::v1::Deployment>(&ns);
    let stable_before = deployments
        .get("chat-v1")
        .await
        .expect("the stable's Deployment");
    let promoted = wait_phase(&ns, "Promoted", None, WITHIN).await;
    let took = started.elapsed();
    wait_canary_weight(&ns, NAME, 100, WITHIN).await;
    let weights = log.since_ready();
    assert_eq!(
        weights,
        [10, 50, 100],
        "the canary's weights, as the VirtualService carried them"
    );
    assert!(
        took >= Duration::from_secs(4),
        "two steps of 2 s cannot end in {took:?}"
    );
    assert_eq!(
        (promoted.step, promoted.steps, promoted.weight),
        (3, 3, 100)
    );
    for reason in ["RolloutStarted", "StepStarted", "Promoted"] {
        wait_event_noting(&ns, reason, "").await;
    }
    // Promotion moves the pointer: the stable's pods are not restarted.
    let stable_after = deployments
        .get("chat-v1")
        .await
        .expect("the stable's Deployment");
    assert_eq!(
        stable_after.spec.template, stable_before.spec.template,
        "the stable's pod template is untouched by promotion"
    );
}

/// An approval step holds until `promote`; `resume` does not approve.
#[tokio::test]
async fn an_approval_step_waits_for_promote() {
    let Some(ns) = setup("rollout-approval").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    apply(
        &ns,
        automatic(
            &ns,
            &[(10, "1s", false), (50, "1s", true), (100, "1s", false)],
            None,
        ),
    )
    .await;
    let refused =
        canary_operator::plugin::set_weight::set_weight(&crate::stage::target(&ns), NAME, 50, None)
            .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("is automatic (spec.strategy)")),
        "set-weight on an automatic release: {:?}",
        refused.map(|c| c.to_string())
    );
    let waiting = wait_phase(&ns, "Paused", Some("AwaitingApproval"), WITHIN).await;
    assert_eq!((waiting.step, waiting.weight), (2, 50));
    wait_canary_weight(&ns, NAME, 50, WITHIN).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rollout(&ns).await.map(|r| (r.phase, r.weight)),
        Some(("Paused".to_owned(), 50)),
        "still waiting"
    );
    ask(&ns, Verb::Resume).await;
    assert_eq!(
        rollout(&ns).await.map(|r| r.phase),
        Some("Paused".to_owned()),
        "resume does not approve"
    );
    ask(&ns, Verb::Promote).await;
    wait_phase(&ns, "Promoted", None, WITHIN).await;
    wait_canary_weight(&ns, NAME, 100, WITHIN).await;
}

/// Pause holds the weight past the step's end; resume goes on; abort sends the canary nothing
/// and stays so; retry starts over.
#[tokio::test]
async fn pause_resume_abort_and_retry() {
    let Some(ns) = setup("rollout-requests").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    apply(
        &ns,
        automatic(
            &ns,
            &[(10, "3s", false), (50, "1h", false), (100, "1s", false)],
            None,
        ),
    )
    .await;
    wait_canary_weight(&ns, NAME, 10, WITHIN).await;
    ask(&ns, Verb::Pause).await;
    let paused = wait_phase(&ns, "Paused", Some("Requested"), WITHIN).await;
    assert_eq!(paused.weight, 10);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        rollout(&ns).await.map(|r| (r.phase, r.step, r.weight)),
        Some(("Paused".to_owned(), 1, 10)),
        "held past the step's 3 s"
    );
    ask(&ns, Verb::Resume).await;
    wait_canary_weight(&ns, NAME, 50, WITHIN).await;
    ask(&ns, Verb::Abort).await;
    let aborted = wait_phase(&ns, "Aborted", None, WITHIN).await;
    assert_eq!(aborted.weight, 0);
    wait_canary_weight(&ns, NAME, 0, WITHIN).await;
    wait_event_noting(&ns, "Aborted", "aborted by request").await;
    // A request acted on is not acted on again, whoever re-applies it.
    let services = api::<VirtualService>(&ns);
    let before = services
        .get(NAME)
        .await
        .expect("VirtualService")
        .resource_version();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        services
            .get(NAME)
            .await
            .expect("VirtualService")
            .resource_version(),
        before
    );
    assert_eq!(
        rollout(&ns).await.map(|r| r.phase),
        Some("Aborted".to_owned())
    );
    ask(&ns, Verb::Retry).await;
    let again = wait_phase(&ns, "Progressing", None, WITHIN).await;
    assert_eq!(again.step, 1);
    wait_canary_weight(&ns, NAME, 10, WITHIN).await;
}

/// An operator killed (SIGKILL) mid-step: the next one resumes the same step with the same start,
/// never sends a lower weight, and ends the step on time.
#[tokio::test]
async fn an_operator_killed_mid_step_resumes_it() {
    let Some(ns) = setup("rollout-sigkill").await else {
        return;
    };
    crate::common::operator::install_crd(&ns).await;
    let args = ["--min-analysis-interval=1s"];
    let operator = Process::start(&ns, &args);
    let log = WeightLog::start(&ns, TrafficProvider::Istio);
    apply(
        &ns,
        automatic(
            &ns,
            &[(10, "2s", false), (50, "8s", false), (100, "1s", false)],
            None,
        ),
    )
    .await;
    wait_canary_weight(&ns, NAME, 50, WITHIN).await;
    // The route is written before the status that records it: wait for both.
    let before = crate::common::wait_for("step 2 in status", WITHIN, async || {
        rollout(&ns).await.filter(|r| r.step == 2)
    })
    .await;
    drop(operator); // SIGKILL
    let killed_at = Instant::now();
    let _operator = Process::start(&ns, &args);
    // The new operator goes on from the status: the same step, begun at the same time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resumed = rollout(&ns).await.expect("rollout status");
    assert_eq!(
        (
            resumed.step,
            &resumed.step_start_time,
            &resumed.weight_applied_time
        ),
        (2, &before.step_start_time, &before.weight_applied_time),
        "the restarted operator resumed step 2 as it was"
    );
    let promoted = wait_phase(&ns, "Promoted", None, WITHIN).await;
    let applied = before
        .weight_applied_time
        .clone()
        .expect("step 2's weight time");
    let left = Duration::from_secs(8).saturating_sub(Duration::from_secs(
        u64::try_from(k8s_openapi::jiff::Timestamp::now().as_second() - applied.0.as_second())
            .unwrap_or_default(),
    ));
    assert!(
        killed_at.elapsed() <= left + Duration::from_secs(20),
        "the step ended {:?} after the restart",
        killed_at.elapsed()
    );
    let weights = log.since_ready();
    assert_eq!(
        weights,
        [10, 50, 100],
        "no lower weight was sent after the restart"
    );
    assert_eq!(promoted.phase, "Promoted");
}

/// A re-apply of the same spec by another field manager (as Argo CD syncs) changes nothing:
/// no write to the route, the rollout where it was.
#[tokio::test]
async fn a_gitops_reapply_changes_nothing() {
    let Some(ns) = setup("rollout-reapply").await else {
        return;
    };
    let operator = start_operator(&ns).await;
    // What both managers apply: the same spec, byte for byte.
    let release = own_host(
        &ns,
        automatic(
            &ns,
            &[(10, "1s", false), (50, "1h", false), (100, "1s", false)],
            None,
        ),
    );
    apply(&ns, release.clone()).await;
    wait_canary_weight(&ns, NAME, 50, WITHIN).await;
    // The step's status write follows its route write: both are in before anything is compared.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rollout(&ns).await.expect("rollout status");
    let writes = operator.writes();
    let services = api::<VirtualService>(&ns);
    let route = services
        .get(NAME)
        .await
        .expect("VirtualService")
        .resource_version();
    api::<canary_operator::api::CanaryRelease>(&ns)
        .patch(
            NAME,
            &PatchParams::apply("argocd-controller").force(),
            &Patch::Apply(&release),
        )
        .await
        .expect("re-apply");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        operator.writes(),
        writes,
        "the operator wrote after a re-apply that changed nothing"
    );
    assert_eq!(
        services
            .get(NAME)
            .await
            .expect("VirtualService")
            .resource_version(),
        route
    );
    assert_eq!(rollout(&ns).await, Some(before));
}

/// Finalising a promoted rollout is a spec edit: the canary's version becomes the stable one,
/// its pods untouched and its traffic unchanged, and the old version's objects are removed.
#[tokio::test]
async fn finalize_prunes_the_old_version_without_moving_traffic() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use k8s_openapi::api::core::v1::ConfigMap;

    let Some(ns) = setup("rollout-finalize").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    apply(
        &ns,
        automatic(&ns, &[(10, "1s", false), (100, "1s", false)], None),
    )
    .await;
    wait_phase(&ns, "Promoted", None, WITHIN).await;
    wait_canary_weight(&ns, NAME, 100, WITHIN).await;
    let deployments = api::<Deployment>(&ns);
    let serving = deployments
        .get("chat-v2")
        .await
        .expect("the canary's Deployment");
    let log = WeightLog::start(&ns, TrafficProvider::Istio);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let done = canary_operator::plugin::finalize::finalize(&crate::stage::target(&ns), NAME)
        .await
        .expect("finalize");
    assert_eq!(done.version, "v2");
    for name in ["chat-v1"] {
        crate::common::lab::wait_gone::<Deployment>(&ns, name).await;
        crate::common::lab::wait_gone::<ConfigMap>(&ns, name).await;
        crate::common::lab::wait_gone::<HorizontalPodAutoscaler>(&ns, name).await;
    }
    crate::common::lab::wait_weights(&ns, NAME, &[("v2", 100)]).await;
    wait_phase(&ns, "Idle", None, WITHIN).await;
    wait_event_noting(&ns, "Finalized", "stable version serves everything").await;
    let after = deployments
        .get("chat-v2")
        .await
        .expect("the new stable's Deployment");
    // The template is what restarts pods; the replica count is the autoscaler's.
    assert_eq!(
        after.spec.template, serving.spec.template,
        "the serving pods' template did not change"
    );
    assert_eq!(
        after
            .labels()
            .get("app.kubernetes.io/component")
            .map(String::as_str),
        Some("stable")
    );
    assert_eq!(log.weights(), [100], "v2 kept 100% throughout");
    let release = api::<canary_operator::api::CanaryRelease>(&ns)
        .get(NAME)
        .await
        .expect("release");
    assert!(release.spec.canary.is_none());
    assert_eq!(release.status.and_then(|s| s.canary_weight), None);
}
