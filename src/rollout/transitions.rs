//! The moves every path of the state machine shares: starting over, pausing and resuming, the
//! next step, a step back, promotion.

use std::time::SystemTime;

use super::state::{Note, PauseReason, Phase, State};
use super::{Action, Plan, Step};

pub(super) fn start(
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
pub(super) fn fresh(
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

pub(super) fn rolled_back_before(s: &mut State) {
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

pub(super) fn pause(s: &mut State, reason: PauseReason, message: String, notes: &mut Vec<Note>) {
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

pub(super) fn resume(s: &mut State, why: &str, notes: &mut Vec<Note>) {
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

pub(super) fn next_step(plan: &Plan, s: &mut State, now: SystemTime, notes: &mut Vec<Note>) {
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
pub(super) fn step_back(
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

pub(super) fn promoted(plan: &Plan, s: &mut State, notes: &mut Vec<Note>) {
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
pub(super) fn target<'a>(plan: &'a Plan, s: &State) -> &'a Step {
    &plan.steps[s.step.min(plan.steps.len().saturating_sub(1))]
}
