//! What every child carries: its metadata (name, namespace, labels, the controller reference to
//! the release) and the hash of its own content (see [`crate::labels::APPLIED_HASH`]).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::labels;
use crate::reconcile::validate::Validated;

/// Metadata of a child: name, namespace, labels and the controller reference to the release.
pub fn metadata(v: &Validated, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
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
pub fn stamped<K: Resource + Serialize>(mut object: K) -> K {
    let hash = fingerprint(&object);
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(labels::APPLIED_HASH.to_owned(), hash);
    object
}
