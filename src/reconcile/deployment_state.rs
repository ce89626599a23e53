//! What a version's Deployment, as cached, says about its pods: how many of them run the template
//! the spec asks for and are ready, and why there are none when the Deployment knows why.
//!
//! A rollout's weight must be judged on the pods of the revision it rolls out. Right after a
//! canary edit the cache still holds the previous template, and during the Deployment's own
//! rolling update its ready count mixes old pods with new ones: counting either would send a
//! step's share to the old model.

use k8s_openapi::api::apps::v1::Deployment;

use crate::cache::says_pods_are_missing;
use crate::labels;

/// Ready replicas of the template whose applied hash ([`labels::APPLIED_HASH`]) is
/// `applied_hash`: none until the cached Deployment carries it and the deployment controller has
/// seen it. While old pods remain, every one of them is assumed ready (the Deployment's status does
/// not say which ready pods are new), so the count never overstates the new pods.
pub fn ready_of_template(deployment: &Deployment, applied_hash: &str) -> i32 {
    let carries = deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::APPLIED_HASH))
        .is_some_and(|hash| hash == applied_hash);
    let Some(status) = deployment.status.as_ref() else {
        return 0;
    };
    let seen = status.observed_generation.is_some()
        && status.observed_generation >= deployment.metadata.generation;
    if !(carries && seen) {
        return 0;
    }
    let updated = status.updated_replicas.unwrap_or(0).max(0);
    let old = (status.replicas.unwrap_or(0) - updated).max(0);
    (status.ready_replicas.unwrap_or(0) - old).clamp(0, updated)
}

/// The Deployment's own account of why it lacks pods, in its words: a pod it could not create
/// (`ReplicaFailure`, e.g. an exceeded quota) or a rollout past its own deadline (`Progressing`
/// false, `ProgressDeadlineExceeded`). `None` when it reports neither.
pub fn problem(deployment: &Deployment) -> Option<String> {
    let said: Vec<String> = deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| says_pods_are_missing(c.type_.as_deref(), c.status.as_deref()))
        .map(|c| {
            let reason = c
                .reason
                .as_deref()
                .or(c.type_.as_deref())
                .unwrap_or_default();
            match c.message.as_deref() {
                Some(message) if !message.is_empty() => format!("{reason}: {message}"),
                _ => reason.to_owned(),
            }
        })
        .collect();
    (!said.is_empty()).then(|| said.join("; "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(hash: &str, generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {
                "name": "chat-v2",
                "generation": generation,
                "annotations": {"canary.dev/applied-hash": hash},
            },
            "spec": {"selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Each case: the cached Deployment's hash, generation and status, and the ready replicas of
    /// the template with hash "new".
    #[test]
    fn only_ready_pods_of_the_asked_template_count() {
        let cases = [
            (
                "rolled out",
                deployment(
                    "new",
                    2,
                    json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}),
                ),
                2,
            ),
            (
                "the cache still holds the previous template",
                deployment(
                    "old",
                    1,
                    json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}),
                ),
                0,
            ),
            (
                "not yet seen by the deployment controller",
                deployment(
                    "new",
                    2,
                    json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}),
                ),
                0,
            ),
            (
                "a new pod starting next to a ready old one",
                deployment(
                    "new",
                    2,
                    json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 1}),
                ),
                0,
            ),
            (
                "a new pod ready, the old one not yet gone",
                deployment(
                    "new",
                    2,
                    json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 2}),
                ),
                1,
            ),
            (
                "no status yet",
                serde_json::from_value(json!({
                    "metadata": {"name": "chat-v2", "annotations": {"canary.dev/applied-hash": "new"}},
                    "spec": {"selector": {}, "template": {}},
                }))
                .unwrap_or_else(|e| panic!("{e}")),
                0,
            ),
        ];
        for (what, d, ready) in cases {
            assert_eq!(ready_of_template(&d, "new"), ready, "{what}");
        }
    }

    #[test]
    fn the_deployments_own_reason_is_quoted() {
        let condition = |type_: &str, status: &str, reason: &str, message: &str| json!({"type": type_, "status": status, "reason": reason, "message": message});
        let cases = [
            (vec![], None),
            (
                vec![condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    "progressing",
                )],
                None,
            ),
            (
                vec![condition(
                    "ReplicaFailure",
                    "True",
                    "FailedCreate",
                    "pods \"chat-v2-x\" is forbidden: exceeded quota: pods",
                )],
                Some("FailedCreate: pods \"chat-v2-x\" is forbidden: exceeded quota: pods"),
            ),
            (
                vec![
                    condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        "ReplicaSet \"chat-v2-x\" has timed out progressing.",
                    ),
                    condition("ReplicaFailure", "True", "FailedCreate", ""),
                ],
                Some(
                    "ProgressDeadlineExceeded: ReplicaSet \"chat-v2-x\" has timed out progressing.; FailedCreate",
                ),
            ),
        ];
        for (conditions, said) in cases {
            let d = deployment("h", 1, json!({"conditions": conditions}));
            assert_eq!(problem(&d).as_deref(), said, "{conditions:?}");
        }
    }
}
