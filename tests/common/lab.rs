//! The lab's release (examples/lab.yaml) in a test namespace, and the edits people make to it.

use std::time::Duration;

use canary_operator::api::CanaryRelease;
use canary_operator::api::istio::VirtualService;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::{TestNs, wait_for};

/// examples/lab.yaml, named `name`, in the test's namespace.
pub fn release(ns: &TestNs, name: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lab.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let mut release: Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"));
    release["metadata"]["namespace"] = json!(ns.name);
    release["metadata"]["name"] = json!(name);
    release
}

/// The Secret the lab's release references.
pub async fn create_secret(ns: &TestNs) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "azure-openai"},
        "stringData": {"AZURE_API_KEY": "not-a-real-key"},
    }))
    .unwrap_or_else(|e| panic!("secret: {e}"));
    if let Err(e) = Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
    {
        panic!("create the Secret: {e}");
    }
}

/// `kubectl apply --server-side` of the lab's release named `name`.
pub async fn apply(ns: &TestNs, name: &str) {
    if let Err(e) = try_apply(ns, name).await {
        panic!("apply release {name}: {e}");
    }
}

pub async fn try_apply(ns: &TestNs, name: &str) -> Result<(), kube::Error> {
    Api::<CanaryRelease>::namespaced(ns.client.clone(), &ns.name)
        .patch(
            name,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(release(ns, name)),
        )
        .await
        .map(|_| ())
}

/// `kubectl patch --type merge` of the release's weight.
pub async fn set_weight(ns: &TestNs, name: &str, weight: i32) -> Result<(), kube::Error> {
    Api::<CanaryRelease>::namespaced(ns.client.clone(), &ns.name)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"weight": weight}})),
        )
        .await
        .map(|_| ())
}

/// The canary's weight in the release's VirtualService (its subset is `v2` in the lab).
pub async fn canary_weight(ns: &TestNs, name: &str) -> Option<i32> {
    Api::<VirtualService>::namespaced(ns.client.clone(), &ns.name)
        .get(name)
        .await
        .ok()?
        .weight_of("v2")
}

pub async fn wait_canary_weight(ns: &TestNs, name: &str, weight: i32, within: Duration) {
    wait_for(
        &format!("VirtualService {name} at {weight}% canary"),
        within,
        async || (canary_weight(ns, name).await? == weight).then_some(()),
    )
    .await;
}
