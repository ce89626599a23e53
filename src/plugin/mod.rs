//! `kubectl canary`: the kubectl plugin that shows a release (`status`), shifts its traffic
//! (`set-weight`) and checks that the split which really reaches the versions is the one declared
//! (`verify`). The binary is `src/bin/kubectl-canary.rs`; everything it does lives here so that
//! the arithmetic, the classification of answers and the rendering are unit-tested without a
//! cluster or a network.

pub mod cluster;
pub mod duration;
pub mod finalize;
pub mod http;
pub mod request;
pub mod sample;
pub mod set_weight;
pub mod status;
pub mod table;
pub mod verify;

use std::time::Duration;

/// Field manager of the plugin's writes, so `managedFields` tells a weight set with
/// `kubectl canary` from one set with `kubectl edit` or by the operator.
pub const FIELD_MANAGER: &str = "kubectl-canary";

/// Why a plugin command failed. `verify`'s "could not measure" is a result, not an error: it is
/// [`verify::Agreement::Unmeasured`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot load the Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster): {0}"
    )]
    InferConfig(#[from] kube::config::InferConfigError),

    #[error("cannot load the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),

    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("canaryrelease {name:?} not found in namespace {namespace:?}")]
    NotFound { name: String, namespace: String },

    #[error("timed out after {} waiting for {what}; {seen}", duration::display(*.after))]
    WaitTimeout {
        what: String,
        after: Duration,
        seen: String,
    },

    #[error("the operator cannot apply the new weight ({reason}): {message}")]
    Refused { reason: String, message: String },

    #[error("cannot build an HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),

    #[error("invalid URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },

    #[error("cannot encode the result as JSON: {0}")]
    Json(#[from] serde_json::Error),

    #[error("{0}")]
    Usage(String),
}

/// Output format of `status` and `verify`, as kubectl's `-o`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    // Tables for a person.
    #[default]
    Text,
    // One JSON document for scripts.
    Json,
}
