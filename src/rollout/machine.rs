//! The rollout state machine: one pure function, [`advance`], from the plan, the state the
//! release's status holds, and what was observed now, to the next state, the canary's weight and
//! what to tell the user. The README draws it.
//!
//! Rules it keeps, whatever the inputs:
//! - Not being able to see (query errors, no data) never rolls back and never promotes: it holds
//!   the weight and pauses.
//! - The weight only goes up during a rollout, and only once the canary has the replicas for it.
//! - A failed revision is never rolled out again by itself: only `retry` or a new revision does.
//! - A request (pause, resume, ...) is acted on once: its text is recorded and not acted on again.

use std::time::{Duration, SystemTime};

use super::analysis::{Judged, Verdict, overall};
use super::clock::{self, human};
use super::{Action, Builtin, Check, Plan, Step};

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

/// Longest wait between looks while waiting for replicas, in case a Deployment event is missed.
const CAPACITY_RECHECK: Duration = Duration::from_secs(10);

/// How soon an overdue measurement is tried again.
const OVERDUE_RETRY: Duration = Duration::from_millis(500);

pub fn advance(plan: &Plan, previous: Option<&State>, input: &Inputs<'_>) -> Outcome {
    let now = input.now;
    let mut notes = Vec::new();
    let mut s = match previous {
        Some(p) if p.revision == input.revision => p.clone(),
        Some(p) if p.failed_revision.as_deref() == Some(input.revision) => {
            let mut s = p.clone();
            s.revision = input.revision.to_owned();
            rolled_back_before(&mut s);
            s
        }
        _ => start(plan, previous, input.revision, now, &mut notes),
    };
    pull_back_future_times(&mut s, now, &mut notes);
    if let Some(text) = input.request
        && is_new(text, s.last_request.as_deref(), now)
    {
        take_request(plan, &mut s, text, now, &mut notes);
    }
    if let Some(m) = &input.measurement
        && measuring(&s)
        && let Some(analysis) = &plan.analysis
    {
        record(plan, analysis, &mut s, m, &mut notes);
    }
    // A step that ends may let the next one start at once (its replicas already there).
    for _ in 0..=plan.steps.len() {
        if !progress(plan, &mut s, input, &mut notes) {
            break;
        }
    }
    let canary_min_replicas = match input.capacity {
        Capacity::Fixed(_) => None,
        Capacity::Autoscaled { .. } => match s.phase {
            Phase::Progressing | Phase::Paused => {
                Some(input.capacity.replicas_for(target(plan, &s).weight))
            }
            Phase::Promoted => Some(input.capacity.replicas_for(100)),
            _ => None,
        },
    };
    Outcome {
        canary_weight: s.weight,
        canary_min_replicas,
        wake: wake(plan, &s, now),
        state: s,
        notes,
    }
}

/// No canary declared (the steady state, or a rollout finalised by making the canary the stable):
/// nothing to roll out, all traffic to stable. The failed revision and the last request are kept,
/// so neither is acted on again when a canary returns.
pub fn idle(previous: Option<&State>, now: SystemTime) -> Outcome {
    let mut notes = Vec::new();
    if let Some(p) = previous
        && p.phase != Phase::Idle
    {
        notes.push(Note {
            warning: false,
            reason: "Finalized",
            message: format!(
                "no canary in the spec any more (the rollout of {} was {}): the stable version serves everything",
                p.revision,
                p.phase.as_str()
            ),
        });
    }
    let state = fresh(
        previous,
        Phase::Idle,
        "no canary: the stable version serves everything",
        "",
        previous
            .filter(|p| p.phase == Phase::Idle)
            .map_or(now, |p| p.step_start),
    );
    Outcome {
        state,
        canary_weight: 0,
        canary_min_replicas: None,
        notes,
        wake: None,
    }
}

/// Acts on a new request, unless its stamp is too far ahead of the operator's clock: recorded as
/// the last request, it would make every honest request after it look older, and be ignored, for
/// as long as the stamp is ahead. A refused request is reported once, not recorded, and stays
/// refused: left in place, it would otherwise be acted on by surprise once the clock caught up.
fn take_request(plan: &Plan, s: &mut State, text: &str, now: SystemTime, notes: &mut Vec<Note>) {
    if s.refused_request.as_deref() == Some(text) {
        return;
    }
    if let Some(ahead) = clock::request_too_far_ahead(text, now) {
        s.refused_request = Some(text.to_owned());
        notes.push(Note {
            warning: true,
            reason: "RequestIgnored",
            message: format!(
                "{text}: stamped {} ahead of the operator's clock (at most {} allowed), not acted on; check the clock of the machine that sent it (`kubectl canary` stamps requests with the API server's time)",
                human(ahead),
                human(clock::MAX_REQUEST_SKEW)
            ),
        });
        return;
    }
    s.last_request = Some(text.to_owned());
    match Verb::parse_request(text) {
        Ok(verb) => act(plan, s, verb, now, notes),
        Err(why) => notes.push(Note {
            warning: true,
            reason: "RequestRefused",
            message: why,
        }),
    }
}

/// Times in the state later than now are counted from now (see [`clock::pull_back`]), with a
/// note when they were noticeably ahead.
fn pull_back_future_times(s: &mut State, now: SystemTime, notes: &mut Vec<Note>) {
    let mut moved = Vec::new();
    let times = [
        ("stepStartTime", Some(&mut s.step_start)),
        ("weightAppliedTime", s.weight_since.as_mut()),
        ("lastMeasurementTime", s.last_measurement.as_mut()),
    ];
    for (name, time) in times {
        if let Some(ahead) = time.and_then(|t| clock::pull_back(t, now)) {
            moved.push(format!("{name} by {}", human(ahead)));
        }
    }
    if !moved.is_empty() {
        notes.push(Note {
            warning: true,
            reason: "ClockSkew",
            message: format!(
                "status.rollout held times ahead of the operator's clock ({}); they count from now (written by a replica whose clock runs fast?)",
                moved.join(", ")
            ),
        });
    }
}

/// Whether the observe step should measure now.
pub fn measurement_due(plan: &Plan, state: Option<&State>, now: SystemTime) -> bool {
    state.is_some_and(|s| next_measurement(plan, s).is_some_and(|due| due <= now))
}

fn start(
    plan: &Plan,
    previous: Option<&State>,
    revision: &str,
    now: SystemTime,
    notes: &mut Vec<Note>,
) -> State {
    notes.push(Note {
        warning: false,
        reason: "RolloutStarted",
        message: format!(
            "rolling out canary revision {revision} in {} steps",
            plan.steps.len()
        ),
    });
    fresh(previous, Phase::Progressing, "starting", revision, now)
}

/// A state at step 1 with the canary at 0 % and nothing measured. Only the failed revision and
/// the last request carry over from `previous`: neither may be acted on again.
fn fresh(
    previous: Option<&State>,
    phase: Phase,
    message: &str,
    revision: &str,
    step_start: SystemTime,
) -> State {
    State {
        phase,
        pause_reason: None,
        message: message.to_owned(),
        revision: revision.to_owned(),
        failed_revision: previous.and_then(|p| p.failed_revision.clone()),
        step: 0,
        step_start,
        weight_since: None,
        weight: 0,
        full: false,
        last_measurement: None,
        last_verdict: None,
        failures: 0,
        inconclusive: 0,
        errors: 0,
        last_request: previous.and_then(|p| p.last_request.clone()),
        refused_request: previous.and_then(|p| p.refused_request.clone()),
        checks: Vec::new(),
    }
}

