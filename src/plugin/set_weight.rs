//! `set-weight`: changes `spec.weight` and (by default) waits until the traffic split really
//! carries it.
//!
//! "Carries it" is judged on the route itself (the VirtualService, or the HTTPRoute with the
//! Gateway API provider), not on the release's status: the status is the operator's account of
//! the split, the route is what the mesh or the gateway routes by.

use std::time::Duration;

use kube::ResourceExt;
use serde_json::json;
use tokio::time::Instant;

use super::Error;
use super::cluster::Target;
use crate::api::{CanaryRelease, TrafficProvider};
use crate::reconcile::conditions::{DEGRADED, READY, WAITING_FOR_THE_USER};
use crate::reconcile::traffic::{Split, read_applied};

/// How often to look again while waiting; a weight change costs the operator one write, so it
/// usually lands within the first few polls.
const POLL: Duration = Duration::from_millis(250);

/// Attempts at the patch when someone else changed the release between our read and our write.
const CONFLICT_RETRIES: u32 = 5;

/// What `set-weight` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub name: String,
    pub old: i32,
    pub new: i32,
    /// The version names, stable then canary, for the message.
    pub stable: String,
    pub canary: String,
    /// Whether the route was seen carrying the new weight.
    pub applied: bool,
    /// The kind of the route: VirtualService or HTTPRoute.
    pub route: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unchanged = if self.old == self.new {
            " (unchanged)"
        } else {
            ""
        };
        write!(
            f,
            "canaryrelease/{}: weight {} → {}{unchanged}",
            self.name, self.old, self.new
        )?;
        if self.applied {
            write!(
                f,
                "; the {} sends {}% to {} and {}% to {}",
                self.route,
                100 - self.new,
                self.stable,
                self.new,
                self.canary
            )?;
        }
        Ok(())
    }
}

/// Sets the canary's weight of release `name` to `weight`; with `wait`, returns once the
/// route carries it, or fails after that long.
pub async fn set_weight(
    target: &Target,
    name: &str,
    weight: i32,
    wait: Option<Duration>,
) -> Result<Change, Error> {
    let (before, after) = patch_weight(target, name, weight).await?;
    let mut change = Change {
        name: name.to_owned(),
        old: before.spec.weight.unwrap_or_default(),
        new: weight,
        stable: after.spec.stable.name.clone(),
        canary: after
            .spec
            .canary
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_default(),
        applied: false,
        route: route_kind(&after),
    };
    if let Some(timeout) = wait {
        wait_applied(target, &after, timeout).await?;
        change.applied = true;
    }
    Ok(change)
}

