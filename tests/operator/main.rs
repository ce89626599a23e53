//! The operator against the real local control plane (`make cluster-up`): every behaviour of the
//! CanaryRelease issue, with the operator running in-process and scoped to each test's namespace.
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

mod children;
#[path = "../common/mod.rs"]
mod common;
mod conflicts;
mod drift;
mod examples;
mod gateway_api;
mod istio;
mod selection;
mod validation;
mod writes;

use std::time::Duration;

use canary_operator::api::CanaryRelease;
use kube::Resource;

fn controlled_by(object: &impl Resource, release: &CanaryRelease) -> bool {
    object.meta().owner_references.iter().flatten().any(|o| {
        o.controller == Some(true)
            && Some(&o.uid) == release.metadata.uid.as_ref()
            && o.kind == "CanaryRelease"
    })
}

/// Lets in-flight reconciles (triggered by our own writes' watch events) finish.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}
