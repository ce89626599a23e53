//! Observe: reads what a decision needs beyond the spec and the children: whether an older claim
//! overlaps the release's hosts (from the claims index, in memory). For an automatic release
//! also: the rollout's state from status, the user's request annotation, the canary's ready
//! replicas of the template the spec asks for and its Deployment's own reason for missing ones
//! (from the caches), and, when a measurement is due, the checks' values from Prometheus. It is
//! the only step besides apply and status that does I/O, and it never writes.

use std::time::SystemTime;

use futures::future::join_all;
use kube::ResourceExt;

use super::decide::{Observation, RolloutObservation, Strategy};
use super::deployment_state::{problem, ready_of_template};
use super::meta::fingerprint;
use super::rollout_status::{state_of, to_second};
use super::validated::{Validated, Version};
use super::workload::deployment;
use crate::api::CanaryRelease;
use crate::context::Context;
use crate::rollout::analysis::judge;
use crate::rollout::template::{Vars, render};
use crate::rollout::{Analysis, Capacity, Check, Measurement, Sample, measurement_due};
use crate::{Result, labels};

pub async fn observe(
    ctx: &Context,
    release: &CanaryRelease,
    validated: &Validated,
) -> Result<Observation> {
    let conflict = ctx.claims.conflict(release);
    let Strategy::Automatic(automatic) = &validated.strategy else {
        return Ok(Observation {
            rollout: None,
            conflict,
        });
    };
    let now = to_second(SystemTime::now());
    let previous = release
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .and_then(state_of);
    let cached = |version: &Version| {
        ctx.stores
            .deployments
            .get(&validated.namespace, &version.object_name)
            .and_then(Result::ok)
    };
    // Ready pods of the template this spec asks for only: right after a canary edit the cache
    // holds the previous template, and while it rolls out the old pods are ready too; neither is
    // the canary being judged.
    let canary = validated.canary.as_ref().and_then(|version| {
        let wanted = fingerprint(&deployment(validated, version));
        cached(version).map(|d| (ready_of_template(&d, &wanted), problem(&d)))
    });
    let (canary_ready, canary_problem) = canary.unwrap_or((0, None));
    let stable_replicas = cached(&validated.stable)
        .and_then(|d| d.spec.replicas)
        .unwrap_or(1);
    let capacity = match &validated.autoscaling {
        Some(scaling) => Capacity::Autoscaled {
            stable: stable_replicas,
            min: scaling.min_replicas,
            max: scaling.max_replicas,
        },
        None => Capacity::Fixed(
            validated
                .canary
                .as_ref()
                .and_then(|c| c.replicas)
                .unwrap_or(1),
        ),
    };
    // A release withheld for a conflict holds its rollout: nothing to measure.
    let due = conflict.is_none()
        && previous
            .as_ref()
            .filter(|p| Some(&p.revision) == automatic.revision.as_ref())
            .is_some_and(|p| measurement_due(&automatic.plan, Some(p), now));
    let measurement = match &automatic.plan.analysis {
        Some(analysis) if due => {
            let weight = previous.as_ref().map_or(0, |p| p.weight);
            Some(measure(ctx, validated, analysis, weight, now).await)
        }
        _ => None,
    };
    Ok(Observation {
        rollout: Some(RolloutObservation {
            now,
            previous,
            request: release.annotations().get(labels::REQUEST).cloned(),
            canary_ready,
            canary_problem,
            capacity,
            measurement,
        }),
        conflict,
    })
}

/// Runs every check's queries at once (the canary's, and the stable's where compared, over the
/// same window) and judges them.
async fn measure(
    ctx: &Context,
    v: &Validated,
    analysis: &Analysis,
    canary_weight: i32,
    now: SystemTime,
) -> Measurement {
    fn vars<'a>(v: &'a Validated, version: &'a Version, analysis: &Analysis) -> Vars<'a> {
        Vars {
            namespace: &v.namespace,
            release: &v.name,
            version: &version.name,
            model: &version.model,
            interval: analysis.interval,
        }
    }
    let Some(canary_version) = &v.canary else {
        return Measurement {
            at: now,
            checks: Vec::new(),
        };
    };
    let (canary, stable) = (
        vars(v, canary_version, analysis),
        vars(v, &v.stable, analysis),
    );
    let judged = join_all(analysis.checks.iter().map(|check| async {
        let canary_samples = samples(ctx, analysis, check, &canary);
        let stable_samples = async {
            match check.compares_to_stable_at(canary_weight) {
                true => Some(samples(ctx, analysis, check, &stable).await),
                false => None,
            }
        };
        let (canary_samples, stable_samples) = futures::join!(canary_samples, stable_samples);
        let judged = judge(
            &check.rule,
            &check.bounds,
            &canary_samples,
            stable_samples.as_deref(),
        );
        ctx.metrics.measured(judged.verdict.as_str());
        (check.name.clone(), judged)
    }))
    .await;
    Measurement {
        at: now,
        checks: judged,
    }
}

/// Every query of a check for one version, at once, in the order the judge expects them.
async fn samples(
    ctx: &Context,
    analysis: &Analysis,
    check: &Check,
    vars: &Vars<'_>,
) -> Vec<Sample> {
    join_all(
        check
            .rule
            .queries()
            .into_iter()
            .map(|template| query(ctx, analysis, check, template, vars)),
    )
    .await
}

async fn query(
    ctx: &Context,
    analysis: &Analysis,
    check: &Check,
    template: &str,
    vars: &Vars<'_>,
) -> Sample {
    let Some(prometheus) = &ctx.prometheus else {
        return Err("the operator has no HTTP client for Prometheus (see its log)".to_owned());
    };
    let promql = render(template, vars);
    let answer = prometheus
        .query(&analysis.address, &promql, analysis.timeout)
        .await;
    ctx.metrics.queried(answer.is_ok());
    if let Err(error) = &answer {
        tracing::debug!(check = check.name, version = vars.version, %error, "query failed");
    }
    answer.map_err(|e| e.to_string())
}
