//! The automatic canary, decided without any Kubernetes type: the plan a release declares (steps
//! and analysis), the state a rollout is in (kept in the release's status, so an operator restarted
//! mid-step resumes it), and the one function that moves it on ([`machine::advance`]).
//!
//! Nothing here does I/O or imports `kube`: the observe step brings the time, the canary's ready
//! replicas, a user's request and the measured values; the status step writes the state back.

pub mod analysis;
pub mod builtin;
pub mod clock;
pub mod machine;
mod requests;
pub mod state;
pub mod template;
mod transitions;
mod verdicts;

use std::time::Duration;

pub use analysis::{Bounds, Comparison, Judged, Price, Rule, Sample, Unit, Verdict};
pub use builtin::Builtin;
pub use machine::{advance, idle, measurement_due};
pub use state::{
    Capacity, CheckState, Inputs, Measurement, Note, Outcome, PauseReason, Phase, State, Verb,
};

/// How long a step may wait for the canary's replicas unless the release says otherwise
/// (`strategy.progressDeadline`): the Deployment controller's own default, so both give up on a
/// canary that gets no pods at about the same time.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

/// Shortest analysis interval the operator accepts unless told otherwise (`--min-analysis-interval`):
/// each interval costs a query per check and version, and a status write, per rolling release.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(10);

/// What a release in automatic mode declares.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Weights strictly increasing, the last one 100 (checked by validate).
    pub steps: Vec<Step>,
    /// Without it, steps advance on time (and approvals) alone.
    pub analysis: Option<Analysis>,
    /// How long a step may wait for the canary's replicas, and what then.
    pub deadline: Deadline,
}

/// The progress deadline: how long a step may wait for the replicas its weight needs before the
/// rollout stops waiting in silence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    pub after: Duration,
    /// Abort (canary to 0 %, `retry` to start again) instead of pausing as CanaryNotReady, which
    /// goes on by itself once the replicas are ready.
    pub abort: bool,
}

impl Default for Deadline {
    fn default() -> Deadline {
        Deadline {
            after: DEFAULT_PROGRESS_DEADLINE,
            abort: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub weight: i32,
    pub duration: Duration,
    /// Hold after the step until a person promotes.
    pub approval: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    /// Base URL of the Prometheus HTTP API.
    pub address: String,
    pub timeout: Duration,
    pub interval: Duration,
    /// No measurement this long after a weight change: the window would still hold the old split.
    pub warmup: Duration,
    /// Failed measurements tolerated per step; one more rolls back.
    pub failure_limit: u32,
    /// Inconclusive measurements per step that pause the rollout (NoData).
    pub inconclusive_limit: u32,
    /// Query errors in a row that pause the rollout (MetricsUnavailable).
    pub error_limit: u32,
    pub checks: Vec<Check>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub name: String,
    /// How its number is found: PromQL with placeholders ([`template`]).
    pub rule: Rule,
    pub bounds: Bounds,
    pub action: Action,
    /// The built-in check it was made from, if any (a failing rate-limited check pauses as
    /// RateLimited).
    pub builtin: Option<Builtin>,
}

impl Check {
    /// Whether the stable version is measured too, with the same queries and window, when the
    /// canary has `canary_weight` percent: not at 100 %, where the stable answers nothing (and a
    /// last step would never pass); [`analysis::judge`] then says the stable was not compared.
    pub fn compares_to_stable_at(&self, canary_weight: i32) -> bool {
        self.bounds.stable.is_some() && canary_weight < 100
    }
}

/// What a check's failure (beyond `failureLimit`) does to the rollout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Nothing but an Event and the status: the check informs, it does not decide.
    Warn,
    /// Back to the previous step's weight, paused as RateLimited until `resume`.
    StepBack,
    /// Canary to 0 %, its revision recorded as failed.
    #[default]
    Rollback,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Rollback => "Rollback",
            Action::StepBack => "StepBack",
            Action::Warn => "Warn",
        }
    }
}
