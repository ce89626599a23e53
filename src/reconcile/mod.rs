//! The reconcile pipeline: **validate → observe → decide → build → apply → status**.
//!
//! `validate`, `decide` and `build` are pure functions; `observe`, `apply` and `status` are the
//! only steps that do I/O. `decide` turns the release's strategy (today the weight set by hand)
//! and what `observe` found into the split that `build` writes into the route, so what is applied
//! is decided in one place, including that the release must not route at all while an older
//! claim overlaps its hosts ([`crate::claims`]). [`reconcile`] runs the steps to where they end
//! (`Ending`) and reports that in status once, in one place. An invalid spec or an ownership
//! conflict is an ending that waits for the user's next change; only failed requests are errors,
//! retried with backoff by the controller, and they name their step and child.

pub mod apply;
pub mod build;
pub mod children;
pub mod conditions;
pub mod credentials;
pub mod decide;
pub mod deployment_state;
pub mod diff;
pub mod gateway_workload;
pub mod meta;
pub mod names;
pub mod observe;
pub mod rollout_status;
pub mod status;
pub mod traffic;
pub mod validate;
pub mod validated;
pub mod workload;

#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use self::apply::Converged;
use self::children::Children;
use self::conditions::DEGRADED;
use self::decide::Decision;
use self::gateway_workload::Workload;
use self::status::Health;
use self::validate::Problems;
use self::validated::Validated;
use crate::api::CanaryRelease;
use crate::context::{CACHE_LAG_LIMIT, Context};
use crate::{Error, Result};

/// A periodic check even without events, as a safety net for missed watch events. It costs no
/// requests when everything is in place: all reads come from caches.
const RESYNC: Duration = Duration::from_secs(600);

/// How often an ownership conflict is looked at again. The object in the way is not labelled as
/// ours, so its deletion never reaches our filtered caches; polling it (a read, never a write) is
/// what lets the release proceed once the user removes it.
const CONFLICT_RECHECK: Duration = Duration::from_secs(10);

#[tracing::instrument(skip_all, fields(namespace = release.namespace().unwrap_or_default(), name = release.name_any()))]
pub async fn reconcile(release: Arc<CanaryRelease>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciles.inc();
    let _timer = Timer(&ctx.metrics.duration, std::time::Instant::now());
    // Until the caches show what the previous reconcile of this release wrote, they cannot tell
    // what is in place; the watch events of those writes bring the release back (see `Unseen`).
    // Nothing has run, so there is nothing to report.
    if release.uid().is_some_and(|uid| !ctx.unseen.shown(&uid)) {
        tracing::trace!("earlier writes not in the caches yet");
        return Ok(Action::requeue(CACHE_LAG_LIMIT));
    }
    // Read again: the controller may have handed over the release before our last status write
    // reached its cache.
    let release = ctx
        .releases
        .get(&ObjectRef::from(&*release))
        .unwrap_or(release);
    let ending = run(&ctx, &release).await;
    finish(&ctx, &release, ending).await
}

/// Where one pass of the pipeline ended: what status reports, and what comes next.
enum Ending {
    /// The spec cannot be acted on, or names a provider the operator does not run with.
    Invalid(Problems),
    /// Objects with our names belong to someone else.
    Conflict(Vec<String>),
    /// The API server refused an object built from the spec (422): the same spec would be
    /// refused again.
    Rejected(String),
    /// A request failed; the controller retries with backoff.
    Failed(Error),
    /// Every child is in place.
    Converged {
        validated: Box<Validated>,
        applied: Box<Children>,
        decision: Box<Decision>,
        workload: Workload,
    },
}

