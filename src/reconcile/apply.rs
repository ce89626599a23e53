//! Talks to the API server: judges what exists from the caches, applies what differs, deletes
//! what the release no longer wants. Decisions come from [`super::diff`]; nothing here builds objects.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::core::PartialObjectMetaExt;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};

use super::build::Children;
use super::diff::{self, Verdict};
use crate::api::CanaryRelease;
use crate::api::istio::VirtualService;
use crate::controller::{Child, Context, await_cache};
use crate::{Error, FIELD_MANAGER, Result};

/// One child: what we want, what is there, and what to do about it.
struct Planned<K> {
    desired: K,
    current: Option<K>,
    verdict: Verdict,
}

/// How the cluster was brought in line with the release.
pub enum Converged {
    /// Objects with our names belong to someone else; nothing was written. One message per object.
    Conflict(Vec<String>),
    /// Every child is in place.
    Done(Box<Report>),
}

/// The children as they are after a successful converge.
pub struct Report {
    pub deployments: Vec<Deployment>,
    pub virtual_service: VirtualService,
}

/// Makes the cluster hold `children`.
///
/// All children are read before anything is written, so an ownership conflict on any of them
/// leaves every object untouched. `expect_present` says the release was fully in place before;
/// a child missing then was deleted by someone, and restoring it is announced in an Event.
pub async fn converge(
    ctx: &Context,
    release: &CanaryRelease,
    children: Children,
    expect_present: bool,
) -> Result<Converged> {
    let uid = release
        .meta()
        .uid
        .clone()
        .ok_or(Error::MissingMetadata("CanaryRelease", "uid"))?;
    // Destructured without `..` so a new kind of child cannot be built and then forgotten here.
    let Children {
        config_maps,
        deployments,
        autoscalers,
        service,
        destination_rule,
        gateway,
        virtual_service,
    } = children;
    let config_maps = observe_all(ctx, config_maps, &uid).await?;
    let deployments = observe_all(ctx, deployments, &uid).await?;
    let autoscalers = observe_all(ctx, autoscalers, &uid).await?;
    let service = observe(ctx, service, &uid).await?;
    let destination_rule = observe(ctx, destination_rule, &uid).await?;
    let gateway = observe_all(ctx, gateway.into_iter().collect(), &uid).await?;
    let virtual_service = observe(ctx, virtual_service, &uid).await?;

    let conflicts: Vec<String> = [
        foreign(&config_maps),
        foreign(&deployments),
        foreign(&autoscalers),
        foreign(std::slice::from_ref(&service)),
        foreign(std::slice::from_ref(&destination_rule)),
        foreign(&gateway),
        foreign(std::slice::from_ref(&virtual_service)),
    ]
    .concat();
    if !conflicts.is_empty() {
        return Ok(Converged::Conflict(conflicts));
    }

    // Order matters for traffic: configuration before the pods that read it, and subsets (the
    // DestinationRule) before the route that names them, so a new version is never routed to an
    // undefined subset.
    let mut keep = Keep::default();
    let mut sightings = Vec::new();
    for planned in config_maps {
        keep.config_maps.push(
            enact(ctx, release, planned, expect_present, &mut sightings)
                .await?
                .name_any(),
        );
    }
    let mut current_deployments = Vec::new();
    for planned in deployments {
        current_deployments
            .push(enact(ctx, release, planned, expect_present, &mut sightings).await?);
    }
    keep.deployments = current_deployments
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    for planned in autoscalers {
        keep.autoscalers.push(
            enact(ctx, release, planned, expect_present, &mut sightings)
                .await?
                .name_any(),
        );
    }
    enact(ctx, release, service, expect_present, &mut sightings).await?;
    enact(
        ctx,
        release,
        destination_rule,
        expect_present,
        &mut sightings,
    )
    .await?;
    for planned in gateway {
        keep.gateways.push(
            enact(ctx, release, planned, expect_present, &mut sightings)
                .await?
                .name_any(),
        );
    }
    let virtual_service = enact(
        ctx,
        release,
        virtual_service,
        expect_present,
        &mut sightings,
    )
    .await?;
    // Once for all writes rather than after each: the order above only needs the server to have
    // accepted each write. (A write that fails above skips the wait; the retry's backoff covers it.)
    if !sightings.is_empty() {
        await_cache("children", || sightings.iter().all(|seen| seen())).await;
    }

    // Removing what the release no longer wants comes last, once traffic no longer points at it.
    prune::<k8s_openapi::api::core::v1::ConfigMap>(ctx, release, &uid, &keep.config_maps).await?;
    prune::<Deployment>(ctx, release, &uid, &keep.deployments).await?;
    prune::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>(
        ctx,
        release,
        &uid,
        &keep.autoscalers,
    )
    .await?;
    prune::<crate::api::istio::Gateway>(ctx, release, &uid, &keep.gateways).await?;

    Ok(Converged::Done(Box::new(Report {
        deployments: current_deployments,
        virtual_service,
    })))
}

/// Names of the children that kinds with a variable set of objects should keep.
#[derive(Default)]
struct Keep {
    config_maps: Vec<String>,
    deployments: Vec<String>,
    autoscalers: Vec<String>,
    gateways: Vec<String>,
}

async fn observe_all<K: Child>(
    ctx: &Context,
    desired: Vec<K>,
    uid: &str,
) -> Result<Vec<Planned<K>>> {
    let mut planned = Vec::with_capacity(desired.len());
    for object in desired {
        planned.push(observe(ctx, object, uid).await?);
    }
    Ok(planned)
}

