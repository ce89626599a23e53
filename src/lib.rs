//! canary-operator: one `CanaryRelease` in, every object of a canary release out: its two
//! versions, and the routes (Istio's, or the Gateway API's) that split traffic between them.
//!
//! The reconcile is a pipeline (see [`reconcile`]): validate and build are pure functions of the
//! release; observe, apply and status are the only steps that talk to the API server.

pub mod api;
pub mod cache;
pub mod claims;
pub mod client;
pub mod context;
pub mod controller;
pub mod gateway_pods;
pub mod kinds;
pub mod labels;
pub mod memory;
pub mod metrics;
pub mod operator;
pub mod plugin;
pub mod prometheus;
pub mod providers;
pub mod readiness;
pub mod reconcile;
pub mod requests;
pub mod rollout;
pub mod route_claims;
pub mod stats;

/// Field manager of every server-side apply the operator sends. One manager for all writes, so
/// that the apiserver's managedFields show exactly which fields are ours.
pub const FIELD_MANAGER: &str = "canary-operator";

/// The step of the reconcile pipeline a request failed in: said by its error and its metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Reading what a decision needs beyond the caches.
    Observe,
    /// Writing (or confirming the absence of) a child.
    Apply,
    /// Deleting a child the release no longer wants.
    Prune,
    /// Writing the release's status.
    Status,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Observe => "observe",
            Step::Apply => "apply",
            Step::Prune => "prune",
            Step::Status => "status",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors that stop a reconcile and make it retry with backoff. A spec the operator cannot act on
/// is not an error: it becomes a status condition and waits for the user's next change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed, in `step`, about `object` (`ConfigMap chat-v2`).
    #[error("{step} {object}: {source}")]
    Request {
        step: Step,
        object: String,
        #[source]
        source: kube::Error,
    },

    #[error("could not encode {kind} {name} as JSON: {source}")]
    Encode {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("the cached copy of {kind} {name} could not be decoded: {source}")]
    Decode {
        kind: String,
        name: String,
        #[source]
        source: cache::DecodeError,
    },

    #[error("the cache of {0}s has not listed them yet; retrying")]
    CacheNotReady(String),

    #[error(
        "the {0} has no {1} yet; it must be read back from the API server before it can own objects"
    )]
    MissingMetadata(&'static str, &'static str),
}

impl Error {
    /// Wraps a failed request of `step` about `object`: `.map_err(Error::request(Step::Apply,
    /// format!("{kind} {name}")))`.
    pub fn request(step: Step, object: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let object = object.into();
        move |source| Error::Request {
            step,
            object,
            source,
        }
    }

    /// The step the error happened in; the cache and encoding errors all come from applying.
    pub fn step(&self) -> Step {
        match self {
            Error::Request { step, .. } => *step,
            Error::Encode { .. }
            | Error::Decode { .. }
            | Error::CacheNotReady(_)
            | Error::MissingMetadata(..) => Step::Apply,
        }
    }

    /// The API server's refusal, when that is what the error is.
    pub fn api_status(&self) -> Option<&kube::core::Status> {
        match self {
            Error::Request {
                source: kube::Error::Api(status),
                ..
            } => Some(status),
            _ => None,
        }
    }

    /// A short, stable label for metrics and logs: what kind of failure, beside its step.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Request {
                source: kube::Error::Api(status),
                ..
            } if status.code == 409 => "conflict",
            Error::Request {
                source: kube::Error::Api(_),
                ..
            } => "api",
            Error::Request { .. } => "transport",
            Error::Encode { .. } => "encode",
            Error::Decode { .. } => "decode",
            Error::CacheNotReady(_) => "cache",
            Error::MissingMetadata(..) => "metadata",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    /// The modules where decisions and statistics live stay free of Kubernetes crates, so they are
    /// tested by tables of plain values and can move to a crate of their own as they are. Within
    /// the crate they name only each other: a path to the API types or to build would bring the
    /// Kubernetes types back in by another door.
    #[test]
    fn pure_modules_import_no_kubernetes_crate() {
        let modules = [
            ("reconcile::decide", include_str!("reconcile/decide.rs")),
            (
                "reconcile::credentials",
                include_str!("reconcile/credentials.rs"),
            ),
            (
                "reconcile::validated",
                include_str!("reconcile/validated.rs"),
            ),
            ("reconcile::names", include_str!("reconcile/names.rs")),
            ("stats", include_str!("stats.rs")),
            ("claims", include_str!("claims.rs")),
            ("rollout", include_str!("rollout/mod.rs")),
            ("rollout::machine", include_str!("rollout/machine.rs")),
            ("rollout::state", include_str!("rollout/state.rs")),
            (
                "rollout::transitions",
                include_str!("rollout/transitions.rs"),
            ),
            ("rollout::requests", include_str!("rollout/requests.rs")),
            ("rollout::verdicts", include_str!("rollout/verdicts.rs")),
            ("rollout::clock", include_str!("rollout/clock.rs")),
            ("rollout::analysis", include_str!("rollout/analysis.rs")),
            ("rollout::template", include_str!("rollout/template.rs")),
            ("rollout::builtin", include_str!("rollout/builtin.rs")),
        ];
        let pure = |path: &str| {
            modules
                .iter()
                .any(|(module, _)| path == *module || path.starts_with(&format!("{module}::")))
        };
        for (module, text) in modules {
            for crate_name in ["kube", "k8s_openapi"] {
                assert!(
                    !text.contains(&format!("{crate_name}::")),
                    "{module} uses {crate_name}"
                );
            }
            let parent = module.split_once("::").map_or("", |(parent, _)| parent);
            for (prefix, base) in [("crate::", ""), ("super::", parent)] {
                for (at, _) in text.match_indices(prefix) {
                    let path: String = text[at + prefix.len()..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | ':' | '*'))
                        .collect();
                    // `use super::*` in a test module names the module itself.
                    let named = match (path.as_str(), base) {
                        ("*", _) => module.to_owned(),
                        (_, "") => path,
                        _ => format!("{base}::{path}"),
                    };
                    assert!(
                        pure(&named),
                        "{module} names {named}, which is not kube-free"
                    );
                }
            }
        }
    }
}