/// The pipeline: validate → observe → decide → build → apply, to where it ended. No status here.
async fn run(ctx: &Context, release: &CanaryRelease) -> Ending {
    let checked = validate::validate_with(
        release,
        &ctx.settings.cluster_domain,
        ctx.settings.min_analysis_interval,
    )
    .and_then(|v| validate::provider_enabled(&v, &ctx.settings.traffic_providers).map(|()| v));
    let validated = match checked {
        Ok(validated) => validated,
        Err(problems) => return Ending::Invalid(problems),
    };
    // Observe reads the caches and the claims: both must have listed what exists.
    ctx.stores.wait_ready().await;
    ctx.claims
        .wait_listed(ctx.settings.namespace.as_deref())
        .await;
    let observation = match observe::observe(ctx, release, &validated).await {
        Ok(observation) => observation,
        Err(error) => return Ending::Failed(error),
    };
    let decision = decide::decide(&validated.strategy, &observation);
    let children = build::build(&validated, &decision);

    let expect_present = release.status.as_ref().is_some_and(|s| {
        s.observed_generation == release.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == DEGRADED && c.status == "False")
    });
    match apply::converge(ctx, release, children, expect_present).await {
        Ok(Converged::Done(applied)) => {
            let workload = traffic::provider(&validated).observe(ctx, &validated).await;
            Ending::Converged {
                validated: Box::new(validated),
                applied,
                decision: Box::new(decision),
                workload,
            }
        }
        Ok(Converged::Conflict(conflicts)) => Ending::Conflict(conflicts),
        Err(error) => match error.api_status() {
            Some(refusal) if refusal.code == 422 => Ending::Rejected(refusal.message.clone()),
            _ => Ending::Failed(error),
        },
    }
}

/// The one exit: reports where the pipeline ended in status, once, and says when to look again.
async fn finish(ctx: &Context, release: &CanaryRelease, ending: Ending) -> Result<Action> {
    let unknown = Workload::Unknown;
    let (health, workload) = match &ending {
        Ending::Invalid(problems) => (Health::Invalid(problems), &unknown),
        Ending::Conflict(conflicts) => (Health::Conflict(conflicts), &unknown),
        Ending::Rejected(message) => (Health::Rejected(message.clone()), &unknown),
        Ending::Failed(error) => (Health::Failed(error.step(), error.to_string()), &unknown),
        Ending::Converged {
            validated,
            applied,
            decision,
            workload,
        } => (
            Health::Converged(
                validated,
                applied,
                decision.rollout.as_ref(),
                decision.withheld.as_ref(),
            ),
            workload,
        ),
    };
    let reported = status::report(ctx, release, &health, workload).await;
    let next = match ending {
        Ending::Failed(error) => {
            // Best effort: the error itself is what the controller retries on.
            if let Err(status_error) = reported {
                tracing::debug!(%status_error, "could not report the failure in status");
            }
            return Err(error);
        }
        Ending::Invalid(_) | Ending::Rejected(_) => {
            reported?;
            Action::await_change()
        }
        Ending::Conflict(_) => {
            reported?;
            Action::requeue(CONFLICT_RECHECK)
        }
        Ending::Converged {
            decision, workload, ..
        } => {
            reported?;
            tracing::debug!("in place");
            Action::requeue(look_again(&decision, &workload))
        }
    };
    ctx.reset_backoff(release);
    Ok(next)
}

/// When a release in place is looked at again: a rolling release when its step ends or its next
/// measurement is due; a Gateway that selects no pod soon (pods are not watched); else at the
/// resync.
fn look_again(decision: &Decision, workload: &Workload) -> Duration {
    let next = decision
        .rollout
        .as_ref()
        .and_then(|o| o.wake)
        // A wake already past (times are kept to the second) is soon, not the resync's 10 minutes.
        .map(|wake| {
            wake.duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
        })
        .map_or(RESYNC, |wait| {
            wait.clamp(Duration::from_millis(100), RESYNC)
        });
    match workload {
        Workload::Missing { .. } => next.min(gateway_workload::RECHECK),
        _ => next,
    }
}

/// Observes a reconcile's duration when dropped, so every return path is measured.
struct Timer<'a>(
    &'a prometheus_client::metrics::histogram::Histogram,
    std::time::Instant,
);

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.0.observe(self.1.elapsed().as_secs_f64());
    }
}
