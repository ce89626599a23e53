//! Talks to the API server: judges what exists from the caches, applies what differs, deletes
//! what the release no longer wants, and returns the children as they now are (the desired set,
//! observed), which the status step reads. Decisions come from [`super::diff`]; nothing here
//! builds objects.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::core::PartialObjectMetaExt;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::children::Children;
use super::diff::{self, Change};
use crate::api::CanaryRelease;
use crate::cache::Token;
use crate::context::{Child, Context, Sighting, await_cache, publish};
use crate::{Error, FIELD_MANAGER, Result, Step};

/// One child: what we want, what is there, and what to do about it.
struct Planned<K> {
    desired: K,
    current: Option<K>,
    verdict: Change,
}

/// How the cluster was brought in line with the release.
pub enum Converged {
    /// Objects with our names belong to someone else; nothing was written. One message per object.
    Conflict(Vec<String>),
    /// Every child is in place: here as the apiserver (or the cache) last showed it.
    Done(Box<Children>),
}

macro_rules! converge_children {
    ($($field:ident: $kind:ty => $policy:ident),* $(,)?) => {
        /// Makes the cluster hold `children`, kind by kind in the list's order (see
        /// [`crate::kinds`]): configuration before the pods that read it, and subsets (the
        /// DestinationRule) before the route that names them, so a new version is never routed
        /// to an undefined subset.
        ///
        /// All children are read (from the caches; a child to be created is also looked up in
        /// the apiserver, see [`confirm_absent`]) before anything is written, so an ownership
        /// conflict on any of them leaves every object untouched. `expect_present` says the
        /// release was fully in place before; a child missing then was deleted by someone, and
        /// restoring it is announced in an Event.
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
            let Children { $($field,)* } = children;
            $(let mut $field = plan_all(ctx, $field, &uid)?;)*
            $(confirm_absent(ctx, &mut $field, &uid).await?;)*
            let conflicts: Vec<String> = [$(foreign(&$field),)*].concat();
            if !conflicts.is_empty() {
                return Ok(Converged::Conflict(conflicts));
            }

            let mut seen = Vec::new();
            $(let $field = enact_all(ctx, release, $field, expect_present, &mut seen).await?;)*
            // The next reconcile of the release does nothing until the caches show these writes
            // (see `Unseen`). The order above only needs the server to have accepted each write.
            ctx.unseen.hold(&uid, seen);

            // Removing what the release no longer wants comes last, once traffic no longer points
            // at it (a provider's new routes are in place before its old ones go). Any kind can
            // hold unwanted objects (see `crate::kinds`); finding none reads the
            // caches only.
            $(prune(ctx, release, &uid, &$field).await?;)*
            Ok(Converged::Done(Box::new(Children { $($field,)* })))
        }
    };
}
crate::with_child_kinds!(converge_children);

/// What to do with each child of one kind, judged from the caches (no request).
fn plan_all<K: Child>(ctx: &Context, desired: Vec<K>, uid: &str) -> Result<Vec<Planned<K>>> {
    desired
        .into_iter()
        .map(|object| plan(ctx, object, uid))
        .collect()
}

fn plan<K: Child>(ctx: &Context, desired: K, uid: &str) -> Result<Planned<K>> {
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
        (None, None) => Change::Create,
    };
    Ok(Planned {
        desired,
        current,
        verdict,
    })
}

/// A child the caches do not know is confirmed absent with the apiserver before it is created.
/// Server-side apply creates or takes over alike, and the caches learn of objects through
/// watches: an object of that name made a moment before the release (seen in a test: a
/// ConfigMap created just before the release was applied) may not have reached them yet, and the
/// operator never overwrites or adopts what it did not create. One list by name (the `list` verb
/// the watches already have), and only for creations, so a steady state costs nothing.
async fn confirm_absent<K: Child>(
    ctx: &Context,
    planned: &mut [Planned<K>],
    uid: &str,
) -> Result<()> {
    for p in planned
        .iter_mut()
        .filter(|p| matches!(p.verdict, Change::Create))
    {
        let namespace = p.desired.namespace().unwrap_or_default();
        let name = p.desired.name_any();
        let params = ListParams::default()
            .fields(&format!("metadata.name={name}"))
            .limit(1);
        let found = ctx
            .api::<K>(&namespace)
            .list_metadata(&params)
            .await
            .map_err(Error::request(
                Step::Apply,
                format!("{} {name}", K::kind(&())),
            ))?;
        if let Some(existing) = found.items.first() {
            let controller = existing
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true));
            p.verdict = diff::judge_unlabelled::<K>(&namespace, &name, controller, uid);
        }
    }
    Ok(())
}

fn foreign<K>(planned: &[Planned<K>]) -> Vec<String> {
    planned
        .iter()
        .filter_map(|p| match &p.verdict {
            Change::Foreign(message) => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// [`enact`] for each child of one kind, in order.
async fn enact_all<K: Child>(
    ctx: &Context,
    release: &CanaryRelease,
    planned: Vec<Planned<K>>,
    expect_present: bool,
    sightings: &mut Vec<Sighting>,
) -> Result<Vec<K>> {
    let mut applied = Vec::with_capacity(planned.len());
    for p in planned {
        applied.push(enact(ctx, release, p, expect_present, sightings).await?);
    }
    Ok(applied)
}

/// Applies one child if its verdict asks for it, and returns the object as it now is.
///
/// A write adds to `sightings` the check that the cache shows it, for the next reconcile of the
/// release to wait for (see [`crate::context::Unseen`]).
async fn enact<K: Child>(
    ctx: &Context,
    release: &CanaryRelease,
    planned: Planned<K>,
    expect_present: bool,
    sightings: &mut Vec<Sighting>,
) -> Result<K> {
    let Planned {
        desired,
        current,
        verdict,
    } = planned;
    let current_version = current.as_ref().and_then(ResourceExt::resource_version);
    let correction = match (&verdict, current) {
        (Change::Unchanged, Some(current)) => return Ok(current),
        (Change::Update { drift: true }, _) => {
            Some("was changed outside the operator; restored it")
        }
        (Change::Create, _) if expect_present => Some("was deleted; recreated it"),
        _ => None,
    };
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = ctx
        .api::<K>(&namespace)
        .patch(&name, &params, &Patch::Apply(&desired))
        .await
        .map_err(Error::request(
            Step::Apply,
            format!("{} {name}", K::kind(&())),
        ))?;
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
        let store = K::store(&ctx.stores).clone();
        // Parsed once: the sighting is looked at on every reconcile until the cache shows it.
        let before = current_version.as_deref().map(Token::new);
        sightings.push(Box::new(move || {
            store.inspect(&namespace, &name, |cached| {
                cached.is_some_and(|c| before.as_ref() != Some(&c.resource_version))
            })
        }));
    }
    Ok(applied)
}

/// Deletes children of kind `K` that this release controls but no longer wants (an HPA after
/// autoscaling was turned off, the objects of a renamed version, a Gateway no longer created):
/// every one not among `keep`, the children of that kind just applied.
async fn prune<K: Child>(
    ctx: &Context,
    release: &CanaryRelease,
    uid: &str,
    keep: &[K],
) -> Result<()> {
    let namespace = release.namespace().unwrap_or_default();
    let store = K::store(&ctx.stores);
    let keep: Vec<String> = keep.iter().map(ResourceExt::name_any).collect();
    let stale = store
        .controlled_by(&namespace, &release.name_any(), uid)
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
            Err(e) => {
                return Err(Error::request(
                    Step::Prune,
                    format!("{} {name}", K::kind(&())),
                )(e));
            }
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
