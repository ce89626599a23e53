//! What the operator last did and saw, as `kubectl get` and `kubectl describe` show it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// What the operator last did and saw.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryReleaseStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Percent of traffic the route (VirtualService or HTTPRoute) sends to the stable version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_weight: Option<i32>,

    /// Percent of traffic the route (VirtualService or HTTPRoute) sends to the canary version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i32>,

    /// The stable version as deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<VersionStatus>,

    /// The canary version as deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<VersionStatus>,

    /// Where an automatic rollout stands; absent in manual mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,

    /// `Ready`, `Progressing` and `Degraded`, per the Kubernetes API conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One version as deployed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    /// Version name.
    pub name: String,
    /// Model the version calls.
    pub model: String,
    /// Image the version runs.
    pub image: String,
    /// Replicas the Deployment asks for.
    pub desired_replicas: i32,
    /// Replicas that are ready.
    pub ready_replicas: i32,
}

/// An automatic rollout's state. All of it lives here, so an operator restarted mid-step goes on
/// with the same step and the same start time.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Idle, Progressing, Paused, Promoted (the canary serves 100 %), RolledBack (a check failed
    /// too often: canary at 0 %) or Aborted (by request: canary at 0 %).
    pub phase: String,

    /// Why a Paused rollout waits: Requested (`kubectl canary pause`; `resume` continues),
    /// AwaitingApproval (`promote` continues), NoData (too many inconclusive measurements),
    /// MetricsUnavailable (queries fail; resumes by itself when they answer), RateLimited (the
    /// rate-limited check failed: stepped back one step; `resume` continues), SteppedBack
    /// (another StepBack check failed; `resume` continues) or CanaryNotReady (the step's replicas
    /// were not ready within `spec.strategy.progressDeadline`; goes on by itself once they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_reason: Option<String>,

    /// Where the rollout stands, in a sentence.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,

    /// Hash of the canary's effective spec (image, model, config, resources) being rolled out.
    pub revision: String,

    /// The last revision rolled back; it is not rolled out again until `kubectl canary retry` or
    /// a change to the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_revision: Option<String>,

    /// Current step, counted from 1.
    pub step: i32,

    /// Number of steps.
    pub steps: i32,

    /// When the current step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_start_time: Option<Time>,

    /// When the current step's weight was applied (its duration and warmup count from here);
    /// unset while the canary's replicas are awaited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_applied_time: Option<Time>,

    /// Percent of traffic the rollout gives the canary now.
    pub weight: i32,

    /// `kubectl canary promote --full` is in progress: 100 % once the replicas are ready.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_promotion: bool,

    /// When the checks were last measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_measurement_time: Option<Time>,

    /// Verdict of the last measurement in this step: Pass, Fail, Inconclusive or Error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<String>,

    /// Failed measurements in this step.
    #[serde(default)]
    pub failures: i32,

    /// Inconclusive measurements in this step.
    #[serde(default)]
    pub inconclusive: i32,

    /// Query errors in a row.
    #[serde(default)]
    pub consecutive_errors: i32,

    /// The last `canary.dev/request` acted on; the same request is not acted on twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,

    /// The last `canary.dev/request` refused because its time stamp was more than 5 minutes ahead
    /// of the operator's clock (a machine with a wrong clock): it is not acted on, not even once
    /// the clock catches up with its stamp, and it does not count as the last request, so
    /// requests made after it with a right clock are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_request: Option<String>,

    /// Each check as last measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub checks: Vec<CheckStatus>,
}

/// One check as last measured, with its counts in the current step.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    pub name: String,
    /// Pass, Fail, Inconclusive or Error.
    pub verdict: String,
    /// The canary's value (absent when there was none, or NaN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The stable's value, when the check compares with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_value: Option<f64>,
    /// Both values, the bound and the sample sizes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The bound the canary is held to, e.g. `≤ 2% and ≤ stable + 1 point`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bound: String,
    /// Requests behind the canary's value in the window, when the check counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_size: Option<i64>,
    /// Requests behind the stable's value in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_sample_size: Option<i64>,
    /// Rollback, StepBack or Warn.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// The message of the last measurement that compared the canary with the stable, kept once
    /// the canary has 100 % and the stable is no longer measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_comparison: Option<String>,
    #[serde(default)]
    pub passes: i32,
    #[serde(default)]
    pub failures: i32,
    #[serde(default)]
    pub inconclusive: i32,
    #[serde(default)]
    pub errors: i32,
}
