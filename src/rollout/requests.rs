//! A person's requests (`kubectl canary pause|resume|promote|abort|retry`), each acted on once,
//! and times written by other clocks brought back to the operator's.

use std::time::SystemTime;

use super::Plan;
use super::clock::{self, human};
use super::state::{Note, PauseReason, Phase, State, Verb};
use super::transitions::{next_step, pause, resume, start};

/// Acts on a new request, unless its stamp is too far ahead of the operator's clock: recorded as
/// the last request, it would make every honest request after it look older, and be ignored, for
/// as long as the stamp is ahead. A refused request is reported once, not recorded, and stays
/// refused: left in place, it would otherwise be acted on by surprise once the clock caught up.
pub(super) fn take_request(
    plan: &Plan,
    s: &mut State,
    text: &str,
    now: SystemTime,
    notes: &mut Vec<Note>,
) {
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
pub(super) fn pull_back_future_times(s: &mut State, now: SystemTime, notes: &mut Vec<Note>) {
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

pub(super) fn act(plan: &Plan, s: &mut State, verb: Verb, now: SystemTime, notes: &mut Vec<Note>) {
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
pub(super) fn is_new(text: &str, last: Option<&str>, now: SystemTime) -> bool {
    let stamp = |t: &str| t.split_once('@').map(|(_, stamp)| stamp.trim().to_owned());
    match (last, stamp(text), last.and_then(stamp)) {
        (None, _, _) => true,
        (Some(last), _, _) if last == text => false,
        (Some(last), _, _) if clock::request_too_far_ahead(last, now).is_some() => true,
        (Some(_), Some(new), Some(old)) => (new.len(), &new) > (old.len(), &old),
        _ => true,
    }
}