async fn observe<K: Child>(ctx: &Context, desired: K, uid: &str) -> Result<Planned<K>> {
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let store = K::store(&ctx.stores);
    let current = match store.get(&namespace, &name) {
        Some(object) => Some(object.map_err(|source| Error::Decode {
            kind: K::kind(&()).into_owned(),
            name: name.clone(),
            source,
        })?),
        None => None,
    };
    let verdict = match (&current, store.other(&namespace, &name)) {
        (Some(current), _) => diff::judge(&desired, Some(current), uid),
        // Not labelled as ours: the cache knows its name and controller only.
        (None, Some(controller)) => {
            diff::judge_unlabelled::<K>(&namespace, &name, controller.as_ref(), uid)
        }
        // Before its first list a cache cannot tell absent from unknown; `Stores::wait_ready`
        // makes this rare, and the retry comes soon.
        (None, None) if !store.listed() => return Err(Error::CacheNotReady(K::kind(&()).into())),
        (None, None) => Verdict::Create,
    };
    Ok(Planned {
        desired,
        current,
        verdict,
    })
}

fn foreign<K>(planned: &[Planned<K>]) -> Vec<String> {
    planned
        .iter()
        .filter_map(|p| match &p.verdict {
            Verdict::Foreign(message) => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Tells whether the caches show one write of this reconcile.
type Sighting<'a> = Box<dyn Fn() -> bool + Send + Sync + 'a>;

/// Applies one child if its verdict asks for it, and returns the object as it now is.
///
/// A write adds to `sightings` the check that the cache shows it; `converge` waits for all of
/// them at its end (see [`await_cache`] for why).
async fn enact<'a, K: Child>(
    ctx: &'a Context,
    release: &CanaryRelease,
    planned: Planned<K>,
    expect_present: bool,
    sightings: &mut Vec<Sighting<'a>>,
) -> Result<K> {
    let Planned {
        desired,
        current,
        verdict,
    } = planned;
    let current_version = current.as_ref().and_then(ResourceExt::resource_version);
    let correction = match (&verdict, current) {
        (Verdict::Unchanged, Some(current)) => return Ok(current),
        (Verdict::Update { drift: true }, _) => {
            Some("was changed outside the operator; restored it")
        }
        (Verdict::Create, _) if expect_present => Some("was deleted; recreated it"),
        _ => None,
    };
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = ctx
        .api::<K>(&namespace)
        .patch(&name, &params, &Patch::Apply(&desired))
        .await?;
    let kind = K::kind(&());
    match correction {
        Some(what) => {
            tracing::info!(%kind, %name, "{what}");
            let note = format!("{kind} {name} {what}");
            publish(
                ctx,
                release,
                EventType::Warning,
                "DriftCorrected",
                note,
                Some(&applied),
            )
            .await;
        }
        None => tracing::debug!(%kind, %name, ?verdict, "applied"),
    }
    if applied.resource_version() != current_version {
        let store = K::store(&ctx.stores);
        sightings.push(Box::new(move || {
            store.inspect(&namespace, &name, |cached| {
                cached.is_some_and(|c| Some(&*c.resource_version) != current_version.as_deref())
            })
        }));
    }
    Ok(applied)
}

/// Deletes children of kind `K` that this release controls but no longer wants (an HPA after
/// autoscaling was turned off, the objects of a renamed version, a Gateway no longer created).
async fn prune<K: Child>(
    ctx: &Context,
    release: &CanaryRelease,
    uid: &str,
    keep: &[String],
) -> Result<()> {
    let namespace = release.namespace().unwrap_or_default();
    let store = K::store(&ctx.stores);
    let stale = store
        .controlled_by(&namespace, uid)
        .into_iter()
        .filter(|(name, _)| !keep.contains(name));
    for (name, object_uid) in stale {
        let params = DeleteParams {
            // Only the object we saw: never a same-named successor created in the meantime.
            preconditions: Some(Preconditions {
                uid: Some(object_uid.clone()),
                resource_version: None,
            }),
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match ctx.api::<K>(&namespace).delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(e.into()),
        }
        let kind = K::kind(&());
        tracing::info!(%kind, %name, "deleted, no longer part of the release");
        let note = format!("deleted {kind} {name}: no longer part of the release");
        let deleted = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: Some(object_uid),
            ..ObjectMeta::default()
        }
        .into_request_partial::<K>();
        publish(
            ctx,
            release,
            EventType::Normal,
            "Pruned",
            note,
            Some(&deleted),
        )
        .await;
        await_cache(&kind, || {
            store.inspect(&namespace, &name, |cached| {
                cached.is_none_or(|c| c.deleting)
            })
        })
        .await;
    }
    Ok(())
}

/// Records an Event on the release, naming the child it is about, if any.
///
/// Events are best effort: failing to record one must not fail or repeat the reconcile. A new
/// recorder each time, because a shared one folds events with the same reason into a series that
/// keeps the first note, and our notes differ (which child, which problem). Events are only sent
/// on transitions, so there is no flood to fold.
pub async fn publish<C: Resource<DynamicType = ()>>(
    ctx: &Context,
    release: &CanaryRelease,
    type_: EventType,
    reason: &str,
    note: String,
    related: Option<&C>,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: related.map(|child| child.object_ref(&())),
    };
    let recorder = Recorder::new(ctx.client.clone(), ctx.settings.reporter.clone());
    if let Err(error) = recorder.publish(&event, &release.object_ref(&())).await {
        tracing::warn!(%error, reason, "could not record an Event");
    }
}
