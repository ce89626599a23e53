//! Status: computing it is pure ([`desired_status`]); writing it ([`report`]) happens only when it
//! differs from what the release already shows, so a steady state costs no writes.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::children::Children;
use super::decide::Strategy;
use super::deployment_state::problem;
use super::gateway_workload::{self, INGRESS_GATEWAY, Workload};
use super::rollout_status::status_of;
use super::traffic;
use super::validate::Problems;
use super::validated::{Validated, Version};
use crate::api::{CanaryRelease, CanaryReleaseStatus, VersionStatus};
use crate::claims::Conflict;
use crate::context::{Context, publish};
use crate::rollout::{Outcome, PauseReason, Phase};
use crate::{Error, FIELD_MANAGER, Result, Step};

use super::conditions::{APPLY_FAILED, INVALID_SPEC, OBSERVE_FAILED, OWNERSHIP_CONFLICT, REJECTED};
use super::conditions::{DEGRADED, HOST_CONFLICT, PROGRESSING, READY};

/// Where a release stands after a reconcile.
pub enum Health<'a> {
    /// The spec cannot be acted on; nothing was changed.
    Invalid(&'a Problems),
    /// Objects with our names belong to someone else; nothing was changed.
    Conflict(&'a [String]),
    /// The API server refused an object built from the spec (for example resource limits below requests).
    Rejected(String),
    /// A request failed in a step; it will be retried.
    Failed(Step, String),
    /// Every child is in place: the children as applied, where an automatic rollout stands, and
    /// the older claim for which the release's routes are withheld, if any.
    Converged(
        &'a Validated,
        &'a Children,
        Option<&'a Outcome>,
        Option<&'a Conflict>,
    ),
}

impl Health<'_> {
    /// Reason and message of an unhealthy state.
    fn trouble(&self) -> Option<(&'static str, String)> {
        match self {
            Health::Invalid(problems) => Some((
                INVALID_SPEC,
                format!("the spec cannot be applied: {problems}"),
            )),
            Health::Conflict(messages) => Some((OWNERSHIP_CONFLICT, messages.join("; "))),
            Health::Rejected(message) => Some((
                REJECTED,
                format!("the API server rejected a child object: {message}"),
            )),
            Health::Failed(step, message) => {
                let reason = match step {
                    Step::Observe => OBSERVE_FAILED,
                    Step::Apply | Step::Prune | Step::Status => APPLY_FAILED,
                };
                Some((reason, format!("{message}; retrying")))
            }
            Health::Converged(..) => None,
        }
    }
}

