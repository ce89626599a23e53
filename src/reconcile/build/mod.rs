//! Pure: the objects a validated release needs, one file per kind. No I/O.
//!
//! Every object carries the release's labels, a controller owner reference (so the garbage
//! collector removes it with the release) and the hash of its own content (see
//! [`crate::labels::APPLIED_HASH`]).

mod config_map;
mod deployment;
mod destination_rule;
mod gateway;
mod hpa;
mod service;
mod virtual_service;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::decide::Decision;
use super::validate::Validated;
use crate::api::istio::{DestinationRule, Gateway, VirtualService};
use crate::labels;

pub use config_map::config_map;
pub use deployment::deployment;
pub use destination_rule::destination_rule;
pub use gateway::gateway;
pub use hpa::autoscaler;
pub use service::service;
pub use virtual_service::virtual_service;

/// Everything one release should have in the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub config_maps: Vec<ConfigMap>,
    pub deployments: Vec<Deployment>,
    /// Empty when autoscaling is off; the apply step deletes HPAs that are no longer wanted.
    pub autoscalers: Vec<HorizontalPodAutoscaler>,
    pub service: Service,
    pub destination_rule: DestinationRule,
    /// `None` when the release binds to existing gateways.
    pub gateway: Option<Gateway>,
    pub virtual_service: VirtualService,
}

/// The children of a validated release, with the split `decision` says.
pub fn build(v: &Validated, decision: &Decision) -> Children {
    let versions = v.versions();
    Children {
        config_maps: versions
            .iter()
            .map(|ver| stamped(config_map(v, ver)))
            .collect(),
        deployments: versions
            .iter()
            .map(|ver| stamped(deployment(v, ver)))
            .collect(),
        autoscalers: match &v.autoscaling {
            Some(scaling) => versions
                .iter()
                .map(|ver| stamped(autoscaler(v, ver, scaling)))
                .collect(),
            None => Vec::new(),
        },
        service: stamped(service(v)),
        destination_rule: stamped(destination_rule(v)),
        gateway: gateway(v).map(stamped),
        virtual_service: stamped(virtual_service(v, decision)),
    }
}

/// Metadata of a child: name, namespace, labels and the controller reference to the release.
fn metadata(v: &Validated, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(v.namespace.clone()),
        labels: Some(labels),
        owner_references: Some(vec![v.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// A short, stable hash of a value's JSON form. serde_json's maps are sorted, so equal values hash equal.
pub fn fingerprint(value: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Adds the hash of the object's content as an annotation.
fn stamped<K: Resource + Serialize>(mut object: K) -> K {
    let hash = fingerprint(&object);
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(labels::APPLIED_HASH.to_owned(), hash);
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::testing::{built, lab_release, lab_validated};
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
        assert!(children.gateway.is_some());
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
        let before = hash(&children.virtual_service.metadata).unwrap_or_else(|| panic!("no hash"));
        assert_eq!(before.len(), 16);
        let mut release = lab_release();
        release.spec.weight = 50;
        let after = built(&validate(&release, "cluster.local").unwrap_or_else(|p| panic!("{p}")));
        assert_ne!(
            hash(&after.virtual_service.metadata),
            Some(before.clone()),
            "a weight change changes the route's hash"
        );
        assert_eq!(
            hash(&after.destination_rule.metadata),
            hash(&children.destination_rule.metadata),
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
}
