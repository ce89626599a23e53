//! The committed CRD and the Helm chart's copy of it must be what the code generates.

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

/// Helm installs the chart's `crds/` copy; it must be byte for byte the committed (and so the
/// generated) CRD. `make crd` writes both.
#[test]
fn helm_chart_crd_is_the_committed_crd() {
    let read = |path: &str| {
        let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {path}: {e}"))
    };
    let committed = read("crd/canaryrelease.yaml");
    let chart = read("charts/canary-operator/crds/canaryrelease.yaml");
    assert!(
        chart == committed,
        "charts/canary-operator/crds/canaryrelease.yaml differs from crd/canaryrelease.yaml: run `make crd`"
    );
}