/// Writes the status for `health` and the Gateway's `workload` if it changed, and records a
/// Warning Event when the release newly enters a degraded state (not on every retry, which would
/// flood `kubectl describe`), or its Gateway newly selects no pod.
pub async fn report(
    ctx: &Context,
    release: &CanaryRelease,
    health: &Health<'_>,
    workload: &Workload,
) -> Result<()> {
    let now = Timestamp::now();
    let mut status = desired_status(release, health, now);
    with_workload(&mut status, release, workload, now);
    if release.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<CanaryRelease> =
        Api::namespaced(ctx.client.clone(), &release.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": CanaryRelease::api_version(&()),
        "kind": CanaryRelease::kind(&()),
        "status": status,
    });
    let before = release.resource_version();
    let written = api
        .patch_status(
            &release.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::request(
            Step::Status,
            format!("CanaryRelease {}", release.name_any()),
        ))?;
    let ready = find(&status.conditions, READY);
    tracing::debug!(
        ready = ready.map(|c| c.status.as_str()),
        reason = ready.map(|c| c.reason.as_str()),
        message = ready.map(|c| c.message.as_str()),
        "status written"
    );
    if written.resource_version() != before
        && let Some(uid) = release.uid()
    {
        let key = ObjectRef::from(release);
        let releases = ctx.releases.clone();
        ctx.unseen.hold(
            &uid,
            vec![Box::new(move || {
                releases
                    .get(&key)
                    .is_none_or(|c| c.resource_version() != before)
            })],
        );
    }
    announce(ctx, release, health, &status).await;
    let previous = release
        .status
        .as_ref()
        .and_then(|s| find(&s.conditions, DEGRADED));
    if let Some(now) = find(&status.conditions, DEGRADED)
        && now.status == "True"
        && previous.is_none_or(|p| p.reason != now.reason || p.message != now.message)
    {
        let (reason, message) = (now.reason.as_str(), now.message.clone());
        tracing::warn!(reason, "{message}");
        publish::<CanaryRelease>(ctx, release, EventType::Warning, reason, message, None).await;
    }
    let degraded_now = find(&status.conditions, DEGRADED);
    if previous.is_some_and(|p| p.status == "True" && p.reason == HOST_CONFLICT)
        && degraded_now.is_none_or(|c| c.reason != HOST_CONFLICT)
    {
        publish::<CanaryRelease>(
            ctx,
            release,
            EventType::Normal,
            "HostFree",
            "no older claim overlaps the release's hosts any more: its route is in place again"
                .to_owned(),
            None,
        )
        .await;
    }
    let was = release
        .status
        .as_ref()
        .and_then(|s| find(&s.conditions, INGRESS_GATEWAY));
    if let Some(gateway) = find(&status.conditions, INGRESS_GATEWAY)
        && gateway.status == "False"
        && was.is_none_or(|w| w.status != "False")
    {
        tracing::warn!(reason = "NoGatewayWorkload", "{}", gateway.message);
        let message = gateway.message.clone();
        publish::<CanaryRelease>(
            ctx,
            release,
            EventType::Warning,
            "NoGatewayWorkload",
            message,
            None,
        )
        .await;
    }
    Ok(())
}

/// Adds the `IngressGateway` condition for `workload` (keeping the one shown when nothing new
/// is known), after the conditions of [`desired_status`].
pub fn with_workload(
    status: &mut CanaryReleaseStatus,
    release: &CanaryRelease,
    workload: &Workload,
    now: Timestamp,
) {
    let previous = release
        .status
        .as_ref()
        .and_then(|s| find(&s.conditions, INGRESS_GATEWAY))
        .cloned();
    status.conditions.retain(|c| c.type_ != INGRESS_GATEWAY);
    let condition = match (gateway_workload::condition(workload), workload) {
        (Some((ok, reason, message)), _) => {
            let state = if ok { "True" } else { "False" }.to_owned();
            let last_transition_time = match &previous {
                Some(old) if old.status == state => old.last_transition_time.clone(),
                _ => Time(now),
            };
            Condition {
                type_: INGRESS_GATEWAY.to_owned(),
                status: state,
                reason: reason.to_owned(),
                message,
                observed_generation: release.meta().generation,
                last_transition_time,
            }
        }
        (None, Workload::Unknown) => match previous {
            Some(previous) => previous,
            None => return,
        },
        (None, _) => return,
    };
    status.conditions.push(condition);
}

/// Normal and Warning Events for what changed: each rollout transition, and in manual mode each
/// weight the route now carries, so `kubectl describe` tells the story of the release.
async fn announce(
    ctx: &Context,
    release: &CanaryRelease,
    health: &Health<'_>,
    status: &CanaryReleaseStatus,
) {
    let Health::Converged(validated, _, rollout, _) = health else {
        return;
    };
    if let Some(outcome) = rollout {
        for note in &outcome.notes {
            let kind = if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            publish::<CanaryRelease>(ctx, release, kind, note.reason, note.message.clone(), None)
                .await;
        }
        return;
    }
    let before = release.status.as_ref().and_then(|s| s.canary_weight);
    if let (Some(before), Some(now)) = (before, status.canary_weight)
        && before != now
    {
        let message = format!(
            "{}; the canary had {before}%",
            validated.describe_split(100 - now, now)
        );
        publish::<CanaryRelease>(
            ctx,
            release,
            EventType::Normal,
            "WeightChanged",
            message,
            None,
        )
        .await;
    }
}

