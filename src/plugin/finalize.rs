//! `finalize`: ends a promoted rollout the way it is meant to end, by an ordinary spec edit made as
//! the user: `stable` takes the canary's spec and `canary` is removed. The canary's version already
//! serves everything, so no traffic moves; the operator then removes the old version's objects.
//! With `--print` nothing is changed and the edited release is printed, for a pull request to the
//! repository a GitOps tool applies from.

use std::fmt;

use kube::ResourceExt;
use serde_json::json;

use super::Error;
use super::cluster::Target;
use crate::api::CanaryRelease;

/// The release as finalising it makes it, or why it cannot be finalised yet.
pub fn finalized(release: &CanaryRelease) -> Result<CanaryRelease, Error> {
    let name = release.name_any();
    let Some(canary) = release.spec.canary.clone() else {
        return Err(Error::Usage(format!(
            "canaryrelease {name} has no canary: there is nothing to finalize"
        )));
    };
    let status = release.status.clone().unwrap_or_default();
    let serving = status.canary_weight == Some(100);
    match (&release.spec.strategy, status.rollout.as_ref()) {
        (Some(_), Some(r)) if r.phase == "Promoted" && serving => {}
        (Some(_), rollout) => {
            return Err(Error::Usage(format!(
                "the rollout of canaryrelease {name} is {}, not Promoted with 100% to the canary: finalize would move traffic; wait for promotion, or `kubectl canary promote {name} --full` first",
                rollout.map_or("not started", |r| r.phase.as_str())
            )));
        }
        (None, _) if serving => {}
        (None, _) => {
            return Err(Error::Usage(format!(
                "canaryrelease {name} sends {}% to its canary, not 100%: finalize would move traffic; `kubectl canary set-weight {name} 100` first",
                status.canary_weight.unwrap_or_default()
            )));
        }
    }
    let mut after = release.clone();
    after.spec.stable = canary;
    after.spec.canary = None;
    if after.spec.strategy.is_none() {
        // Without a canary, a manual weight is 0 or absent.
        after.spec.weight = None;
    }
    Ok(after)
}

/// The edited release as a manifest for a pull request: what a user writes, not what the server
/// added (status, uid, managed fields).
pub fn manifest(release: &CanaryRelease) -> Result<String, Error> {
    let value = json!({
        "apiVersion": "canary.dev/v1alpha1",
        "kind": "CanaryRelease",
        "metadata": {
            "name": release.name_any(),
            "namespace": release.namespace(),
        },
        "spec": release.spec,
    });
    serde_norway::to_string(&value).map_err(|e| Error::Usage(format!("cannot write YAML: {e}")))
}

/// What finalising did.
pub struct Finalized {
    pub name: String,
    pub version: String,
    pub model: String,
}

impl fmt::Display for Finalized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "canaryrelease {} finalized: {} ({}) is the stable version and serves everything; the old version's objects will be removed",
            self.name, self.version, self.model
        )
    }
}

/// Makes the edit, as the user, guarded by the resourceVersion read.
pub async fn finalize(target: &Target, name: &str) -> Result<Finalized, Error> {
    let release = target.release(name).await?;
    let after = finalized(&release)?;
    let mut spec = json!({"stable": after.spec.stable, "canary": null});
    if after.spec.weight.is_none() && release.spec.weight.is_some() {
        spec["weight"] = json!(null);
    }
    let patch = json!({
        "metadata": {"resourceVersion": release.resource_version()},
        "spec": spec,
    });
    target.merge_patch(name, &patch).await?;
    Ok(Finalized {
        name: name.to_owned(),
        version: after.spec.stable.name.clone(),
        model: after.spec.stable.model.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CanaryReleaseStatus, RolloutStatus};

    fn lab() -> CanaryRelease {
        serde_norway::from_str(include_str!("../../examples/progressive.yaml"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn with(phase: &str, canary_weight: i32) -> CanaryRelease {
        let mut r = lab();
        r.status = Some(CanaryReleaseStatus {
            canary_weight: Some(canary_weight),
            rollout: Some(RolloutStatus {
                phase: phase.to_owned(),
                ..RolloutStatus::default()
            }),
            ..CanaryReleaseStatus::default()
        });
        r
    }

    #[test]
    fn a_promoted_release_makes_its_canary_the_stable() {
        let after = finalized(&with("Promoted", 100)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                after.spec.stable.name.as_str(),
                after.spec.stable.model.as_str()
            ),
            ("v2", "gpt-4o")
        );
        assert!(after.spec.canary.is_none());
        assert!(
            after.spec.strategy.is_some(),
            "the strategy stays for the next canary"
        );
        let yaml = manifest(&after).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            yaml.contains("name: v2") && !yaml.contains("status") && !yaml.contains("canary:\n"),
            "{yaml}"
        );
    }

    /// Each case: the phase, the canary's applied weight, and a fragment of the refusal.
    #[test]
    fn what_would_move_traffic_is_refused() {
        let cases = [
            ("Progressing", 50, "is Progressing"),
            ("Paused", 50, "promote azureopenaichat --full"),
            ("RolledBack", 0, "is RolledBack"),
            ("Promoted", 50, "not Promoted with 100%"),
        ];
        for (phase, weight, fragment) in cases {
            match finalized(&with(phase, weight)) {
                Err(e) => assert!(e.to_string().contains(fragment), "{phase}: {e}"),
                Ok(_) => panic!("{phase} at {weight}% was finalized"),
            }
        }
        let mut manual = lab();
        manual.spec.strategy = None;
        manual.spec.analysis = None;
        manual.spec.weight = Some(25);
        manual.status = Some(CanaryReleaseStatus {
            canary_weight: Some(25),
            ..CanaryReleaseStatus::default()
        });
        assert!(
            finalized(&manual)
                .is_err_and(|e| e.to_string().contains("set-weight azureopenaichat 100"))
        );
        manual.status = Some(CanaryReleaseStatus {
            canary_weight: Some(100),
            ..CanaryReleaseStatus::default()
        });
        let after = finalized(&manual).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(after.spec.weight, None);
        let mut done = after;
        done.status = None;
        assert!(finalized(&done).is_err_and(|e| e.to_string().contains("no canary")));
    }
}
