//! The rollout state machine: one pure function, [`advance`], from the plan, the state the
//! release's status holds, and what was observed now, to the next state, the canary's weight and
//! what to tell the user. docs/rollouts.md draws it.
//!
//! Rules it keeps, whatever the inputs:
//! - Not being able to see (query errors, no data) never rolls back and never promotes: it holds
//!   the weight and pauses.
//! - The weight only goes up during a rollout, and only once the canary has the replicas for it.
//! - A failed revision is never rolled out again by itself: only `retry` or a new revision does.
//! - A request (pause, resume, ...) is acted on once: its text is recorded and not acted on again.

use std::time::{Duration, SystemTime};

use super::analysis::Verdict;
use super::clock::human;
use super::requests::{is_new, pull_back_future_times, take_request};
use super::state::{Capacity, Inputs, Note, Outcome, PauseReason, Phase, State};
use super::transitions::{
    fresh, next_step, pause, promoted, resume, rolled_back_before, start, target,
};
use super::verdicts::{measuring, record};
use super::{Plan, Step};

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

/// Whether the observe step should measure now.
pub fn measurement_due(plan: &Plan, state: Option<&State>, now: SystemTime) -> bool {
    state.is_some_and(|s| next_measurement(plan, s).is_some_and(|due| due <= now))
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
    use super::super::state::{Measurement, Verb};
    use super::super::{Action, Analysis, Builtin, Check, Deadline, clock};
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
