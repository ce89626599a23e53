//! Pure: the objects a validated release needs, for the split the decide step chose. No I/O.
//!
//! The workload children ([`super::workload`]) are the same whichever provider routes; the routing
//! children come from the release's traffic provider ([`super::traffic`]). Every object carries
//! the release's labels, a controller owner reference (so the garbage collector removes it with
//! the release) and the hash of its own content ([`super::meta`]).

use super::children::Children;
use super::decide::Decision;
use super::meta;
use super::traffic;
use super::validated::{Autoscaling, Role, Validated};
use super::workload::{autoscaler, config_map, deployment, service};

/// The children of a validated release, with the split `decision` says.
pub fn build(v: &Validated, decision: &Decision) -> Children {
    let versions = v.versions();
    let mut routing = traffic::provider(v).route(v, decision);
    // The release's own Service first, then any the provider adds (one per version).
    let mut services = vec![service(v)];
    services.append(&mut routing.services);
    let mut children = Children {
        config_maps: versions.iter().map(|ver| config_map(v, ver)).collect(),
        deployments: versions.iter().map(|ver| deployment(v, ver)).collect(),
        autoscalers: match &v.autoscaling {
            Some(scaling) => versions
                .iter()
                .map(|ver| match (ver.role, decision.canary_min_replicas) {
                    // A rollout step needs the canary to keep replicas for its share of traffic.
                    (Role::Canary, Some(least)) => {
                        let raised = Autoscaling {
                            min_replicas: least.clamp(scaling.min_replicas, scaling.max_replicas),
                            ..scaling.clone()
                        };
                        autoscaler(v, ver, &raised)
                    }
                    _ => autoscaler(v, ver, scaling),
                })
                .collect(),
            None => Vec::new(),
        },
        services,
        // The routing objects are the provider's; a kind of its own does not show here.
        ..routing
    };
    stamp_all(&mut children);
    children
}

macro_rules! stamp_all {
    ($($field:ident: $kind:ty => $policy:ident),* $(,)?) => {
        /// Adds to every child the hash of its content ([`meta::stamped`]).
        fn stamp_all(children: &mut Children) {
            $(
                children.$field = std::mem::take(&mut children.$field)
                    .into_iter()
                    .map(meta::stamped)
                    .collect();
            )*
        }
    };
}
crate::with_child_kinds!(stamp_all);

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::labels;
    use crate::reconcile::testing::{built, examples, lab_release, lab_validated};
    use crate::reconcile::validate::validate;

    #[test]
    fn lab_example_yields_every_object_of_the_lab() {
        let children = built(&lab_validated());
        let names = |objects: &[ConfigMap]| {
            objects
                .iter()
                .filter_map(|o| o.metadata.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&children.config_maps),
            ["azureopenaichat-v1", "azureopenaichat-v2"]
        );
        assert_eq!(children.deployments.len(), 2);
        assert_eq!(children.autoscalers.len(), 2);
        assert_eq!(children.gateways.len(), 1);
    }

    #[test]
    fn every_child_carries_the_hash_of_its_content() {
        let children = built(&lab_validated());
        let hash = |meta: &ObjectMeta| {
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(labels::APPLIED_HASH))
                .cloned()
        };
        let before =
            hash(&children.virtual_services[0].metadata).unwrap_or_else(|| panic!("no hash"));
        assert_eq!(before.len(), 16);
        let mut release = lab_release();
        release.spec.weight = Some(50);
        let after = built(&validate(&release, "cluster.local").unwrap_or_else(|p| panic!("{p}")));
        assert_ne!(
            hash(&after.virtual_services[0].metadata),
            Some(before.clone()),
            "a weight change changes the route's hash"
        );
        assert_eq!(
            hash(&after.destination_rules[0].metadata),
            hash(&children.destination_rules[0].metadata),
            "a weight change leaves the subsets alone"
        );
        assert_eq!(
            built(&lab_validated()),
            children,
            "building is deterministic"
        );
    }

    #[test]
    fn autoscaling_off_means_no_autoscalers() {
        let mut release = lab_release();
        release.spec.autoscaling = None;
        let children =
            built(&validate(&release, "cluster.local").unwrap_or_else(|p| panic!("{p}")));
        assert!(children.autoscalers.is_empty());
    }

    /// The caches find a release's children among thousands by the release's name as a prefix
    /// (see `ChildStore::controlled_by`): a child named otherwise would never be pruned.
    #[test]
    fn every_child_is_named_after_its_release() {
        for (file, v) in examples() {
            for name in built(&v).names() {
                assert!(
                    name.starts_with(&v.name),
                    "{file}: {name} does not begin with {}",
                    v.name
                );
            }
        }
    }

    /// Every kind of the list is built for some example: a kind listed but never built would be
    /// watched and granted for nothing.
    #[test]
    fn every_kind_is_built_for_some_example() {
        let all: Vec<Children> = examples().iter().map(|(_, v)| built(v)).collect();
        for (kind, _) in Children::default().counts() {
            assert!(
                all.iter()
                    .any(|c| c.counts().iter().any(|(k, n)| *k == kind && *n > 0)),
                "no example builds a {kind}"
            );
        }
    }
}
