//! Fixtures for the pure tests: the lab's example as the operator would receive it.

use crate::api::CanaryRelease;

pub const UID: &str = "8d3b5c1e-0000-4000-8000-000000000001";

/// `examples/lab.yaml`, with the uid and generation the API server would have given it.
pub fn lab_release() -> CanaryRelease {
    let mut release: CanaryRelease =
        serde_norway::from_str(include_str!("../../examples/lab.yaml"))
            .unwrap_or_else(|e| panic!("examples/lab.yaml: {e}"));
    release.metadata.uid = Some(UID.to_owned());
    release.metadata.generation = Some(1);
    release
}

/// Every example under `examples/`, validated: together they use every optional feature of the
/// spec (resources, fixed replicas, image overrides, an existing Gateway, a Secret).
pub fn examples() -> Vec<(String, super::validated::Validated)> {
    example_releases()
        .into_iter()
        .map(|(file, _, validated)| (file, validated))
        .collect()
}

/// Every example under `examples/`, as the operator receives it and validated.
pub fn example_releases() -> Vec<(String, CanaryRelease, super::validated::Validated)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut release: CanaryRelease =
                serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            release.metadata.uid = Some(UID.to_owned());
            release.metadata.generation = Some(1);
            let validated = super::validate::validate(&release, "cluster.local")
                .unwrap_or_else(|p| panic!("{}: {p}", path.display()));
            (path.display().to_string(), release, validated)
        })
        .collect()
}

/// The decision for a release steered by its spec, as the decide step makes it.
pub fn decided(v: &super::validated::Validated) -> super::decide::Decision {
    super::decide::decide(&v.strategy, &super::decide::Observation::default())
}

/// The children built for `v` with the decision its spec asks for.
pub fn built(v: &super::validated::Validated) -> super::children::Children {
    super::build::build(v, &decided(v))
}

/// `examples/gateway-api.yaml`: the lab routed by an HTTPRoute.
pub fn gateway_api_validated() -> super::validated::Validated {
    let mut release: CanaryRelease =
        serde_norway::from_str(include_str!("../../examples/gateway-api.yaml"))
            .unwrap_or_else(|e| panic!("examples/gateway-api.yaml: {e}"));
    release.metadata.uid = Some(UID.to_owned());
    release.metadata.generation = Some(1);
    super::validate::validate(&release, "cluster.local")
        .unwrap_or_else(|p| panic!("gateway-api example is invalid: {p}"))
}

pub fn lab_validated() -> super::validated::Validated {
    super::validate::validate(&lab_release(), "cluster.local")
        .unwrap_or_else(|p| panic!("lab example is invalid: {p}"))
}

/// The owner reference every child of the lab example must carry.
pub fn owner() -> serde_json::Value {
    serde_json::json!([{
        "apiVersion": "canary.dev/v1alpha1",
        "kind": "CanaryRelease",
        "name": "azureopenaichat",
        "uid": UID,
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

/// Metadata of the lab example's objects shared by both versions (Service, Istio objects).
pub fn shared_metadata() -> serde_json::Value {
    serde_json::json!({
        "name": "azureopenaichat",
        "namespace": "azureopenai",
        "labels": {
            "app": "azureopenaichat",
            "app.kubernetes.io/name": "azureopenaichat",
            "app.kubernetes.io/instance": "azureopenaichat",
            "app.kubernetes.io/managed-by": "canary-operator",
        },
        "ownerReferences": owner(),
    })
}

/// Serializes an object without the applied-hash annotation, which the whole-object assertions
/// leave out (it is tested on its own).
pub fn to_json<T: serde::Serialize>(object: &T) -> serde_json::Value {
    let mut value = serde_json::to_value(object).unwrap_or_else(|e| panic!("serialize: {e}"));
    if let Some(annotations) = value
        .pointer_mut("/metadata/annotations")
        .and_then(|a| a.as_object_mut())
    {
        annotations.remove(crate::labels::APPLIED_HASH);
        if annotations.is_empty()
            && let Some(meta) = value
                .pointer_mut("/metadata")
                .and_then(|m| m.as_object_mut())
        {
            meta.remove("annotations");
        }
    }
    value
}

/// The canary of a validated release that has one.
pub fn canary(v: &super::validated::Validated) -> &super::validated::Version {
    v.canary
        .as_ref()
        .unwrap_or_else(|| panic!("{} has no canary", v.name))
}

/// The canary of a release's spec that has one, to edit.
pub fn canary_spec(r: &mut CanaryRelease) -> &mut crate::api::VersionSpec {
    r.spec
        .canary
        .as_mut()
        .unwrap_or_else(|| panic!("the release has no canary"))
}
