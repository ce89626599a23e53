//! The Helm chart as users meet it: it lints clean and renders locked down for default and other
//! values; it installs into the local control plane (`make cluster-up`); and the permissions it
//! grants are exactly what the operator uses. The operator binary runs as a separate process with
//! a token of the chart's ServiceAccount, so the real RBAC authorizer judges every request of the
//! operator scenario (enough), and every granted verb on every resource shows up in the requests
//! it sent (nothing more than it uses).
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
mod helm;
mod rbac;
mod render;
mod scenario;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/canary-operator");
/// Release name and namespace for renders that never reach a cluster.
const RENDER_RELEASE: &str = "canary-operator";
const RENDER_NAMESPACE: &str = "operators";
