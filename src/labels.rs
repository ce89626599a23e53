//! Label and annotation keys the operator puts on what it creates.
//!
//! `app` and `version` are the labels Istio's docs and the lab use to tell versions apart; the
//! `app.kubernetes.io/*` ones are the Kubernetes recommended labels, and the operator's caches
//! tell its children from other objects by `managed-by` (of the others they keep only the name).

use std::collections::BTreeMap;

pub const APP: &str = "app";
pub const VERSION: &str = "version";
pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "canary-operator";

/// Hash of what the operator last applied to a child. It tells "the user changed the release"
/// (hash differs) from "someone edited the child" (hash equal, content differs), and catches fields
/// we stopped setting, which a plain subset comparison cannot see.
pub const APPLIED_HASH: &str = "canary.dev/applied-hash";

/// Annotation through which a user asks something of an automatic rollout without editing its
/// spec (`pause`, `resume`, `promote`, `promote-full`, `abort`, `retry`, each optionally followed by
/// `@` and a timestamp). The operator acts on each value once and records it in status; it never
/// writes the annotation, which stays the user's.
pub const REQUEST: &str = "canary.dev/request";

/// Pod-template annotation with a hash of the version's configuration: changing the config changes
/// the template, and so rolls the pods, which `envFrom` alone would not do.
pub const CONFIG_HASH: &str = "canary.dev/config-hash";

/// Labels shared by every child of a release.
pub fn common(release: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP.to_owned(), release.to_owned()),
        (NAME.to_owned(), release.to_owned()),
        (INSTANCE.to_owned(), release.to_owned()),
        (MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
    ])
}

/// Labels that select the release's pods and no one else's: the Service's selector and, with the
/// version, each DestinationRule subset. `app` alone (the lab's selector) also matches another
/// application of the same name in the namespace, whose pods would then receive the release's
/// traffic; `managed-by: canary-operator` is a value only this operator writes, and `instance`
/// tells its releases apart. Both are on every pod the operator has ever created, so a Service
/// switched to this selector keeps its endpoints without rolling a pod.
pub fn release_selector(release: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (INSTANCE.to_owned(), release.to_owned()),
        (MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
    ])
}

/// Labels of one version's objects and pods.
pub fn version(release: &str, version: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = common(release);
    labels.insert(VERSION.to_owned(), version.to_owned());
    labels.insert(COMPONENT.to_owned(), component.to_owned());
    labels
}