fn rolled_back_before(s: &mut State) {
    s.phase = Phase::RolledBack;
    s.pause_reason = None;
    s.weight = 0;
    s.weight_since = None;
    s.full = false;
    s.message = format!(
        "canary revision {} was rolled back before; `kubectl canary retry` rolls it out again",
        s.revision
    );
}

fn act(plan: &Plan, s: &mut State, verb: Verb, now: SystemTime, notes: &mut Vec<Note>) {
    let active = matches!(s.phase, Phase::Progressing | Phase::Paused);
    let ignored = |s: &State, why: &str| Note {
        warning: true,
        reason: "RequestIgnored",
        message: format!(
            "{}: {why} (the rollout is {})",
            verb.as_str(),
            s.phase.as_str()
        ),
    };
    match verb {
        Verb::Pause if s.phase == Phase::Progressing => {
            pause(
                s,
                PauseReason::Requested,
                "paused by request; `kubectl canary resume` continues".to_owned(),
                notes,
            );
        }
        Verb::Pause => notes.push(ignored(s, "only a progressing rollout can be paused")),
        Verb::Resume
            if s.phase == Phase::Paused
                && s.pause_reason != Some(PauseReason::AwaitingApproval) =>
        {
            // A stepped-back step is held again in full from now, not from when it stepped back.
            if matches!(
                s.pause_reason,
                Some(PauseReason::RateLimited | PauseReason::SteppedBack)
            ) && s.weight_since.is_some()
            {
                s.weight_since = Some(now);
                s.step_start = now;
            }
            // Waiting for replicas again, with a full progress deadline.
            if s.pause_reason == Some(PauseReason::CanaryNotReady) {
                s.step_start = now;
            }
            resume(s, "resumed by request", notes);
        }
        Verb::Resume if s.phase == Phase::Paused => {
            notes.push(ignored(s, "this step waits for approval: use promote"))
        }
        Verb::Resume => notes.push(ignored(s, "only a paused rollout can be resumed")),
        Verb::Promote if active => {
            notes.push(Note {
                warning: false,
                reason: "PromotedByRequest",
                message: format!("step {} ended by request", s.step + 1),
            });
            next_step(plan, s, now, notes);
        }
        Verb::PromoteFull if active => {
            notes.push(Note {
                warning: false,
                reason: "PromotedByRequest",
                message: "promoting to 100% by request, once the canary has the replicas for it"
                    .to_owned(),
            });
            s.phase = Phase::Progressing;
            s.pause_reason = None;
            s.full = true;
            s.step = plan.steps.len().saturating_sub(1);
            s.step_start = now;
            s.weight_since = None;
        }
        Verb::Promote | Verb::PromoteFull => notes.push(ignored(
            s,
            "only a progressing or paused rollout can be promoted",
        )),
        Verb::Abort if active => {
            s.phase = Phase::Aborted;
            s.pause_reason = None;
            s.weight = 0;
            s.weight_since = None;
            s.full = false;
            s.message = "aborted by request: the canary gets no traffic; `kubectl canary retry` starts again".to_owned();
            notes.push(Note {
                warning: true,
                reason: "Aborted",
                message: s.message.clone(),
            });
        }
        Verb::Abort => notes.push(ignored(
            s,
            "only a progressing or paused rollout can be aborted",
        )),
        Verb::Retry if matches!(s.phase, Phase::RolledBack | Phase::Aborted) => {
            let revision = s.revision.clone();
            let mut fresh = start(plan, Some(&*s), &revision, now, notes);
            if fresh.failed_revision.as_deref() == Some(s.revision.as_str()) {
                fresh.failed_revision = None;
            }
            *s = fresh;
        }
        Verb::Retry => notes.push(ignored(
            s,
            "only a rolled-back or aborted rollout can be retried",
        )),
    }
}

/// Whether a request's text asks for something not yet acted on. Stamped requests (`verb@stamp`)
/// must be later than the last one acted on, so a GitOps tool re-applying an old annotation from
/// Git cannot replay it. Stamps compare as the plugin writes them (UTC, fixed width), or as numbers.
/// A last request stamped too far ahead of `now` (recorded before such stamps were refused) does
/// not outrank anything.
fn is_new(text: &str, last: Option<&str>, now: SystemTime) -> bool {
    let stamp = |t: &str| t.split_once('@').map(|(_, stamp)| stamp.trim().to_owned());
    match (last, stamp(text), last.and_then(stamp)) {
        (None, _, _) => true,
        (Some(last), _, _) if last == text => false,
        (Some(last), _, _) if clock::request_too_far_ahead(last, now).is_some() => true,
        (Some(_), Some(new), Some(old)) => (new.len(), &new) > (old.len(), &old),
        _ => true,
    }
}

fn pause(s: &mut State, reason: PauseReason, message: String, notes: &mut Vec<Note>) {
    s.phase = Phase::Paused;
    s.pause_reason = Some(reason);
    s.message = message;
    notes.push(Note {
        warning: !matches!(
            reason,
            PauseReason::Requested | PauseReason::AwaitingApproval
        ),
        reason: match reason {
            PauseReason::AwaitingApproval => "AwaitingApproval",
            _ => "Paused",
        },
        message: format!("{}: {}", reason.as_str(), s.message),
    });
}

fn resume(s: &mut State, why: &str, notes: &mut Vec<Note>) {
    s.phase = Phase::Progressing;
    s.pause_reason = None;
    s.inconclusive = 0;
    s.errors = 0;
    s.message = why.to_owned();
    notes.push(Note {
        warning: false,
        reason: "Resumed",
        message: why.to_owned(),
    });
}

/// Whether measurements are taken and counted in this state.
fn measuring(s: &State) -> bool {
    s.weight_since.is_some()
        && !s.full
        && match s.phase {
            Phase::Progressing => true,
            Phase::Paused => matches!(
                s.pause_reason,
                Some(PauseReason::NoData | PauseReason::MetricsUnavailable)
            ),
            _ => false,
        }
}

