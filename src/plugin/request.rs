//! `pause`, `resume`, `promote [--full]`, `abort`, `retry`: ask an automatic rollout for something
//! without editing its spec. The request is an annotation (`canary.dev/request: VERB@TIME`) that the
//! operator acts on once and records in `status.rollout.lastRequest`; the plugin waits for that
//! record and reports where the rollout then stands. The time makes each request new, and later
//! than any before it, so a GitOps tool re-applying an old annotation cannot replay it. It is the
//! API server's time, not this machine's: the operator refuses requests stamped well ahead of its
//! own clock, and a laptop's clock may be off by hours.

use std::fmt;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::Error;
use super::cluster::Target;
use crate::api::{CanaryRelease, RolloutStatus};
use crate::labels;
use crate::rollout::Verb;
use crate::rollout::clock::{MAX_REQUEST_SKEW, stamp_time};

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
    let now = target.server_time().await.unwrap_or_else(Timestamp::now);
    let text = request_text(verb, stamp(now, &release));
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
        if rollout.as_ref().and_then(|r| r.refused_request.as_deref()) == Some(text.as_str()) {
            return Err(Error::Usage(format!(
                "the operator did not act on {text}: the stamp is more than {} ahead of its clock, which differs from the API server's; see the release's Events (`kubectl describe canaryrelease {name}`)",
                super::duration::display(MAX_REQUEST_SKEW)
            )));
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
                        "the rollout is {} (last request acted on: {}); is the operator running?",
                        r.phase,
                        r.last_request.as_deref().unwrap_or("none")
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

/// The request's time: the API server's `now`, made later than any stamp the release already
/// carries (its annotation, its last request), so two requests within the server clock's second
/// still sort in the order they were made. A stamp too far ahead of `now` is not followed: that
/// is the wrong clock the operator refuses.
fn stamp(now: Timestamp, release: &CanaryRelease) -> Timestamp {
    let annotation = release
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::REQUEST));
    let last = release
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .and_then(|r| r.last_request.as_ref());
    let limit = std::time::SystemTime::from(now) + MAX_REQUEST_SKEW;
    let latest = [annotation, last]
        .into_iter()
        .flatten()
        .filter_map(|text| stamp_time(text))
        .filter(|t| *t <= limit)
        .max();
    let after_latest = latest
        .map(|t| t + Duration::from_millis(1))
        .and_then(|t| Timestamp::try_from(t).ok());
    match after_latest {
        Some(t) if t > now => t,
        _ => now,
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

    /// Each case: the release's annotation and last request, and the stamp a request made when
    /// the API server says 23:00:09 gets.
    #[test]
    fn requests_are_stamped_with_the_servers_time_and_after_the_last() {
        let now: Timestamp = "2026-12-07T23:00:09Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            (None, None, "2026-12-07T23:00:09.000Z"),
            (
                Some("pause@2026-12-07T22:00:00.000Z"),
                Some("pause@2026-12-07T22:00:00.000Z"),
                "2026-12-07T23:00:09.000Z",
            ),
            (
                Some("pause@2026-12-07T23:00:09.000Z"),
                None,
                "2026-12-07T23:00:09.001Z",
            ),
            (
                None,
                Some("resume@2026-12-07T23:00:09.250Z"),
                "2026-12-07T23:00:09.251Z",
            ),
            // A day ahead: a wrong clock's, not followed.
            (
                Some("pause@2026-12-08T23:00:00.000Z"),
                None,
                "2026-12-07T23:00:09.000Z",
            ),
        ];
        for (annotation, last, expected) in cases {
            let mut release = crate::reconcile::testing::lab_release();
            release.metadata.annotations =
                annotation.map(|a| [(labels::REQUEST.to_owned(), a.to_owned())].into());
            release.status = Some(crate::api::CanaryReleaseStatus {
                rollout: Some(RolloutStatus {
                    last_request: last.map(str::to_owned),
                    ..RolloutStatus::default()
                }),
                ..crate::api::CanaryReleaseStatus::default()
            });
            let text = request_text(Verb::Pause, stamp(now, &release));
            assert_eq!(text, format!("pause@{expected}"), "{annotation:?} {last:?}");
        }
    }
}
