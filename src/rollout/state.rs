//! What a rollout is and says: its phase, the state the release's status keeps, what each look
//! brings ([`Inputs`]) and what it decides ([`Outcome`]).

use std::time::SystemTime;

use super::analysis::{Judged, Verdict};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Nothing to roll out.
    Idle,
    Progressing,
    /// Weight held; see [`PauseReason`].
    Paused,
    /// The canary serves 100 %. Finalising (making it the stable) is a spec edit.
    Promoted,
    /// A check failed more often than tolerated: canary at 0 %, its revision recorded as failed.
    RolledBack,
    /// Stopped by request: canary at 0 %.
    Aborted,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Idle,
        Phase::Progressing,
        Phase::Paused,
        Phase::Promoted,
        Phase::RolledBack,
        Phase::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "Idle",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Promoted => "Promoted",
            Phase::RolledBack => "RolledBack",
            Phase::Aborted => "Aborted",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseReason {
    /// `kubectl canary pause`; only `resume` (or `promote`, `abort`) ends it.
    Requested,
    /// An approval step's duration passed and its checks passed; `promote` continues.
    AwaitingApproval,
    /// Too many inconclusive measurements; ends by itself on the next conclusive one, or `resume`.
    NoData,
    /// Too many query errors in a row; ends by itself when queries answer again.
    MetricsUnavailable,
    /// The rate-limited check failed: stepped back one step, held until `resume` (throttling is
    /// the provider's quota, which a person raises or accepts).
    RateLimited,
    /// Another check whose action is StepBack failed: stepped back one step, held until `resume`.
    SteppedBack,
    /// The step's replicas were not ready within the progress deadline; ends by itself once they
    /// are, or `resume` (which waits a full deadline again).
    CanaryNotReady,
}

impl PauseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::Requested => "Requested",
            PauseReason::AwaitingApproval => "AwaitingApproval",
            PauseReason::NoData => "NoData",
            PauseReason::MetricsUnavailable => "MetricsUnavailable",
            PauseReason::RateLimited => "RateLimited",
            PauseReason::SteppedBack => "SteppedBack",
            PauseReason::CanaryNotReady => "CanaryNotReady",
        }
    }

    pub fn parse(text: &str) -> Option<PauseReason> {
        [
            PauseReason::Requested,
            PauseReason::AwaitingApproval,
            PauseReason::NoData,
            PauseReason::MetricsUnavailable,
            PauseReason::RateLimited,
            PauseReason::SteppedBack,
            PauseReason::CanaryNotReady,
        ]
        .into_iter()
        .find(|p| p.as_str() == text)
    }
}

/// What a user can ask of a rollout without editing the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Pause,
    Resume,
    /// End the current step now (or the approval wait) and go to the next.
    Promote,
    /// Go to 100 % once the canary has the replicas for it.
    PromoteFull,
    Abort,
    /// Roll out a rolled-back or aborted revision again, from the first step.
    Retry,
}

impl Verb {
    pub const ALL: [Verb; 6] = [
        Verb::Pause,
        Verb::Resume,
        Verb::Promote,
        Verb::PromoteFull,
        Verb::Abort,
        Verb::Retry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::Promote => "promote",
            Verb::PromoteFull => "promote-full",
            Verb::Abort => "abort",
            Verb::Retry => "retry",
        }
    }

    /// A request's text: the verb, optionally followed by `@` and anything that makes it unique
    /// (the plugin writes a timestamp), so the same verb can be asked again later.
    pub fn parse_request(text: &str) -> Result<Verb, String> {
        let verb = text.split('@').next().unwrap_or_default().trim();
        Verb::ALL
            .into_iter()
            .find(|v| v.as_str() == verb)
            .ok_or_else(|| {
                let known: Vec<&str> = Verb::ALL.iter().map(|v| v.as_str()).collect();
                format!(
                    "{verb:?} is not a request; use one of {} (optionally followed by @ and a timestamp)",
                    known.join(", ")
                )
            })
    }
}

/// One check as last measured in the current step, with its counters for the step.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckState {
    pub name: String,
    pub judged: Judged,
    /// The message of this check's last measurement that compared the canary with the stable:
    /// once the canary has 100 %, the stable is no longer measured, and this is what is left of
    /// the comparison (the promotion's Event quotes it).
    pub compared: Option<String>,
    pub passes: u32,
    pub failures: u32,
    pub inconclusive: u32,
    pub errors: u32,
}

/// Everything a rollout needs to go on, as the release's status holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub phase: Phase,
    pub pause_reason: Option<PauseReason>,
    /// One sentence on where the rollout stands.
    pub message: String,
    /// The canary revision this state is about.
    pub revision: String,
    /// The last revision rolled back; never rolled out again without `retry`.
    pub failed_revision: Option<String>,
    /// Index into the plan's steps.
    pub step: usize,
    pub step_start: SystemTime,
    /// When the current step's weight was applied; `None` while waiting for capacity.
    pub weight_since: Option<SystemTime>,
    /// Percent the route gives the canary.
    pub weight: i32,
    /// `promote --full` was asked: 100 % once the replicas are there, without more analysis.
    pub full: bool,
    pub last_measurement: Option<SystemTime>,
    /// Verdict of the last measurement in the current step.
    pub last_verdict: Option<Verdict>,
    pub failures: u32,
    pub inconclusive: u32,
    /// Query errors in a row.
    pub errors: u32,
    /// Text of the last request acted on.
    pub last_request: Option<String>,
    /// Text of the last request refused for its stamp (too far ahead), so it is reported once.
    pub refused_request: Option<String>,
    pub checks: Vec<CheckState>,
}

/// How many canary replicas a weight needs before it is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capacity {
    /// The user's fixed replica count: that many must be ready.
    Fixed(i32),
    /// Autoscaled: the canary's share of the stable's replicas, within the autoscaling bounds.
    Autoscaled { stable: i32, min: i32, max: i32 },
}

impl Capacity {
    pub fn replicas_for(self, weight: i32) -> i32 {
        if weight <= 0 {
            return 0;
        }
        match self {
            Capacity::Fixed(n) => n,
            Capacity::Autoscaled { stable, min, max } => {
                let share = (i64::from(stable.max(1)) * i64::from(weight) + 99) / 100;
                i32::try_from(share)
                    .unwrap_or(i32::MAX)
                    .clamp(min, max.max(min))
            }
        }
    }
}

/// One measurement of every check.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    pub at: SystemTime,
    /// Each check by name, judged.
    pub checks: Vec<(String, Judged)>,
}

pub struct Inputs<'a> {
    pub now: SystemTime,
    /// The canary's current revision (a hash of its effective spec).
    pub revision: &'a str,
    /// The request annotation's text, if any (acted on only when it differs from the last one).
    pub request: Option<&'a str>,
    pub canary_ready: i32,
    /// Why the canary's Deployment cannot make its replicas, in its own words (a failed pod
    /// creation, an exceeded progress deadline), when it says so.
    pub canary_problem: Option<&'a str>,
    pub capacity: Capacity,
    /// Taken only when [`measurement_due`] said so.
    pub measurement: Option<Measurement>,
}

/// Something worth an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub state: State,
    pub canary_weight: i32,
    /// For an autoscaled canary: the least replicas its HPA must keep for the weight.
    pub canary_min_replicas: Option<i32>,
    pub notes: Vec<Note>,
    /// When to look again even if nothing changes (a step's end, the next measurement).
    pub wake: Option<SystemTime>,
}