fn record(
    plan: &Plan,
    analysis: &super::Analysis,
    s: &mut State,
    m: &Measurement,
    notes: &mut Vec<Note>,
) {
    let check_of = |name: &str| analysis.checks.iter().find(|c| c.name == name);
    let action_of = |name: &str| check_of(name).map_or(Action::Rollback, |c| c.action);
    for (name, judged) in &m.checks {
        let was_failing = s
            .checks
            .iter()
            .any(|c| &c.name == name && c.judged.verdict == Verdict::Fail);
        if action_of(name) == Action::Warn && judged.verdict == Verdict::Fail && !was_failing {
            notes.push(Note {
                warning: true,
                reason: "CheckWarning",
                message: format!(
                    "step {}: {name} (warn only, does not decide): {}",
                    s.step + 1,
                    judged.message
                ),
            });
        }
        let index = match s.checks.iter().position(|c| &c.name == name) {
            Some(i) => i,
            None => {
                s.checks.push(CheckState {
                    name: name.clone(),
                    judged: judged.clone(),
                    compared: None,
                    passes: 0,
                    failures: 0,
                    inconclusive: 0,
                    errors: 0,
                });
                s.checks.len() - 1
            }
        };
        let check = &mut s.checks[index];
        check.judged = judged.clone();
        if judged.stable_value.is_some() {
            check.compared = Some(judged.message.clone());
        }
        match judged.verdict {
            Verdict::Pass => check.passes += 1,
            Verdict::Fail => check.failures += 1,
            Verdict::Inconclusive => check.inconclusive += 1,
            Verdict::Error => check.errors += 1,
        }
    }
    // Checks no longer in the plan are not shown as if they were measured.
    s.checks
        .retain(|c| m.checks.iter().any(|(name, _)| *name == c.name));
    // Warn-only checks inform; they neither hold nor fail a step.
    let deciding = || {
        m.checks
            .iter()
            .filter(|(name, _)| action_of(name) != Action::Warn)
    };
    let verdict = overall(deciding().map(|(_, j)| j.verdict));
    s.last_measurement = Some(m.at);
    s.last_verdict = Some(verdict);
    let summary = |wanted: Verdict| {
        deciding()
            .filter(|(_, j)| j.verdict == wanted)
            .map(|(name, j)| format!("{name}: {}", j.message))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let paused_blind = s.phase == Phase::Paused;
    match verdict {
        Verdict::Pass => {
            s.errors = 0;
            if paused_blind {
                resume(s, "measurements are conclusive again", notes);
            }
            s.message = format!("step {}: checks pass", s.step + 1);
        }
        Verdict::Fail => {
            s.errors = 0;
            if paused_blind {
                resume(s, "measurements are conclusive again", notes);
            }
            s.failures += 1;
            let failed = summary(Verdict::Fail);
            // The strongest action among the checks that failed decides.
            let failing: Vec<&Check> = deciding()
                .filter(|(_, j)| j.verdict == Verdict::Fail)
                .filter_map(|(name, _)| check_of(name))
                .collect();
            let action = failing
                .iter()
                .map(|c| c.action)
                .max()
                .unwrap_or(Action::Rollback);
            if s.failures > analysis.failure_limit && action == Action::StepBack {
                let throttled = failing
                    .iter()
                    .any(|c| c.builtin == Some(Builtin::RateLimited));
                step_back(plan, s, m.at, throttled, &failed, notes);
            } else if s.failures > analysis.failure_limit {
                s.phase = Phase::RolledBack;
                s.pause_reason = None;
                s.failed_revision = Some(s.revision.clone());
                s.weight = 0;
                s.weight_since = None;
                s.message = format!(
                    "rolled back at step {} after {} failed measurements (failureLimit {}): {failed}",
                    s.step + 1,
                    s.failures,
                    analysis.failure_limit
                );
                notes.push(Note {
                    warning: true,
                    reason: "RolledBack",
                    message: s.message.clone(),
                });
            } else {
                s.message = format!(
                    "step {}: measurement failed ({} of {} tolerated): {failed}",
                    s.step + 1,
                    s.failures,
                    analysis.failure_limit
                );
                notes.push(Note {
                    warning: true,
                    reason: "MeasurementFailed",
                    message: s.message.clone(),
                });
            }
        }
        Verdict::Inconclusive => {
            s.errors = 0;
            if s.pause_reason == Some(PauseReason::MetricsUnavailable) {
                resume(s, "queries answer again", notes);
            }
            let why = summary(Verdict::Inconclusive);
            s.inconclusive += 1;
            if s.phase == Phase::Progressing && s.inconclusive >= analysis.inconclusive_limit {
                let message = no_data_message(s, analysis, &why);
                pause(s, PauseReason::NoData, message, notes);
            } else if s.phase == Phase::Progressing {
                s.message = format!("step {}: inconclusive: {why}", s.step + 1);
            }
        }
        Verdict::Error => {
            s.errors += 1;
            let why = summary(Verdict::Error);
            let message = format!(
                "{} query errors in a row (errorLimit {}), weight held; resumes when queries answer: {why}",
                s.errors, analysis.error_limit
            );
            if s.phase == Phase::Progressing && s.errors >= analysis.error_limit {
                pause(s, PauseReason::MetricsUnavailable, message, notes);
            } else if s.pause_reason == Some(PauseReason::NoData) {
                // Paused for lack of data, and now the queries fail: that is what holds it now.
                pause(s, PauseReason::MetricsUnavailable, message, notes);
            } else if s.pause_reason == Some(PauseReason::MetricsUnavailable) {
                s.message = message;
            } else if s.phase == Phase::Progressing {
                s.message = format!("step {}: query error: {why}", s.step + 1);
            }
        }
    }
}

fn no_data_message(s: &State, analysis: &super::Analysis, why: &str) -> String {
    format!(
        "{} inconclusive measurements at step {} (inconclusiveLimit {}), weight held: {why}",
        s.inconclusive,
        s.step + 1,
        analysis.inconclusive_limit
    )
}

/// Moves the rollout on if it can; true when something changed that may let it move again.
fn progress(plan: &Plan, s: &mut State, input: &Inputs<'_>, notes: &mut Vec<Note>) -> bool {
    let step = target(plan, s).clone();
    let needed = input.capacity.replicas_for(step.weight);
    let short = input.canary_ready < needed;
    if s.pause_reason == Some(PauseReason::CanaryNotReady) {
        if short {
            s.message = not_ready_message(plan, s, &step, input, needed);
            return false;
        }
        resume(s, "the canary's replicas are ready", notes);
    }
    if s.phase != Phase::Progressing {
        return false;
    }
    let Some(since) = s.weight_since else {
        if short {
            let waited = input.now.duration_since(s.step_start).unwrap_or_default();
            if waited < plan.deadline.after {
                s.message = format!(
                    "step {}: waiting for the canary's replicas before sending it {}%: {}/{needed} ready{}",
                    s.step + 1,
                    step.weight,
                    input.canary_ready,
                    input
                        .canary_problem
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default()
                );
            } else if plan.deadline.abort {
                s.phase = Phase::Aborted;
                s.pause_reason = None;
                s.weight = 0;
                s.full = false;
                s.message = format!(
                    "aborted: {}; `kubectl canary retry` starts again",
                    not_ready_message(plan, s, &step, input, needed)
                );
                notes.push(Note {
                    warning: true,
                    reason: "ProgressDeadlineExceeded",
                    message: s.message.clone(),
                });
            } else {
                let message = not_ready_message(plan, s, &step, input, needed);
                pause(s, PauseReason::CanaryNotReady, message, notes);
            }
            return false;
        }
        s.weight_since = Some(input.now);
        s.weight = step.weight;
        if s.full {
            promoted(plan, s, notes);
            return false;
        }
        s.message = format!(
            "step {}/{}: {}% to the canary",
            s.step + 1,
            plan.steps.len(),
            step.weight
        );
        notes.push(Note {
            warning: false,
            reason: "StepStarted",
            message: s.message.clone(),
        });
        return true;
    };
    let timed_out = input.now.duration_since(since).unwrap_or_default() >= step.duration;
    let checked = plan.analysis.is_none() || s.last_verdict == Some(Verdict::Pass);
    if !(timed_out && checked) {
        return false;
    }
    if step.approval {
        pause(
            s,
            PauseReason::AwaitingApproval,
            format!(
                "step {} passed; waiting for approval: `kubectl canary promote` continues",
                s.step + 1
            ),
            notes,
        );
        return false;
    }
    next_step(plan, s, input.now, notes);
    true
}

/// What a rollout past its progress deadline says: the step, the replicas, the weight held, and
/// the Deployment's own reason when it gives one. Nothing in it changes with the time alone, so
/// waiting costs no status writes.
fn not_ready_message(
    plan: &Plan,
    s: &State,
    step: &Step,
    input: &Inputs<'_>,
    needed: i32,
) -> String {
    format!(
        "step {}: the canary's replicas for {}% were not ready within the progress deadline ({}): {}/{needed} ready, canary held at {}%{}",
        s.step + 1,
        step.weight,
        human(plan.deadline.after),
        input.canary_ready,
        s.weight,
        input
            .canary_problem
            .map(|p| format!("; the Deployment says: {p}"))
            .unwrap_or_else(|| {
                "; the Deployment reports no failure (pods pending, pulling an image, or crashing?)"
                    .to_owned()
            })
    )
}

fn next_step(plan: &Plan, s: &mut State, now: SystemTime, notes: &mut Vec<Note>) {
    s.phase = Phase::Progressing;
    s.pause_reason = None;
    if s.step + 1 >= plan.steps.len() {
        // The last step's weight is 100 (validate sees to it); promotion waits for nothing more.
        if s.weight_since.is_none() {
            s.full = true;
            return;
        }
        promoted(plan, s, notes);
        return;
    }
    s.step += 1;
    s.step_start = now;
    s.weight_since = None;
    s.last_verdict = None;
    s.failures = 0;
    s.inconclusive = 0;
    s.errors = 0;
    for check in &mut s.checks {
        check.passes = 0;
        check.failures = 0;
        check.inconclusive = 0;
        check.errors = 0;
    }
}

/// Back to the previous step's weight (0 % from the first step) and held there: the checks said
/// the canary's share is too much for now, not that the canary is broken.
fn step_back(
    plan: &Plan,
    s: &mut State,
    now: SystemTime,
    throttled: bool,
    failed: &str,
    notes: &mut Vec<Note>,
) {
    let from = s.step;
    let from_weight = s.weight;
    if s.step > 0 {
        s.step -= 1;
        s.weight = target(plan, s).weight;
        s.weight_since = Some(now);
    } else {
        s.weight = 0;
        s.weight_since = None;
    }
    s.step_start = now;
    s.last_verdict = None;
    s.failures = 0;
    s.inconclusive = 0;
    s.errors = 0;
    let reason = if throttled {
        PauseReason::RateLimited
    } else {
        PauseReason::SteppedBack
    };
    pause(
        s,
        reason,
        format!(
            "stepped back from step {} ({from_weight}%) to {}% and held; `kubectl canary resume` continues: {failed}",
            from + 1,
            s.weight
        ),
        notes,
    );
}

fn promoted(plan: &Plan, s: &mut State, notes: &mut Vec<Note>) {
    s.phase = Phase::Promoted;
    s.pause_reason = None;
    s.full = false;
    s.weight = 100;
    s.message =
        "promoted: the canary serves 100%; make it the stable version in the spec to finish"
            .to_owned();
    // What the warn-only checks (cost, typically) last said against the stable goes with the
    // news: it did not decide, but it is what a person wants to know about the version now
    // serving everything.
    let warn_only: Vec<String> = s
        .checks
        .iter()
        .filter(|c| {
            plan.analysis
                .iter()
                .flat_map(|a| &a.checks)
                .any(|check| check.name == c.name && check.action == Action::Warn)
        })
        .map(|c| {
            let said = c.compared.as_ref().unwrap_or(&c.judged.message);
            format!("{}: {said}", c.name)
        })
        .collect();
    let message = match warn_only.is_empty() {
        true => s.message.clone(),
        false => format!("{}; {}", s.message, warn_only.join("; ")),
    };
    notes.push(Note {
        warning: false,
        reason: "Promoted",
        message,
    });
}

/// The step whose weight the rollout is at or going to.
fn target<'a>(plan: &'a Plan, s: &State) -> &'a Step {
    &plan.steps[s.step.min(plan.steps.len().saturating_sub(1))]
}

