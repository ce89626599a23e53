//! The rollout's state as the release's status holds it, and back. Times are kept to the second,
//! as Kubernetes writes them, so a state read back equals the one written and a steady rollout
//! costs no status writes.

use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::{CheckStatus, RolloutStatus};
use crate::rollout::{CheckState, Judged, PauseReason, Phase, Plan, State, Verdict};

/// The state in status; `None` when there is none or it cannot be read (a rollout then starts over,
/// at weight 0, which is safe).
pub fn state_of(status: &RolloutStatus) -> Option<State> {
    let phase = Phase::parse(&status.phase)?;
    let count = |n: i32| u32::try_from(n).unwrap_or_default();
    Some(State {
        phase,
        pause_reason: status.pause_reason.as_deref().and_then(PauseReason::parse),
        message: status.message.clone(),
        revision: status.revision.clone(),
        failed_revision: status.failed_revision.clone(),
        step: usize::try_from(status.step - 1).unwrap_or_default(),
        step_start: status.step_start_time.as_ref().map(system_time)?,
        weight_since: status.weight_applied_time.as_ref().map(system_time),
        weight: status.weight.clamp(0, 100),
        full: status.full_promotion,
        last_measurement: status.last_measurement_time.as_ref().map(system_time),
        last_verdict: status.last_verdict.as_deref().and_then(Verdict::parse),
        failures: count(status.failures),
        inconclusive: count(status.inconclusive),
        errors: count(status.consecutive_errors),
        last_request: status.last_request.clone(),
        refused_request: status.refused_request.clone(),
        checks: status
            .checks
            .iter()
            .map(|c| CheckState {
                name: c.name.clone(),
                judged: Judged {
                    verdict: Verdict::parse(&c.verdict).unwrap_or(Verdict::Inconclusive),
                    value: c.value,
                    stable_value: c.stable_value,
                    bound: c.bound.clone(),
                    samples: c.sample_size.and_then(|n| u64::try_from(n).ok()),
                    stable_samples: c.stable_sample_size.and_then(|n| u64::try_from(n).ok()),
                    message: c.message.clone(),
                },
                compared: c.last_comparison.clone(),
                passes: count(c.passes),
                failures: count(c.failures),
                inconclusive: count(c.inconclusive),
                errors: count(c.errors),
            })
            .collect(),
    })
}

pub fn status_of(state: &State, plan: &Plan) -> RolloutStatus {
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let steps = plan.steps.len();
    let action = |name: &str| {
        plan.analysis
            .iter()
            .flat_map(|a| &a.checks)
            .find(|c| c.name == name)
            .map_or("", |c| c.action.as_str())
            .to_owned()
    };
    let size = |n: Option<u64>| n.and_then(|n| i64::try_from(n).ok());
    RolloutStatus {
        phase: state.phase.as_str().to_owned(),
        pause_reason: state.pause_reason.map(|r| r.as_str().to_owned()),
        message: state.message.clone(),
        revision: state.revision.clone(),
        failed_revision: state.failed_revision.clone(),
        step: i32::try_from(state.step + 1).unwrap_or(i32::MAX),
        steps: i32::try_from(steps).unwrap_or(i32::MAX),
        step_start_time: Some(time(state.step_start)),
        weight_applied_time: state.weight_since.map(time),
        weight: state.weight,
        full_promotion: state.full,
        last_measurement_time: state.last_measurement.map(time),
        last_verdict: state.last_verdict.map(|v| v.as_str().to_owned()),
        failures: count(state.failures),
        inconclusive: count(state.inconclusive),
        consecutive_errors: count(state.errors),
        last_request: state.last_request.clone(),
        refused_request: state.refused_request.clone(),
        checks: state
            .checks
            .iter()
            .map(|c| CheckStatus {
                name: c.name.clone(),
                verdict: c.judged.verdict.as_str().to_owned(),
                value: c.judged.value.filter(|v| v.is_finite()),
                stable_value: c.judged.stable_value.filter(|v| v.is_finite()),
                message: c.judged.message.clone(),
                bound: c.judged.bound.clone(),
                sample_size: size(c.judged.samples),
                stable_sample_size: size(c.judged.stable_samples),
                action: action(&c.name),
                last_comparison: c.compared.clone(),
                passes: count(c.passes),
                failures: count(c.failures),
                inconclusive: count(c.inconclusive),
                errors: count(c.errors),
            })
            .collect(),
    }
}

/// Truncated to the second, as status keeps it.
pub fn to_second(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn time(t: SystemTime) -> Time {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Time(Timestamp::from_second(i64::try_from(secs).unwrap_or_default()).unwrap_or_default())
}

fn system_time(t: &Time) -> SystemTime {
    let secs = u64::try_from(t.0.as_second()).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_survives_status() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s);
        let state = State {
            phase: Phase::Paused,
            pause_reason: Some(PauseReason::MetricsUnavailable),
            message: "held".to_owned(),
            revision: "abc".to_owned(),
            failed_revision: Some("old".to_owned()),
            step: 1,
            step_start: at(0),
            weight_since: Some(at(2)),
            weight: 50,
            full: false,
            last_measurement: Some(at(7)),
            last_verdict: Some(Verdict::Error),
            failures: 1,
            inconclusive: 2,
            errors: 3,
            last_request: Some("pause@1".to_owned()),
            refused_request: Some("abort@2099-01-01T00:00:00.000Z".to_owned()),
            checks: vec![CheckState {
                name: "error-rate".to_owned(),
                judged: Judged {
                    verdict: Verdict::Error,
                    value: Some(0.5),
                    stable_value: None,
                    bound: "≤ 2%".to_owned(),
                    samples: Some(400),
                    stable_samples: None,
                    message: "m".to_owned(),
                },
                compared: Some("canary 1% vs stable 2%".to_owned()),
                passes: 1,
                failures: 1,
                inconclusive: 2,
                errors: 3,
            }],
        };
        let plan = Plan {
            steps: vec![
                crate::rollout::Step {
                    weight: 10,
                    duration: Duration::from_secs(1),
                    approval: false,
                };
                3
            ],
            analysis: None,
            deadline: crate::rollout::Deadline::default(),
        };
        let status = status_of(&state, &plan);
        assert_eq!((status.step, status.steps), (2, 3));
        assert_eq!(state_of(&status), Some(state));
        let mut unreadable = status.clone();
        unreadable.phase = "Sideways".to_owned();
        assert_eq!(state_of(&unreadable), None);
    }

    #[test]
    fn times_keep_whole_seconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_750);
        assert_eq!(system_time(&time(t)), to_second(t));
        assert_eq!(
            to_second(t),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
    }
}
