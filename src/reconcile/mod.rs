//! The reconcile pipeline: **validate → observe → decide → build → apply → status**.
//!
//! `validate`, `decide` and `build` are pure functions; `observe`, `apply` and `status` are the
//! only steps that do I/O. `decide` turns the release's strategy (today the weight set by hand)
//! and what `observe` found into the split that `build` writes into the route, so what is applied
//! is decided in one place, including that the release must not route at all while an older
//! claim overlaps its hosts ([`crate::claims`]). An invalid spec or an ownership conflict is an
//! outcome, shown in status, that waits for the user's next change; only failed requests are
//! errors, retried with backoff by the controller.

pub mod apply;
pub mod build;
pub mod children;
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
use self::gateway_workload::Workload;
use self::status::{DEGRADED, Health};
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
    // A spec the operator cannot act on, or one routed by a provider it does not run with.
    let checked = validate::validate_with(
        &release,
        &ctx.settings.cluster_domain,
        ctx.settings.min_analysis_interval,
    )
    .and_then(|v| validate::provider_enabled(&v, &ctx.settings.traffic_providers).map(|()| v));
    let validated = match checked {
        Ok(validated) => validated,
        Err(problems) => {
            status::report(
                &ctx,
                &release,
                &Health::Invalid(&problems),
                &Workload::Unknown,
            )
            .await?;
            ctx.reset_backoff(&release);
            return Ok(Action::await_change());
        }
    };
    // Observe reads the caches and the claims: both must have listed what exists.
    ctx.stores.wait_ready().await;
    ctx.claims
        .wait_listed(ctx.settings.namespace.as_deref())
        .await;
    let observation = observe::observe(&ctx, &release, &validated).await?;
    let decision = decide::decide(&validated.strategy, &observation);
    let children = build::build(&validated, &decision);

    let status = release.status.as_ref();
    let expect_present = status.is_some_and(|s| {
        s.observed_generation == release.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == DEGRADED && c.status == "False")
    });
    let workload = match apply::converge(&ctx, &release, children, expect_present).await {
        Ok(Converged::Done(applied)) => {
            let health = Health::Converged(
                &validated,
                &applied,
                decision.rollout.as_ref(),
                decision.withheld.as_ref(),
            );
            let workload = gateway_workload::observe(&ctx, &validated).await;
            status::report(&ctx, &release, &health, &workload).await?;
            workload
        }
        Ok(Converged::Conflict(conflicts)) => {
            let health = Health::Conflict(&conflicts);
            status::report(&ctx, &release, &health, &Workload::Unknown).await?;
            ctx.reset_backoff(&release);
            return Ok(Action::requeue(CONFLICT_RECHECK));
        }
        // Unprocessable: the server will refuse the same object again, so wait for a new spec.
        Err(Error::Kube(kube::Error::Api(s))) if s.code == 422 => {
            let health = Health::Rejected(s.message);
            status::report(&ctx, &release, &health, &Workload::Unknown).await?;
            ctx.reset_backoff(&release);
            return Ok(Action::await_change());
        }
        Err(error) => {
            // Best effort: the error itself is what the controller retries on.
            let health = Health::Failed(error.to_string());
            if let Err(status_error) =
                status::report(&ctx, &release, &health, &Workload::Unknown).await
            {
                tracing::debug!(%status_error, "could not report the failure in status");
            }
            return Err(error);
        }
    };
    ctx.reset_backoff(&release);
    tracing::debug!("in place");
    // A rolling release is looked at again when its step ends or its next measurement is due.
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
    // Gateway pods are not watched: a selector that matched none is looked at again soon.
    let next = match workload {
        Workload::Missing { .. } => next.min(gateway_workload::RECHECK),
        _ => next,
    };
    Ok(Action::requeue(next))
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