fn next_measurement(plan: &Plan, s: &State) -> Option<SystemTime> {
    let analysis = plan.analysis.as_ref()?;
    if !measuring(s) {
        return None;
    }
    let since = s.weight_since?;
    let earliest = since + analysis.warmup;
    // Whether this step has been measured is its verdict, reset when a step begins: times are kept
    // to the second, so a measurement in the second the weight changed cannot be told by time.
    Some(match (s.last_measurement, s.last_verdict) {
        (Some(last), Some(_)) => (last + analysis.interval).max(earliest),
        _ => earliest,
    })
}

fn wake(plan: &Plan, s: &State, now: SystemTime) -> Option<SystemTime> {
    // A measurement overdue (its query was not made) is retried soon, never in a tight loop.
    let measurement = next_measurement(plan, s).map(|t| t.max(now + OVERDUE_RETRY));
    let step_end = match (s.phase, s.weight_since) {
        // Past its end, a step waits for a passing measurement, which has its own time.
        (Phase::Progressing, Some(since)) => {
            Some(since + target(plan, s).duration).filter(|t| *t > now)
        }
        // Waiting for replicas: at the deadline at the latest.
        (Phase::Progressing, None) => Some(
            (now + CAPACITY_RECHECK)
                .min(s.step_start + plan.deadline.after)
                .max(now + OVERDUE_RETRY),
        ),
        _ if s.pause_reason == Some(PauseReason::CanaryNotReady) => Some(now + CAPACITY_RECHECK),
        _ => None,
    };
    [measurement, step_end].into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    use super::super::analysis::{Bounds, Judged, Rule, Unit};
    use super::super::{Analysis, Check, Deadline};
    use super::*;

    const T0: u64 = 1_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + secs)
    }

    fn step(weight: i32, secs: u64, approval: bool) -> Step {
        Step {
            weight,
            duration: Duration::from_secs(secs),
            approval,
        }
    }

    /// 10 → 50 → 100, 10 s each; analysis every 2 s after 1 s of warmup.
    fn plan(analysis: bool) -> Plan {
        Plan {
            steps: vec![
                step(10, 10, false),
                step(50, 10, false),
                step(100, 10, false),
            ],
            analysis: analysis.then(|| Analysis {
                address: "http://127.0.0.1:9090".to_owned(),
                timeout: Duration::from_secs(1),
                interval: Duration::from_secs(2),
                warmup: Duration::from_secs(1),
                failure_limit: 1,
                inconclusive_limit: 3,
                error_limit: 2,
                checks: vec![Check {
                    name: "error-rate".to_owned(),
                    rule: Rule::Value {
                        query: "q".to_owned(),
                        unit: Unit::Plain,
                    },
                    bounds: Bounds {
                        max: Some(0.02),
                        ..Bounds::default()
                    },
                    action: Action::Rollback,
                    builtin: None,
                }],
            }),
            deadline: Deadline::default(),
        }
    }

    /// What happens at one moment of a scenario.
    #[derive(Clone, Copy, Debug)]
    enum Happening {
        /// Nothing but the time.
        Look,
        Measured(Verdict),
        Request(&'static str),
        /// The canary's ready replicas change.
        Ready(i32),
        Revision(&'static str),
    }
    use Happening::*;

    /// Runs a scenario and returns (time, phase, pause reason, weight) after each happening. Ready
    /// replicas start at 1 (fixed capacity 1); a measurement is only given when one is due.
    fn run(
        plan: &Plan,
        happenings: &[(u64, Happening)],
    ) -> Vec<(u64, Phase, Option<PauseReason>, i32)> {
        let mut state: Option<State> = None;
        let mut ready = 1;
        let mut revision = "r1";
        let mut request: Option<&str> = None;
        let mut seen = Vec::new();
        for &(secs, happening) in happenings {
            let now = at(secs);
            let mut measurement = None;
            match happening {
                Look => {}
                Measured(verdict) => {
                    assert!(
                        measurement_due(plan, state.as_ref(), now),
                        "a measurement at {secs}s is not due: {state:?}"
                    );
                    measurement = Some(Measurement {
                        at: now,
                        checks: vec![(
                            "error-rate".to_owned(),
                            Judged {
                                verdict,
                                value: Some(0.01),
                                stable_value: None,
                                bound: String::new(),
                                samples: None,
                                stable_samples: None,
                                message: format!("{verdict}"),
                            },
                        )],
                    });
                }
                Request(text) => request = Some(text),
                Ready(n) => ready = n,
                Revision(r) => revision = r,
            }
            let outcome = advance(
                plan,
                state.as_ref(),
                &Inputs {
                    now,
                    revision,
                    request,
                    canary_ready: ready,
                    canary_problem: None,
                    capacity: Capacity::Fixed(1),
                    measurement,
                },
            );
            assert_eq!(outcome.canary_weight, outcome.state.weight);
            if let Some(wake) = outcome.wake {
                assert!(wake > now, "at {secs}s: wake {wake:?} is not in the future");
            }
            seen.push((
                secs,
                outcome.state.phase,
                outcome.state.pause_reason,
                outcome.canary_weight,
            ));
            state = Some(outcome.state);
        }
        seen
    }

    fn last(seen: &[(u64, Phase, Option<PauseReason>, i32)]) -> (Phase, Option<PauseReason>, i32) {
        let (_, phase, reason, weight) = seen[seen.len() - 1];
        (phase, reason, weight)
    }

    use Phase::*;
    use Verdict::{Error as Err_, Fail, Inconclusive, Pass};

    #[test]
    fn without_analysis_steps_advance_on_time() {
        let seen = run(
            &plan(false),
            &[(0, Look), (5, Look), (10, Look), (20, Look), (30, Look)],
        );
        let weights: Vec<i32> = seen.iter().map(|s| s.3).collect();
        assert_eq!(weights, [10, 10, 50, 100, 100]);
        assert_eq!(last(&seen), (Promoted, None, 100));
    }

    /// Each case: a scenario, and the phase, pause reason and weight it ends in.
    #[test]
    fn scenarios_end_where_they_should() {
        let p = plan(true);
        type Case = (
            &'static str,
            Vec<(u64, Happening)>,
            (Phase, Option<PauseReason>, i32),
        );
        let cases: Vec<Case> = vec![
            (
                "healthy: each step passes and the last promotes",
                vec![
                    (0, Look),
                    (1, Measured(Pass)),
                    (3, Measured(Pass)),
                    (10, Measured(Pass)),
                    (11, Measured(Pass)),
                    (20, Measured(Pass)),
                    (21, Measured(Pass)),
                    (31, Measured(Pass)),
                ],
                (Promoted, None, 100),
            ),
            (
                "a step past its duration waits for a passing measurement",
                vec![(0, Look), (1, Measured(Inconclusive)), (12, Look)],
                (Progressing, None, 10),
            ),
            (
                "failures beyond failureLimit roll back at once",
                vec![(0, Look), (1, Measured(Fail)), (3, Measured(Fail))],
                (RolledBack, None, 0),
            ),
            (
                "one failure within failureLimit is tolerated",
                vec![
                    (0, Look),
                    (1, Measured(Fail)),
                    (3, Measured(Pass)),
                    (10, Look),
                ],
                (Progressing, None, 50),
            ),
            (
                "inconclusive measurements pause with the weight held",
                vec![
                    (0, Look),
                    (1, Measured(Inconclusive)),
                    (3, Measured(Inconclusive)),
                    (5, Measured(Inconclusive)),
                    (40, Look),
                ],
                (Paused, Some(PauseReason::NoData), 10),
            ),
            (
                "NoData ends by itself on a conclusive measurement",
                vec![
                    (0, Look),
                    (1, Measured(Inconclusive)),
                    (3, Measured(Inconclusive)),
                    (5, Measured(Inconclusive)),
                    (7, Measured(Pass)),
                ],
                (Progressing, None, 10),
            ),
            (
                "query errors in a row pause, never roll back",
                vec![
                    (0, Look),
                    (1, Measured(Err_)),
                    (3, Measured(Err_)),
                    (5, Measured(Err_)),
                    (60, Look),
                ],
                (Paused, Some(PauseReason::MetricsUnavailable), 10),
            ),
            (
                "errors not in a row do not pause",
                vec![
                    (0, Look),
                    (1, Measured(Err_)),
                    (3, Measured(Pass)),
                    (5, Measured(Err_)),
                ],
                (Progressing, None, 10),
            ),
            (
                "a NoData pause whose queries then fail is MetricsUnavailable",
                vec![
                    (0, Look),
                    (1, Measured(Inconclusive)),
                    (3, Measured(Inconclusive)),
                    (5, Measured(Inconclusive)),
                    (7, Measured(Err_)),
                ],
                (Paused, Some(PauseReason::MetricsUnavailable), 10),
            ),
            (
                "a canary without replicas is waited for until the progress deadline",
                vec![(0, Ready(0)), (599, Look)],
                (Progressing, None, 0),
            ),
            (
                "past the progress deadline the rollout pauses as CanaryNotReady",
                vec![(0, Ready(0)), (599, Look), (600, Look)],
                (Paused, Some(PauseReason::CanaryNotReady), 0),
            ),
            (
                "CanaryNotReady ends by itself once the replicas are ready",
                vec![(0, Ready(0)), (600, Look), (700, Ready(1))],
                (Progressing, None, 10),
            ),
            (
                "a later step waits from its own start, at the weight before it",
                vec![
                    (0, Look),
                    (1, Measured(Pass)),
                    (10, Ready(0)),
                    (609, Look),
                    (610, Look),
                ],
                (Paused, Some(PauseReason::CanaryNotReady), 10),
            ),
            (
                "resume after CanaryNotReady waits a full deadline again",
                vec![
                    (0, Ready(0)),
                    (600, Look),
                    (700, Request("resume@1")),
                    (1299, Look),
                ],
                (Progressing, None, 0),
            ),
            (
                "a request stamped a day ahead is not acted on; an honest one after it is",
                vec![
                    (0, Look),
                    (1, Request("pause@1970-01-13T13:46:41.000Z")),
                    (2, Look),
                    (3, Request("abort@1970-01-12T13:46:43.000Z")),
                ],
                (Aborted, None, 0),
            ),
            (
                "MetricsUnavailable resumes when queries answer, and goes on",
                vec![
                    (0, Look),
                    (1, Measured(Err_)),
                    (3, Measured(Err_)),
                    (5, Measured(Pass)),
                    (10, Look),
                ],
                (Progressing, None, 50),
            ),
            (
                "a requested pause holds past the step's end",
                vec![
                    (0, Look),
                    (1, Measured(Pass)),
                    (2, Request("pause@1")),
                    (30, Look),
                ],
                (Paused, Some(PauseReason::Requested), 10),
            ),
            (
                "resume goes on",
                vec![
                    (0, Look),
                    (1, Measured(Pass)),
                    (2, Request("pause@1")),
                    (30, Request("resume@2")),
                    (31, Measured(Pass)),
                ],
                (Progressing, None, 50),
            ),
            (
                "abort sends the canary nothing",
                vec![
                    (0, Look),
                    (1, Measured(Pass)),
                    (10, Look),
                    (12, Request("abort@1")),
                ],
                (Aborted, None, 0),
            ),
            (
                "promote ends the step at once",
                vec![(0, Look), (2, Request("promote@1"))],
                (Progressing, None, 50),
            ),
            (
                "promote --full goes to 100",
                vec![(0, Look), (2, Request("promote-full@1"))],
                (Promoted, None, 100),
            ),
            (
                "a rolled-back revision stays rolled back",
                vec![
                    (0, Look),
                    (1, Measured(Fail)),
                    (3, Measured(Fail)),
                    (100, Look),
                ],
                (RolledBack, None, 0),
            ),
            (
                "retry starts the failed revision over",
                vec![
                    (0, Look),
                    (1, Measured(Fail)),
                    (3, Measured(Fail)),
                    (100, Request("retry@1")),
                ],
                (Progressing, None, 10),
            ),
            (
                "a new revision starts over after a rollback",
                vec![
                    (0, Look),
                    (1, Measured(Fail)),
                    (3, Measured(Fail)),
                    (100, Revision("r2")),
                ],
                (Progressing, None, 10),
            ),
            (
                "going back to the failed revision does not roll it out",
                vec![
                    (0, Look),
                    (1, Measured(Fail)),
                    (3, Measured(Fail)),
                    (100, Revision("r2")),
                    (101, Revision("r1")),
                ],
                (RolledBack, None, 0),
            ),
            (
                "no weight before the canary has replicas",
                vec![(0, Ready(0)), (30, Look)],
                (Progressing, None, 0),
            ),
            (
                "the next step waits for replicas, holding the last weight",
                vec![(0, Look), (1, Measured(Pass)), (9, Ready(0)), (10, Look)],
                (Progressing, None, 10),
            ),
            (
                "an unknown request is refused and changes nothing",
                vec![(0, Look), (2, Request("explode"))],
                (Progressing, None, 10),
            ),
            (
                "a request acted on is not acted on again",
                vec![
                    (0, Look),
                    (1, Request("pause@1")),
                    (2, Request("resume@2")),
                    (3, Request("pause@1")),
                ],
                (Progressing, None, 10),
            ),
            (
                "resume does not approve",
                vec![
                    (0, Look),
                    (1, Measured(Pass)),
                    (10, Look),
                    (11, Measured(Pass)),
                    (20, Look),
                    (21, Measured(Pass)),
                    (31, Measured(Pass)),
                    (32, Request("resume@1")),
                ],
                (Promoted, None, 100),
            ),
        ];
        for (what, happenings, expected) in cases {
            let seen = run(&p, &happenings);
            assert_eq!(last(&seen), expected, "{what}: {seen:?}");
        }
    }

    #[test]
    fn an_approval_step_waits_for_promote() {
        let mut p = plan(false);
        p.steps[1].approval = true;
        let seen = run(&p, &[(0, Look), (10, Look), (20, Look), (60, Look)]);
        assert_eq!(
            last(&seen),
            (Paused, Some(PauseReason::AwaitingApproval), 50)
        );
        let seen = run(
            &p,
            &[
                (0, Look),
                (10, Look),
                (20, Look),
                (60, Request("resume@1")),
                (61, Request("promote@2")),
            ],
        );
        assert_eq!(seen[3].1, Paused, "resume does not approve");
        assert_eq!(last(&seen), (Progressing, None, 100));
    }

    /// The weights a healthy rollout sends are exactly the steps, in order, each once.
    #[test]
    fn weights_follow_the_steps_and_never_go_down() {
        let seen = run(
            &plan(true),
            &[
                (0, Look),
                (1, Measured(Pass)),
                (3, Measured(Pass)),
                (5, Measured(Pass)),
                (10, Look),
                (11, Measured(Pass)),
                (20, Look),
                (21, Measured(Pass)),
                (30, Look),
            ],
        );
        let mut weights: Vec<i32> = seen.iter().map(|s| s.3).collect();
        assert!(weights.windows(2).all(|w| w[0] <= w[1]), "{weights:?}");
        weights.dedup();
        assert_eq!(weights, [10, 50, 100]);
    }

    /// An operator restarted mid-step reads the state back and goes on from it: same step, same
    /// start, no measurement before it is due.
    #[test]
    fn a_state_read_back_resumes_the_same_step() {
        let p = plan(true);
        let seen_state = {
            let first = advance(&p, None, &inputs(at(0), None));
            let second = advance(&p, Some(&first.state), &inputs(at(1), Some(Pass)));
            second.state
        };
        assert!(
            !measurement_due(&p, Some(&seen_state), at(2)),
            "due only one interval later"
        );
        assert!(measurement_due(&p, Some(&seen_state), at(3)));
        let resumed = advance(&p, Some(&seen_state), &inputs(at(4), None));
        assert_eq!(
            (
                resumed.state.step,
                resumed.state.step_start,
                resumed.canary_weight
            ),
            (0, at(0), 10)
        );
        assert_eq!(resumed.state.weight_since, Some(at(0)));
        let ended = advance(&p, Some(&resumed.state), &inputs(at(10), None));
        assert_eq!(
            ended.canary_weight, 50,
            "step 1 ends on time: its last measurement passed"
        );
    }

    /// With no warmup the first measurement falls in the second the weight was applied; the next
    /// is one interval later, not at once again (seen in the bench: five measurements, not one).
    #[test]
    fn a_measurement_in_the_weights_second_counts_for_its_step() {
        let mut p = plan(true);
        if let Some(a) = p.analysis.as_mut() {
            a.warmup = Duration::ZERO;
        }
        let started = advance(&p, None, &inputs(at(0), None));
        assert!(measurement_due(&p, Some(&started.state), at(0)));
        let measured = advance(&p, Some(&started.state), &inputs(at(0), Some(Pass)));
        assert!(!measurement_due(&p, Some(&measured.state), at(0)));
        assert!(!measurement_due(&p, Some(&measured.state), at(1)));
        assert!(measurement_due(&p, Some(&measured.state), at(2)));
    }

    fn inputs(now: SystemTime, verdict: Option<Verdict>) -> Inputs<'static> {
        Inputs {
            now,
            revision: "r1",
            request: None,
            canary_ready: 1,
            canary_problem: None,
            capacity: Capacity::Fixed(1),
            measurement: verdict.map(|verdict| Measurement {
                at: now,
                checks: vec![(
                    "error-rate".to_owned(),
                    Judged {
                        verdict,
                        value: None,
                        stable_value: None,
                        bound: String::new(),
                        samples: None,
                        stable_samples: None,
                        message: String::new(),
                    },
                )],
            }),
        }
    }

    /// The lab's checks with their actions: a failure rolls back, throttling steps back, cost warns.
    fn plan_with_actions() -> Plan {
        let mut p = plan(true);
        let template = p.analysis.as_ref().map(|a| a.checks[0].clone());
        if let (Some(a), Some(check)) = (p.analysis.as_mut(), template) {
            a.failure_limit = 0;
            a.checks = vec![
                check.clone(),
                Check {
                    name: "rate-limited".to_owned(),
                    action: Action::StepBack,
                    builtin: Some(Builtin::RateLimited),
                    ..check.clone()
                },
                Check {
                    name: "cost-per-request".to_owned(),
                    action: Action::Warn,
                    builtin: Some(Builtin::CostPerRequest),
                    ..check
                },
            ];
        }
        p
    }

    fn measured(now: SystemTime, verdicts: [Verdict; 3]) -> Inputs<'static> {
        let names = ["error-rate", "rate-limited", "cost-per-request"];
        let mut input = inputs(now, Some(Pass));
        input.measurement = Some(Measurement {
            at: now,
            checks: names
                .iter()
                .zip(verdicts)
                .map(|(name, verdict)| {
                    let mut judged = inputs(now, Some(verdict))
                        .measurement
                        .map(|m| m.checks[0].1.clone())
                        .unwrap_or_else(|| unreachable!());
                    judged.message = format!("{name} {verdict}");
                    ((*name).to_owned(), judged)
                })
                .collect(),
        });
        input
    }

    /// Each case: the verdicts of (error-rate, rate-limited, cost) measured at step 2 (50 %), and
    /// the phase, pause reason, weight and Event reasons that follow.
    #[test]
    fn a_checks_action_decides_what_its_failure_does() {
        let p = plan_with_actions();
        let at_step_two = || {
            let first = advance(&p, None, &inputs(at(0), None));
            let passed = advance(
                &p,
                Some(&first.state),
                &measured(at(10), [Pass, Pass, Pass]),
            );
            assert_eq!(passed.state.weight, 50, "{:?}", passed.state.message);
            passed.state
        };
        let cases = [
            (
                [Pass, Fail, Pass],
                Phase::Paused,
                Some(PauseReason::RateLimited),
                10,
                vec!["Paused"],
            ),
            (
                [Fail, Fail, Pass],
                Phase::RolledBack,
                None,
                0,
                vec!["RolledBack"],
            ),
            (
                [Pass, Pass, Fail],
                Phase::Progressing,
                None,
                50,
                vec!["CheckWarning"],
            ),
            // A warn-only check's doubt does not hold a step either.
            (
                [Pass, Pass, Inconclusive],
                Phase::Progressing,
                None,
                50,
                vec![],
            ),
        ];
        for (verdicts, phase, reason, weight, events) in cases {
            let state = at_step_two();
            let out = advance(&p, Some(&state), &measured(at(12), verdicts));
            assert_eq!(
                (out.state.phase, out.state.pause_reason, out.state.weight),
                (phase, reason, weight),
                "{verdicts:?}: {}",
                out.state.message
            );
            let reasons: Vec<&str> = out.notes.iter().map(|n| n.reason).collect();
            assert_eq!(reasons, events, "{verdicts:?}");
            if verdicts == [Pass, Pass, Fail] {
                assert_eq!(out.state.last_verdict, Some(Pass));
                // Said once, not at every measurement while it keeps failing.
                let again = advance(&p, Some(&out.state), &measured(at(14), verdicts));
                assert!(again.notes.iter().all(|n| n.reason != "CheckWarning"));
            }
        }
    }

    #[test]
    fn the_promotion_says_what_the_warn_only_checks_last_said() {
        let p = plan_with_actions();
        let first = advance(&p, None, &inputs(at(0), None));
        let half = advance(
            &p,
            Some(&first.state),
            &measured(at(10), [Pass, Pass, Pass]),
        );
        let full = advance(&p, Some(&half.state), &measured(at(20), [Pass, Pass, Pass]));
        assert_eq!(full.state.weight, 100, "{}", full.state.message);
        let done = advance(&p, Some(&full.state), &measured(at(30), [Pass, Pass, Pass]));
        let promoted = done
            .notes
            .iter()
            .find(|n| n.reason == "Promoted")
            .unwrap_or_else(|| panic!("no Promoted note: {:?}", done.notes));
        assert!(
            promoted
                .message
                .contains("cost-per-request: cost-per-request Pass"),
            "{}",
            promoted.message
        );
        assert!(
            !promoted.message.contains("error-rate Pass"),
            "{}",
            promoted.message
        );
    }

    #[test]
    fn a_stepped_back_rollout_resumes_by_request_and_holds_the_step_again() {
        let p = plan_with_actions();
        let first = advance(&p, None, &inputs(at(0), None));
        // Throttled at the first step: back to 0 %, paused.
        let back = advance(&p, Some(&first.state), &measured(at(2), [Pass, Fail, Pass]));
        assert_eq!(
            (back.state.phase, back.state.pause_reason, back.state.weight),
            (Phase::Paused, Some(PauseReason::RateLimited), 0)
        );
        assert!(
            back.state.message.contains("rate-limited Fail"),
            "{}",
            back.state.message
        );
        assert!(
            !measurement_due(&p, Some(&back.state), at(30)),
            "held, not measured"
        );
        let mut resume = inputs(at(40), None);
        resume.request = Some("resume@1");
        let resumed = advance(&p, Some(&back.state), &resume);
        assert_eq!(
            (
                resumed.state.phase,
                resumed.state.step,
                resumed.state.weight
            ),
            (Phase::Progressing, 0, 10)
        );
        assert_eq!(resumed.state.weight_since, Some(at(40)));
    }

    #[test]
    fn events_say_what_changed() {
        let p = plan(true);
        let first = advance(&p, None, &inputs(at(0), None));
        let reasons: Vec<&str> = first.notes.iter().map(|n| n.reason).collect();
        assert_eq!(reasons, ["RolloutStarted", "StepStarted"]);
        let quiet = advance(&p, Some(&first.state), &inputs(at(0), None));
        assert!(quiet.notes.is_empty(), "nothing changed: {:?}", quiet.notes);
        let failed = advance(&p, Some(&first.state), &inputs(at(1), Some(Fail)));
        let failed = advance(&p, Some(&failed.state), &inputs(at(3), Some(Fail)));
        assert_eq!(
            failed
                .notes
                .iter()
                .map(|n| (n.reason, n.warning))
                .collect::<Vec<_>>(),
            [("RolledBack", true)]
        );
        assert_eq!(failed.state.failed_revision.as_deref(), Some("r1"));
        assert!(
            failed.wake.is_none(),
            "a rolled-back release needs no more looks"
        );
    }

    /// Each case: capacity, weight, replicas needed.
    #[test]
    fn capacity_for_a_weight() {
        let auto = |stable, min, max| Capacity::Autoscaled { stable, min, max };
        let cases = [
            (Capacity::Fixed(2), 10, 2),
            (Capacity::Fixed(2), 0, 0),
            (auto(10, 1, 10), 10, 1),
            (auto(10, 1, 10), 25, 3),
            (auto(10, 1, 10), 100, 10),
            (auto(10, 2, 5), 100, 5),
            (auto(0, 1, 5), 50, 1),
        ];
        for (capacity, weight, needed) in cases {
            assert_eq!(
                capacity.replicas_for(weight),
                needed,
                "{capacity:?} at {weight}%"
            );
        }
    }

    /// A refused request is said once and not recorded; the next honest one is acted on and
    /// recorded.
    #[test]
    fn a_request_stamped_far_ahead_is_refused_once() {
        let p = plan(false);
        let ahead = "pause@1970-01-13T13:46:40.000Z";
        let look = |state: Option<&State>, secs: u64, request: &'static str| {
            advance(
                &p,
                state,
                &Inputs {
                    request: Some(request),
                    ..inputs(at(secs), None)
                },
            )
        };
        let first = look(None, 0, ahead);
        let refused: Vec<&Note> = first
            .notes
            .iter()
            .filter(|n| n.reason == "RequestIgnored")
            .collect();
        assert_eq!(refused.len(), 1, "{:?}", first.notes);
        assert!(
            refused[0].message.contains("stamped 1d ahead") && refused[0].message.contains("5m"),
            "{}",
            refused[0].message
        );
        assert_eq!(
            (first.state.phase, first.state.last_request.as_deref()),
            (Progressing, None)
        );
        assert_eq!(first.state.refused_request.as_deref(), Some(ahead));
        let again = look(Some(&first.state), 1, ahead);
        assert!(
            again.notes.iter().all(|n| n.reason != "RequestIgnored"),
            "said once: {:?}",
            again.notes
        );
        // A day later the stamp is no longer ahead; left in place, it is still not acted on.
        let caught_up = look(Some(&again.state), 86_400, ahead);
        assert_eq!(
            (
                caught_up.state.phase,
                caught_up.state.last_request.as_deref()
            ),
            (Progressing, None)
        );
        let honest = "pause@1970-01-12T13:46:42.000Z";
        let acted = look(Some(&again.state), 2, honest);
        assert_eq!(
            (acted.state.phase, acted.state.last_request.as_deref()),
            (Paused, Some(honest))
        );
    }

    /// A step start an hour ahead (written by a replica whose clock runs fast) counts from now:
    /// the step ends on time, and a note says what was moved.
    #[test]
    fn times_in_status_ahead_of_the_clock_count_from_now() {
        let p = plan(false);
        let started = advance(&p, None, &inputs(at(0), None));
        let mut skewed = started.state.clone();
        skewed.step_start = at(3_600);
        skewed.weight_since = Some(at(3_600));
        let now = advance(&p, Some(&skewed), &inputs(at(0), None));
        let note = now.notes.iter().find(|n| n.reason == "ClockSkew");
        assert!(
            note.is_some_and(|n| n.warning
                && n.message.contains("stepStartTime by 1h")
                && n.message.contains("weightAppliedTime by 1h")),
            "{:?}",
            now.notes
        );
        assert_eq!(now.state.weight_since, Some(at(0)));
        let later = advance(&p, Some(&now.state), &inputs(at(10), None));
        assert_eq!(later.canary_weight, 50, "the 10 s step ended after 10 s");
        assert!(later.notes.iter().all(|n| n.reason != "ClockSkew"));
    }

    /// Past the deadline with `abort`, the canary goes to 0 % and the Deployment's words are in
    /// the message; before it, the waiting message quotes them too.
    #[test]
    fn the_progress_deadline_quotes_the_deployment_and_can_abort() {
        let mut p = plan(false);
        p.deadline = Deadline {
            after: Duration::from_secs(30),
            abort: true,
        };
        let quota = "FailedCreate: pods \"chat-v2-x\" is forbidden: exceeded quota: q";
        let waiting = |secs| Inputs {
            canary_ready: 0,
            canary_problem: Some(quota),
            ..inputs(at(secs), None)
        };
        let first = advance(&p, None, &waiting(0));
        assert!(
            first.state.message.contains("0/1 ready") && first.state.message.contains(quota),
            "{}",
            first.state.message
        );
        assert_eq!(first.wake, Some(at(10)));
        let late = advance(&p, Some(&first.state), &waiting(30));
        assert_eq!((late.state.phase, late.canary_weight), (Aborted, 0));
        assert!(
            late.state
                .message
                .contains("within the progress deadline (30s)")
                && late.state.message.contains(quota),
            "{}",
            late.state.message
        );
        assert!(
            late.notes
                .iter()
                .any(|n| n.warning && n.reason == "ProgressDeadlineExceeded"),
            "{:?}",
            late.notes
        );
    }

    /// Each case: the request, the last one acted on, whether it is new.
    #[test]
    fn only_later_requests_are_new() {
        let cases = [
            ("pause@2026-11-30T17:00:00Z", None, true),
            (
                "pause@2026-11-30T17:00:00Z",
                Some("pause@2026-11-30T17:00:00Z"),
                false,
            ),
            (
                "resume@2026-11-30T17:00:01Z",
                Some("pause@2026-11-30T17:00:00Z"),
                true,
            ),
            (
                "pause@2026-11-30T17:00:00Z",
                Some("resume@2026-11-30T17:00:01Z"),
                false,
            ),
            ("pause@9", Some("resume@10"), false),
            ("pause@11", Some("resume@10"), true),
            ("pause", Some("resume"), true),
            ("pause", Some("pause"), false),
            // Recorded before such stamps were refused: a day ahead of the clock, it outranks
            // nothing.
            (
                "pause@2026-11-30T17:00:00Z",
                Some("resume@2026-12-01T17:00:00Z"),
                true,
            ),
        ];
        let now = clock::stamp_time("now@2026-11-30T17:00:05Z").unwrap_or_else(|| panic!("a time"));
        for (text, last, new) in cases {
            assert_eq!(is_new(text, last, now), new, "{text} after {last:?}");
        }
    }

    #[test]
    fn without_a_canary_the_rollout_is_idle_and_remembers() {
        let p = plan(true);
        let failed = advance(&p, None, &inputs(at(0), None));
        let failed = advance(&p, Some(&failed.state), &inputs(at(1), Some(Fail)));
        let failed = advance(&p, Some(&failed.state), &inputs(at(3), Some(Fail)));
        let idle = idle(Some(&failed.state), at(10));
        assert_eq!((idle.state.phase, idle.canary_weight), (Idle, 0));
        assert_eq!(idle.state.failed_revision.as_deref(), Some("r1"));
        assert_eq!(
            idle.notes.iter().map(|n| n.reason).collect::<Vec<_>>(),
            ["Finalized"]
        );
        let again = super::idle(Some(&idle.state), at(20));
        assert!(again.notes.is_empty());
        assert_eq!(
            again.state, idle.state,
            "a steady idle state: no status writes"
        );
        let back = advance(&p, Some(&again.state), &inputs(at(30), None));
        assert_eq!(
            back.state.phase, RolledBack,
            "the failed revision is not rolled out again"
        );
    }

    #[test]
    fn requests_parse() {
        let cases = [
            ("pause", Ok(Verb::Pause)),
            ("promote@2026-11-30T17:00:00Z", Ok(Verb::Promote)),
            ("promote-full@1", Ok(Verb::PromoteFull)),
            (" abort ", Ok(Verb::Abort)),
            ("finalize@1", Err(())),
            ("", Err(())),
        ];
        for (text, expected) in cases {
            assert_eq!(
                Verb::parse_request(text).map_err(|_| ()),
                expected,
                "{text:?}"
            );
        }
        for phase in Phase::ALL {
            assert_eq!(Phase::parse(phase.as_str()), Some(phase));
        }
    }
}
