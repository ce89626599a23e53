//! A measurement taken into the state: a check's passes, failures and inconclusive results
//! counted, and what their limits then do to the rollout.

use super::analysis::{Verdict, overall};
use super::state::{CheckState, Measurement, Note, PauseReason, Phase, State};
use super::transitions::{pause, resume, step_back};
use super::{Action, Builtin, Check, Plan};

/// Whether measurements are taken and counted in this state.
pub(super) fn measuring(s: &State) -> bool {
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

pub(super) fn record(
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

pub(super) fn no_data_message(s: &State, analysis: &super::Analysis, why: &str) -> String {
    format!(
        "{} inconclusive measurements at step {} (inconclusiveLimit {}), weight held: {why}",
        s.inconclusive,
        s.step + 1,
        analysis.inconclusive_limit
    )
}