/// Patches `spec.weight` with the resourceVersion of the copy just read, so the reported old
/// weight is exactly the one replaced; a concurrent change makes the patch fail with 409 and it is
/// retried on a fresh read.
async fn patch_weight(
    target: &Target,
    name: &str,
    weight: i32,
) -> Result<(CanaryRelease, CanaryRelease), Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = target.release(name).await?;
        if before.spec.strategy.is_some() {
            return Err(Error::Usage(format!(
                "canaryrelease {name} is automatic (spec.strategy): its weight follows the steps. Steer it with `kubectl canary pause|resume|promote|abort|retry {name}`, or remove spec.strategy and set spec.weight to steer it by hand"
            )));
        }
        let patch = json!({
            "metadata": {"resourceVersion": before.resource_version()},
            "spec": {"weight": weight},
        });
        match target.merge_patch(name, &patch).await {
            Ok(after) => return Ok((before, after)),
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < CONFLICT_RETRIES => {
                continue;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// The kind of object that carries `release`'s split.
fn route_kind(release: &CanaryRelease) -> String {
    TrafficProvider::of_release(release).route_resource().kind
}

/// Polls until the route of `release` sends the release's weight to its canary.
async fn wait_applied(
    target: &Target,
    release: &CanaryRelease,
    timeout: Duration,
) -> Result<(), Error> {
    let name = release.name_any();
    let generation = release.metadata.generation;
    let kind = route_kind(release);
    let deadline = Instant::now() + timeout;
    loop {
        let split = read_applied(&target.client, release).await?;
        let weight = release.spec.weight.unwrap_or_default();
        if split
            == Some(Split {
                stable: Some(100 - weight),
                canary: Some(weight),
            })
        {
            return Ok(());
        }
        let current = target.releases().get_opt(&name).await?;
        if let Some(refusal) = current.as_ref().and_then(|r| blocking(r, generation)) {
            return Err(refusal);
        }
        if Instant::now() >= deadline {
            return Err(Error::WaitTimeout {
                what: format!(
                    "{kind} {name} to send {}% to {}",
                    weight,
                    release
                        .spec
                        .canary
                        .as_ref()
                        .map_or("the canary", |c| c.name.as_str())
                ),
                after: timeout,
                seen: describe(&kind, split, current.as_ref(), generation),
            });
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// The refusal, when the operator has seen `generation` and reported that it will not apply it.
fn blocking(release: &CanaryRelease, generation: Option<i64>) -> Option<Error> {
    let status = release.status.as_ref()?;
    if status.observed_generation < generation {
        return None;
    }
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == DEGRADED && c.status == "True")?;
    // Waiting for these to resolve would only run out the timeout.
    WAITING_FOR_THE_USER
        .contains(&degraded.reason.as_str())
        .then(|| Error::Refused {
            reason: degraded.reason.clone(),
            message: degraded.message.clone(),
        })
}

/// What was seen at the timeout, worded to point at the likely cause.
fn describe(
    kind: &str,
    split: Option<Split>,
    release: Option<&CanaryRelease>,
    generation: Option<i64>,
) -> String {
    let routes = match split {
        None => format!("there is no {kind} with the release's name"),
        Some(Split { stable, canary }) => format!(
            "it sends {} to stable and {} to canary",
            stable.map_or("nothing".into(), |w| format!("{w}%")),
            canary.map_or("nothing".into(), |w| format!("{w}%"))
        ),
    };
    let operator = match release.and_then(|r| r.status.as_ref()) {
        Some(status) if status.observed_generation >= generation => status
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .map(|c| {
                format!(
                    "the release is Ready={} ({}): {}",
                    c.status, c.reason, c.message
                )
            })
            .unwrap_or_else(|| "the release has no Ready condition".into()),
        _ => "the operator has not processed the change; is it running?".to_owned(),
    };
    format!("{routes}; {operator}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn release(status: serde_json::Value) -> CanaryRelease {
        serde_json::from_value(json!({
            "apiVersion": "canary.dev/v1alpha1",
            "kind": "CanaryRelease",
            "metadata": {"name": "chat", "namespace": "ns", "generation": 4},
            "spec": {
                "image": "chat:1", "port": 5000, "weight": 50,
                "stable": {"name": "v1", "model": "gpt-4.1"},
                "canary": {"name": "v2", "model": "gpt-4o"},
                "gateway": {"existing": ["gw"]},
            },
            "status": status,
        }))
        .unwrap_or_else(|e| panic!("fixture: {e}"))
    }

    fn degraded(reason: &str, observed: i64) -> serde_json::Value {
        json!({
            "observedGeneration": observed,
            "conditions": [
                {"type": "Ready", "status": "False", "reason": reason, "message": "why",
                 "lastTransitionTime": "2025-01-01T00:00:00Z"},
                {"type": "Degraded", "status": "True", "reason": reason, "message": "why",
                 "lastTransitionTime": "2025-01-01T00:00:00Z"},
            ],
        })
    }

    #[test]
    fn only_refusals_for_the_new_generation_stop_the_wait() {
        let r = release(degraded("OwnershipConflict", 4));
        assert!(matches!(
            blocking(&r, Some(4)),
            Some(Error::Refused { reason, .. }) if reason == "OwnershipConflict"
        ));
        assert!(
            blocking(&release(degraded("OwnershipConflict", 3)), Some(4)).is_none(),
            "a refusal of an older generation says nothing about the new weight"
        );
        assert!(
            blocking(&release(degraded("ApplyFailed", 4)), Some(4)).is_none(),
            "a failed apply is retried by the operator"
        );
    }

    #[test]
    fn timeout_message_points_at_the_cause() {
        let text = describe(
            "VirtualService",
            Some(Split {
                stable: Some(75),
                canary: Some(25),
            }),
            Some(&release(json!(null))),
            Some(4),
        );
        assert_eq!(
            text,
            "it sends 75% to stable and 25% to canary; the operator has not processed the change; is it running?"
        );
        let text = describe(
            "HTTPRoute",
            None,
            Some(&release(degraded("ApplyFailed", 4))),
            Some(4),
        );
        assert_eq!(
            text,
            "there is no HTTPRoute with the release's name; the release is Ready=False (ApplyFailed): why"
        );
    }

    #[test]
    fn change_reads_old_to_new() {
        let change = Change {
            name: "chat".into(),
            old: 25,
            new: 50,
            stable: "v1".into(),
            canary: "v2".into(),
            applied: true,
            route: "VirtualService".into(),
        };
        assert_eq!(
            change.to_string(),
            "canaryrelease/chat: weight 25 → 50; the VirtualService sends 50% to v1 and 50% to v2"
        );
        let same = Change {
            old: 50,
            applied: false,
            ..change
        };
        assert_eq!(
            same.to_string(),
            "canaryrelease/chat: weight 50 → 50 (unchanged)"
        );
    }
}
