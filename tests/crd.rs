//! The committed CRD (and the Helm chart's copy, once it exists) must be what the code generates.

use canary_operator::api::CanaryRelease;
use kube::CustomResourceExt;

#[test]
fn committed_crd_is_current() {
    let generated = serde_norway::to_string(&CanaryRelease::crd())
        .unwrap_or_else(|e| panic!("render CRD: {e}"));
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crd/canaryrelease.yaml"
    ))
    .unwrap_or_else(|e| panic!("read crd/canaryrelease.yaml: {e}"));
    assert!(
        generated == committed,
        "crd/canaryrelease.yaml is stale: run `cargo run -- crd > crd/canaryrelease.yaml` and commit it"
    );
}
