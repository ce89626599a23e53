//! What every child carries: its metadata (name, namespace, labels, the controller reference to
//! the release) and the hash of its own content (see [`crate::labels::APPLIED_HASH`]).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::CanaryRelease;
use crate::labels;
use crate::reconcile::validated::Validated;

/// Metadata of a child: name, namespace, labels and the controller reference to the release.
pub fn metadata(v: &Validated, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(v.namespace.clone()),
        labels: Some(labels),
        owner_references: Some(vec![CanaryRelease::child_owner_reference(&v.name, &v.uid)]),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::testing::lab_release;
    use crate::reconcile::validate::validate;

    /// Children name their release as kube's `controller_owner_ref` did when the validated spec
    /// held that reference, with `blockOwnerDeletion` added: a reference that differed would make
    /// the operator rewrite every child. Each case: the release's name and uid.
    #[test]
    fn children_name_their_release_as_before() {
        let cases = [
            ("azureopenaichat", crate::reconcile::testing::UID),
            ("chat", "r-1"),
            ("a", "00000000-0000-0000-0000-000000000000"),
        ];
        for (name, uid) in cases {
            let mut release = lab_release();
            release.metadata.name = Some(name.to_owned());
            release.metadata.uid = Some(uid.to_owned());
            let mut before = release
                .controller_owner_ref(&())
                .unwrap_or_else(|| panic!("{name}: no owner reference"));
            before.block_owner_deletion = Some(true);
            let v = validate(&release, "cluster.local").unwrap_or_else(|p| panic!("{name}: {p}"));
            let meta = metadata(&v, "child", BTreeMap::new());
            assert_eq!(meta.owner_references, Some(vec![before]), "{name}");
        }
    }
}