/// The status a release should show. Conditions keep their `lastTransitionTime` unless their
/// status flips, as the API conventions ask.
pub fn desired_status(
    release: &CanaryRelease,
    health: &Health<'_>,
    now: Timestamp,
) -> CanaryReleaseStatus {
    let previous = release.status.clone().unwrap_or_default();
    let generation = release.meta().generation;
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" }.to_owned();
        let last_transition_time = match find(&previous.conditions, type_) {
            Some(old) if old.status == status => old.last_transition_time.clone(),
            _ => Time(now),
        };
        Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time,
        }
    };

    let mut status = CanaryReleaseStatus {
        observed_generation: generation,
        ..previous.clone()
    };
    if let Some((reason, message)) = health.trouble() {
        // What is deployed has not changed, so the weights and versions shown stay as they were.
        status.conditions = vec![
            condition(READY, false, reason, message.clone()),
            condition(PROGRESSING, false, reason, message.clone()),
            condition(DEGRADED, true, reason, message),
        ];
        return status;
    }
    let Health::Converged(validated, applied, rollout, conflict) = health else {
        return status;
    };
    status.rollout = match (&validated.strategy, rollout) {
        (Strategy::Automatic(automatic), Some(outcome)) => {
            Some(status_of(&outcome.state, &automatic.plan))
        }
        _ => None,
    };
    let versions: Vec<(VersionStatus, Option<String>)> = validated
        .versions()
        .iter()
        .map(|version| version_status(version, &applied.deployments))
        .collect();
    // What the route carries, read back: the split users see is the one applied, not the one meant.
    let split = traffic::provider(validated).split(validated, applied);
    status.stable_weight = split.stable;
    status.canary_weight = split.canary;
    let waiting: Vec<String> = versions
        .iter()
        .filter_map(|(_, waiting)| waiting.clone())
        .collect();
    let split = validated.describe_split(
        status.stable_weight.unwrap_or_default(),
        status.canary_weight.unwrap_or_default(),
    );
    let refusal = match (
        conflict,
        traffic::provider(validated).acceptance(validated, applied),
    ) {
        (Some(conflict), _) => Some((
            HOST_CONFLICT.to_owned(),
            format!(
                "{conflict}: this release's route is withheld so that it takes no traffic from \
                 it (its versions stay deployed); give one of the two another host, or delete \
                 the other, and the route is put in place again by itself"
            ),
            "waiting for the host to be free".to_owned(),
        )),
        (None, traffic::Acceptance::Accepted) => None,
        (None, traffic::Acceptance::Refused { reason, message }) => Some((
            reason,
            message,
            "waiting for the route to be accepted".to_owned(),
        )),
    };
    let refused = refusal.is_some();
    status.conditions = if let Some((reason, message, waiting_for)) = refusal {
        // Everything is applied, and the route is not taken (or not there): traffic does not
        // follow the split.
        vec![
            condition(READY, false, &reason, message.clone()),
            condition(PROGRESSING, false, &reason, waiting_for),
            condition(DEGRADED, true, &reason, message),
        ]
    } else if waiting.is_empty() {
        vec![
            condition(
                READY,
                true,
                "Available",
                format!("all objects in place and both versions available; traffic: {split}"),
            ),
            condition(
                PROGRESSING,
                false,
                "RolloutComplete",
                "both versions are rolled out".to_owned(),
            ),
            condition(
                DEGRADED,
                false,
                "AsExpected",
                "no problems found".to_owned(),
            ),
        ]
    } else {
        let message = format!("waiting for rollout: {}", waiting.join(", "));
        vec![
            condition(READY, false, "RollingOut", message.clone()),
            condition(PROGRESSING, true, "RollingOut", message),
            condition(
                DEGRADED,
                false,
                "AsExpected",
                "no problems found".to_owned(),
            ),
        ]
    };
    // An automatic rollout's own progress, when the versions themselves are rolled out, or when
    // it gave up waiting for them.
    if let (Some(shown), Some(outcome)) = (&status.rollout, rollout)
        && (waiting.is_empty() || outcome.state.pause_reason == Some(PauseReason::CanaryNotReady))
        && !refused
    {
        let (progressing, reason) = match outcome.state.phase {
            Phase::Progressing => (true, "RolloutProgressing"),
            Phase::Paused => (false, "RolloutPaused"),
            Phase::Promoted => (false, "RolloutPromoted"),
            Phase::RolledBack => (false, "RolledBack"),
            Phase::Aborted => (false, "RolloutAborted"),
            Phase::Idle => (false, "RolloutComplete"),
        };
        let message = match &shown.pause_reason {
            Some(why) => format!("{why}: {}", shown.message),
            None => shown.message.clone(),
        };
        status.conditions.retain(|c| c.type_ != PROGRESSING);
        status
            .conditions
            .insert(1, condition(PROGRESSING, progressing, reason, message));
    }
    let mut versions = versions.into_iter().map(|(v, _)| v);
    status.stable = versions.next();
    status.canary = versions.next();
    status
}

fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// A version's replica counts, and what its Deployment is still waiting for, if anything: the
/// deployment controller to see its latest spec, or replicas to be updated and ready (no old
/// ones left). "0/0 replicas ready" said nothing while a new Deployment was not yet seen.
fn version_status(
    version: &Version,
    deployments: &[Deployment],
) -> (VersionStatus, Option<String>) {
    let deployment = deployments
        .iter()
        .find(|d| d.name_any() == version.object_name);
    let desired = deployment.and_then(|d| d.spec.replicas).unwrap_or(1);
    let status = deployment.and_then(|d| d.status.as_ref());
    let ready = status.and_then(|s| s.ready_replicas).unwrap_or(0);
    let observed = match (deployment, status) {
        (Some(d), Some(s)) => s.observed_generation >= d.metadata.generation,
        _ => false,
    };
    let rolled_out = status.is_some_and(|s| {
        s.updated_replicas.unwrap_or(0) == desired
            && s.replicas.unwrap_or(0) == desired
            && ready >= desired
    });
    let waiting = if !observed {
        Some(format!(
            "{} is not yet seen by the deployment controller",
            version.name
        ))
    } else if !rolled_out {
        let why = deployment
            .and_then(problem)
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        Some(format!(
            "{} has {ready}/{desired} replicas ready{why}",
            version.name
        ))
    } else {
        None
    };
    (
        VersionStatus {
            name: version.name.clone(),
            model: version.model.clone(),
            image: version.image.clone(),
            desired_replicas: desired,
            ready_replicas: ready,
        },
        waiting,
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentStatus;

    use super::*;
    use crate::reconcile::testing::built;
    use crate::reconcile::testing::{lab_release, lab_validated};
    use crate::reconcile::validate::Problem;

    /// The lab's children as applied, with the Deployments' ready replicas as given.
    fn applied(ready: [i32; 2]) -> Children {
        let mut children = built(&lab_validated());
        children.deployments = children
            .deployments
            .into_iter()
            .zip(ready)
            .map(|(mut d, ready)| {
                d.metadata.generation = Some(1);
                d.spec.replicas = Some(2);
                d.status = Some(DeploymentStatus {
                    observed_generation: Some(1),
                    replicas: Some(2),
                    updated_replicas: Some(2),
                    ready_replicas: Some(ready),
                    ..DeploymentStatus::default()
                });
                d
            })
            .collect();
        children
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap_or_else(|e| panic!("{e}"))
    }

    fn get<'a>(status: &'a CanaryReleaseStatus, type_: &str) -> &'a Condition {
        find(&status.conditions, type_).unwrap_or_else(|| panic!("no {type_} condition"))
    }

    /// A Deployment the deployment controller has not seen yet is named as such: with no status,
    /// or with a status of an older generation (its counts are of the old template).
    #[test]
    fn a_deployment_not_yet_seen_is_named_as_such() {
        let v = lab_validated();
        let release = lab_release();
        let mut children = applied([2, 2]);
        children.deployments[1].status = None;
        let unseen = desired_status(
            &release,
            &Health::Converged(&v, &children, None, None),
            at(0),
        );
        assert_eq!(
            get(&unseen, PROGRESSING).message,
            "waiting for rollout: v2 is not yet seen by the deployment controller"
        );
        let mut children = applied([2, 2]);
        children.deployments[0].metadata.generation = Some(2);
        let older = desired_status(
            &release,
            &Health::Converged(&v, &children, None, None),
            at(0),
        );
        assert_eq!(
            get(&older, PROGRESSING).message,
            "waiting for rollout: v1 is not yet seen by the deployment controller"
        );
        assert_eq!(get(&older, READY).status, "False");
    }

    /// A release routed by the Gateway API, with both versions available: Ready only once its
    /// Gateway has accepted the route; otherwise not Ready and Degraded, for the Gateway's reason.
    #[test]
    fn a_route_its_gateway_refuses_is_not_ready_for_the_gateways_reason() {
        use crate::api::gateway_api::{ParentReference, RouteParentStatus, RouteStatus};
        let v = crate::reconcile::testing::gateway_api_validated();
        let release = lab_release();
        let mut children = applied([2, 2]);
        let mut routed = built(&v);
        children.services = std::mem::take(&mut routed.services);
        children.http_routes = std::mem::take(&mut routed.http_routes);
        let condition = |type_: &str, status: &str, reason: &str| Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: format!("{reason} said"),
            observed_generation: Some(1),
            last_transition_time: Time(at(0)),
        };
        let with_parent = |accepted: &str, reason: &str| {
            let mut children = children.clone();
            children.http_routes[0].status = Some(RouteStatus {
                parents: vec![RouteParentStatus {
                    parent_ref: ParentReference {
                        name: "public".to_owned(),
                        namespace: Some("istio-ingress".to_owned()),
                        section_name: Some("http".to_owned()),
                        ..ParentReference::default()
                    },
                    controller_name: "istio.io/gateway-controller".to_owned(),
                    conditions: vec![
                        condition("Accepted", accepted, reason),
                        condition("ResolvedRefs", "True", "ResolvedRefs"),
                    ],
                }],
            });
            desired_status(
                &release,
                &Health::Converged(&v, &children, None, None),
                at(1),
            )
        };
        let refused = with_parent("False", "NotAllowedByListeners");
        assert_eq!(
            (
                get(&refused, READY).status.as_str(),
                get(&refused, READY).reason.as_str()
            ),
            ("False", "NotAllowedByListeners")
        );
        assert_eq!(get(&refused, DEGRADED).status, "True");
        assert!(
            get(&refused, READY)
                .message
                .contains("NotAllowedByListeners said"),
            "{:?}",
            get(&refused, READY)
        );
        let accepted = with_parent("True", "Accepted");
        assert_eq!(get(&accepted, READY).reason, "Available");
        assert_eq!(
            accepted.canary_weight,
            Some(25),
            "read back from the HTTPRoute"
        );
    }

    #[test]
    fn rolling_out_then_ready() {
        let v = lab_validated();
        let mut release = lab_release();
        let rolling = desired_status(
            &release,
            &Health::Converged(&v, &applied([2, 1]), None, None),
            at(0),
        );
        assert_eq!(rolling.observed_generation, Some(1));
        assert_eq!(
            (rolling.stable_weight, rolling.canary_weight),
            (Some(75), Some(25))
        );
        assert_eq!(get(&rolling, READY).status, "False");
        assert_eq!(get(&rolling, PROGRESSING).status, "True");
        assert_eq!(
            get(&rolling, PROGRESSING).message,
            "waiting for rollout: v2 has 1/2 replicas ready"
        );
        assert_eq!(get(&rolling, DEGRADED).status, "False");
        let canary = rolling.canary.clone().unwrap_or_default();
        assert_eq!(
            (
                canary.model.as_str(),
                canary.desired_replicas,
                canary.ready_replicas
            ),
            ("gpt-4o", 2, 1)
        );

        release.status = Some(rolling.clone());
        let ready = desired_status(
            &release,
            &Health::Converged(&v, &applied([2, 2]), None, None),
            at(60),
        );
        assert_eq!(get(&ready, READY).status, "True");
        assert_eq!(get(&ready, READY).reason, "Available");
        assert!(
            get(&ready, READY)
                .message
                .contains("75% to v1 (gpt-4.1), 25% to v2 (gpt-4o)")
        );
        assert_eq!(
            get(&ready, READY).last_transition_time,
            Time(at(60)),
            "Ready flipped"
        );
        assert_eq!(
            get(&ready, DEGRADED).last_transition_time,
            Time(at(0)),
            "Degraded did not flip"
        );

        release.status = Some(ready.clone());
        assert_eq!(
            desired_status(
                &release,
                &Health::Converged(&v, &applied([2, 2]), None, None),
                at(120)
            ),
            ready,
            "nothing changed, so the status is identical and will not be written"
        );
    }

    #[test]
    fn trouble_keeps_what_is_deployed_and_says_why() {
        let v = lab_validated();
        let mut release = lab_release();
        release.status = Some(desired_status(
            &release,
            &Health::Converged(&v, &applied([2, 2]), None, None),
            at(0),
        ));
        let problems = Problems(vec![Problem {
            field: "spec.config.AZURE_API_KEY".into(),
            message: "looks like a credential".into(),
        }]);
        let invalid = desired_status(&release, &Health::Invalid(&problems), at(30));
        assert_eq!(get(&invalid, READY).reason, "InvalidSpec");
        assert_eq!(get(&invalid, DEGRADED).status, "True");
        assert_eq!(
            get(&invalid, DEGRADED).message,
            "the spec cannot be applied: spec.config.AZURE_API_KEY: looks like a credential"
        );
        assert_eq!(
            invalid.canary_weight,
            Some(25),
            "the traffic split in place is still reported"
        );

        let conflicts = vec!["ConfigMap azureopenai/azureopenaichat-v1 already exists".to_owned()];
        let conflict = desired_status(&release, &Health::Conflict(&conflicts), at(30));
        assert_eq!(get(&conflict, READY).reason, "OwnershipConflict");
        assert_eq!(get(&conflict, READY).message, conflicts[0]);
    }

    /// An automatic release: its rollout's state goes to `status.rollout`, and `Progressing` says
    /// where the rollout stands once the versions themselves are rolled out.
    #[test]
    fn an_automatic_release_shows_its_rollout() {
        use std::time::{Duration, SystemTime};

        use crate::reconcile::decide::{Automatic, Strategy};
        use crate::rollout::{self, Capacity, Inputs, Plan, Step};

        let mut v = lab_validated();
        let plan = Plan {
            steps: vec![
                Step {
                    weight: 10,
                    duration: Duration::from_secs(60),
                    approval: true,
                },
                Step {
                    weight: 100,
                    duration: Duration::from_secs(60),
                    approval: false,
                },
            ],
            analysis: None,
            deadline: crate::rollout::Deadline::default(),
        };
        v.strategy = Strategy::Automatic(Box::new(Automatic {
            plan: plan.clone(),
            revision: Some("abc".to_owned()),
        }));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let inputs = |now| Inputs {
            now,
            revision: "abc",
            request: None,
            canary_ready: 2,
            canary_problem: None,
            capacity: Capacity::Fixed(1),
            measurement: None,
        };
        let started = rollout::advance(&plan, None, &inputs(t0));
        let waiting = rollout::advance(
            &plan,
            Some(&started.state),
            &inputs(t0 + Duration::from_secs(60)),
        );
        let release = lab_release();
        let progressing = desired_status(
            &release,
            &Health::Converged(&v, &applied([2, 2]), Some(&started), None),
            at(0),
        );
        let shown = progressing
            .rollout
            .clone()
            .unwrap_or_else(|| panic!("no rollout status"));
        assert_eq!(
            (shown.phase.as_str(), shown.step, shown.steps, shown.weight),
            ("Progressing", 1, 2, 10)
        );
        assert_eq!(get(&progressing, PROGRESSING).status, "True");
        assert_eq!(get(&progressing, PROGRESSING).reason, "RolloutProgressing");
        assert_eq!(
            get(&progressing, READY).status,
            "True",
            "every object is in place"
        );
        let paused = desired_status(
            &release,
            &Health::Converged(&v, &applied([2, 2]), Some(&waiting), None),
            at(60),
        );
        assert_eq!(
            paused
                .rollout
                .as_ref()
                .and_then(|r| r.pause_reason.as_deref()),
            Some("AwaitingApproval")
        );
        let condition = get(&paused, PROGRESSING);
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("False", "RolloutPaused")
        );
        assert!(
            condition.message.starts_with("AwaitingApproval: "),
            "{}",
            condition.message
        );
        let manual = desired_status(
            &release,
            &Health::Converged(&lab_validated(), &applied([2, 2]), None, None),
            at(0),
        );
        assert_eq!(manual.rollout, None, "manual mode has no rollout status");
    }

    /// The `IngressGateway` condition: set from what was found, kept while nothing new is known,
    /// its transition time moved only when its status flips, and gone without a created Gateway.
    #[test]
    fn the_gateway_condition_follows_what_was_found() {
        let selector = "istio=aks-istio-ingressgateway-external".to_owned();
        let missing = Workload::Missing {
            selector: selector.clone(),
        };
        let found = Workload::Found {
            selector,
            pod: "aks-istio-ingress/gw-0".to_owned(),
        };
        let mut release = lab_release();
        let health = |release: &CanaryRelease, workload: &Workload, t: i64| {
            let v = lab_validated();
            let children = applied([2, 2]);
            let mut status = desired_status(
                release,
                &Health::Converged(&v, &children, None, None),
                at(t),
            );
            with_workload(&mut status, release, workload, at(t));
            status
        };
        let table = [
            (&missing, 0, Some(("False", "NoWorkload", 0))),
            (&missing, 10, Some(("False", "NoWorkload", 0))),
            (&Workload::Unknown, 20, Some(("False", "NoWorkload", 0))),
            (&found, 30, Some(("True", "WorkloadFound", 30))),
            (&Workload::NoGateway, 40, None),
        ];
        for (workload, t, expected) in table {
            let status = health(&release, workload, t);
            let got = find(&status.conditions, INGRESS_GATEWAY).map(|c| {
                (
                    c.status.as_str(),
                    c.reason.as_str(),
                    c.last_transition_time.0.as_second() - at(0).as_second(),
                )
            });
            assert_eq!(got, expected, "{workload:?} at {t}");
            assert_eq!(
                find(&status.conditions, READY).map(|c| c.status.as_str()),
                Some("True"),
                "Ready is about the objects and versions"
            );
            release.status = Some(status);
        }
    }

    #[test]
    fn a_withheld_release_says_who_holds_its_host() {
        let release = lab_release();
        let v = lab_validated();
        let conflict = Conflict {
            holder: crate::claims::Key::new(
                crate::claims::Kind::CanaryRelease,
                "azureopenai",
                "first",
            ),
            host: "*".to_owned(),
            place: "the ingress pods istio=aks-istio-ingressgateway-external, port 80".to_owned(),
        };
        let mut withheld = applied([2, 2]);
        withheld.virtual_services.clear();
        withheld.gateways.clear();
        let status = desired_status(
            &release,
            &Health::Converged(&v, &withheld, None, Some(&conflict)),
            at(0),
        );
        let ready = find(&status.conditions, READY);
        assert_eq!(
            ready.map(|c| (c.status.as_str(), c.reason.as_str())),
            Some(("False", HOST_CONFLICT))
        );
        let degraded = find(&status.conditions, DEGRADED);
        assert_eq!(degraded.map(|c| c.status.as_str()), Some("True"));
        let message = degraded.map(|c| c.message.clone()).unwrap_or_default();
        assert!(
            message.contains("CanaryRelease azureopenai/first"),
            "{message}"
        );
        assert!(message.contains("withheld"), "{message}");
        assert_eq!(
            (status.stable_weight, status.canary_weight),
            (None, None),
            "no route, no split"
        );
        assert_eq!(
            status.stable.map(|s| s.ready_replicas),
            Some(2),
            "the versions are shown"
        );
    }
}
