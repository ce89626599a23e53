//! `pause`, `resume`, `promote [--full]`, `abort`, `retry`: ask an automatic rollout for something
//! without editing its spec. The request is an annotation (`canary.dev/request: VERB@TIME`) that the
//! operator acts on once and records in `status.rollout.lastRequest`; the plugin waits for that
//! record and reports where the rollout then stands. The time makes each request new, and later
//! than any before it, so a GitOps tool re-applying an old annotation cannot replay it.

use std::fmt;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::Error;
use super::cluster::Target;
use crate::api::RolloutStatus;
use crate::labels;
use crate::rollout::Verb;

/// How often the plugin looks for the operator's acknowledgement.
const POLL: Duration = Duration::from_millis(250);

/// The request's text: the verb and the current time, to the millisecond, in a fixed width so
/// later requests sort after earlier ones.
pub fn request_text(verb: Verb, now: Timestamp) -> String {
    format!(
        "{}@{}",
        verb.as_str(),
        now.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
    )
}

/// What became of a request.
#[derive(Debug)]
pub struct Answer {
    pub name: String,
    pub request: String,
    /// The rollout as the operator left it, once it recorded the request.
    pub rollout: Option<RolloutStatus>,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "canaryrelease {} asked to {}", self.name, self.request)?;
        if let Some(r) = &self.rollout {
            write!(f, "; rollout {}", r.phase)?;
            if let Some(why) = &r.pause_reason {
                write!(f, " ({why})")?;
            }
            write!(f, " at step {}/{}, canary {}%", r.step, r.steps, r.weight)?;
            if !r.message.is_empty() {
                write!(f, ": {}", r.message)?;
            }
        }
        Ok(())
    }
}

/// Sends `verb` to release `name`; with `wait`, returns once the operator has recorded it.
pub async fn request(
    target: &Target,
    name: &str,
    verb: Verb,
    wait: Option<Duration>,
) -> Result<Answer, Error> {
    let release = target.release(name).await?;
    if release.spec.strategy.is_none() {
        return Err(Error::Usage(format!(
            "canaryrelease {name} is steered by hand (spec.weight): {} applies only to an automatic release (spec.strategy); use `kubectl canary set-weight`",
            verb.as_str()
        )));
    }
    if release.spec.canary.is_none() {
        return Err(Error::Usage(format!(
            "canaryrelease {name} has no canary: there is no rollout to {}",
            verb.as_str()
        )));
    }
    let text = request_text(verb, Timestamp::now());
    // A merge patch of one annotation, as `kubectl annotate --overwrite` sends.
    let patch = json!({"metadata": {"annotations": {labels::REQUEST: text}}});
    target.merge_patch(name, &patch).await?;
    let mut answer = Answer {
        name: name.to_owned(),
        request: text.clone(),
        rollout: None,
    };
    let Some(timeout) = wait else {
        return Ok(answer);
    };
    let deadline = Instant::now() + timeout;
    loop {
        let current = target.release(name).await?;
        let rollout = current.status.and_then(|s| s.rollout);
        if rollout.as_ref().and_then(|r| r.last_request.as_deref()) == Some(text.as_str()) {
            answer.rollout = rollout;
            return Ok(answer);
        }
        if Instant::now() >= deadline {
            return Err(Error::WaitTimeout {
                what: format!(
                    "the operator to act on {} of {}",
                    text,
                    current.metadata.name.unwrap_or_default()
                ),
                after: timeout,
                seen: match rollout {
                    Some(r) => format!(
                        "the rollout is {} (last request {:?}); is the operator running?",
                        r.phase, r.last_request
                    ),
                    None => {
                        "the release has no rollout status; is the operator running?".to_owned()
                    }
                },
            });
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_a_fixed_width_time() {
        let at = |s: &str| {
            s.parse::<Timestamp>()
                .unwrap_or_else(|e| panic!("{s}: {e}"))
        };
        let early = request_text(Verb::Pause, at("2026-11-30T17:00:00Z"));
        let late = request_text(Verb::Resume, at("2026-11-30T17:00:00.25Z"));
        assert_eq!(early, "pause@2026-11-30T17:00:00.000Z");
        assert_eq!(late, "resume@2026-11-30T17:00:00.250Z");
        assert_eq!(Verb::parse_request(&early), Ok(Verb::Pause));
        let stamp = |t: &str| {
            t.split_once('@')
                .map(|(_, s)| s.to_owned())
                .unwrap_or_default()
        };
        assert!(stamp(&late) > stamp(&early));
        assert_eq!(stamp(&late).len(), stamp(&early).len());
    }
}
