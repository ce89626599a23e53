//! The `CanaryRelease` custom resource (`canary.dev/v1alpha1`).
//!
//! Doc comments on the spec and status types are the text of `kubectl explain`, so they are written
//! for the person reading them there. Rules that the apiserver can enforce live here as schema
//! constraints and CEL rules; the rest is checked by `reconcile::validate` and reported as a condition.

// Printer columns repeat `type_ = "string"` and the like, which this lint takes for duplicates.
#![allow(clippy::duplicated_attributes)]

mod rollout;
mod status;
mod traffic;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{CustomResource, KubeSchema, Resource};

use serde::{Deserialize, Serialize};

pub use self::rollout::*;
pub use self::status::*;
pub use self::traffic::*;

/// Environment variable that carries the model name when `spec.modelEnv` is not set; the lab's
/// chat backend reads this one.
pub const DEFAULT_MODEL_ENV: &str = "AZURE_MODEL_NAME";

/// A canary release of one HTTP service in two versions, each pinned to its own model, with a
/// traffic split between them (Istio, or the Gateway API).
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "canary.dev",
    version = "v1alpha1",
    kind = "CanaryRelease",
    plural = "canaryreleases",
    singular = "canaryrelease",
    shortname = "crel",
    category = "canary",
    namespaced,
    status = "CanaryReleaseStatus",
    derive = "PartialEq",
    doc = "A canary release: two versions of one service, each with its own model, and the share of traffic the canary gets.",
    printcolumn(
        name = "Stable",
        type_ = "string",
        json_path = ".spec.stable.model",
        description = "Model of the stable version"
    ),
    printcolumn(
        name = "Canary",
        type_ = "string",
        json_path = ".spec.canary.model",
        description = "Model of the canary version"
    ),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".spec.weight",
        description = "Percent of traffic asked for the canary"
    ),
    printcolumn(
        name = "Applied",
        type_ = "integer",
        json_path = ".status.canaryWeight",
        description = "Percent of traffic the route (VirtualService or HTTPRoute) sends to the canary",
        priority = 1
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.rollout.phase",
        description = "Where an automatic rollout stands (empty in manual mode)"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether every object is in place and both versions are available"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.canary) || self.stable.name != self.canary.name").message("stable.name and canary.name must differ"))]
#[x_kube(validation = Rule::new("!has(self.autoscaling) || (!has(self.stable.replicas) && (!has(self.canary) || !has(self.canary.replicas)))").message("stable.replicas and canary.replicas must be unset when autoscaling is set: the autoscaler owns the replica count"))]
#[x_kube(validation = Rule::new("!(has(self.weight) && has(self.strategy))").message("set exactly one of weight (manual: you set the split) or strategy (automatic: steps, with optional analysis)"))]
#[x_kube(validation = Rule::new("!has(self.canary) || has(self.weight) || has(self.strategy)").message("set exactly one of weight (manual: you set the split) or strategy (automatic: steps, with optional analysis)"))]
#[x_kube(validation = Rule::new("has(self.canary) || !has(self.weight) || self.weight == 0").message("weight must be 0 (or unset) without a canary: the stable version serves everything"))]
#[x_kube(validation = Rule::new("!has(self.analysis) || has(self.strategy)").message("analysis applies only to an automatic release: set strategy too"))]
#[x_kube(validation = Rule::new("has(self.gateway) || (has(self.traffic) && (self.traffic.provider == 'gatewayAPI' || (has(self.traffic.mesh) && self.traffic.mesh)))").message("set gateway (traffic enters through an Istio ingress gateway), traffic.mesh: true (calls inside the mesh only), or traffic.provider: gatewayAPI"))]
#[x_kube(validation = Rule::new("!has(self.gateway) || !has(self.traffic) || self.traffic.provider == 'istio'").message("gateway is for the istio provider; with gatewayAPI the Gateways are traffic.gatewayAPI.parentRefs"))]
#[serde(rename_all = "camelCase")]
pub struct CanaryReleaseSpec {
    /// Container image both versions run unless a version sets its own `image`.
    #[schemars(length(min = 1))]
    pub image: String,

    /// Port the application listens on. The Service, the Istio routes and the container port use it.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Non-secret settings shared by both versions, written to each version's ConfigMap and passed
    /// to the container as environment variables. A version's own `config` is merged over these.
    /// Put API keys in the Secret named by `secretRef`, never here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,

    /// Keys of `config` (shared or a version's) that are known not to be credentials. The operator
    /// refuses settings whose name or value looks like a credential (an API key, a bearer token, a
    /// password in a URL, a long random string); list a key here only when such a refusal is wrong.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub not_secret: Vec<String>,

    /// Secret whose keys become environment variables of both versions (for example AZURE_API_KEY).
    /// The operator only references it; its values are never read or copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretReference>,

    /// Name of the environment variable that carries each version's `model`.
    #[serde(default = "default_model_env")]
    #[schemars(length(min = 1), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub model_env: String,

    /// The version that serves the traffic the canary does not get.
    pub stable: VersionSpec,

    /// The version under test. Without it the release is in its steady state: the stable version
    /// serves everything. To finish a promoted rollout, give `stable` the canary's spec and remove
    /// `canary` (`kubectl canary finalize` does both): no traffic moves and the old version's
    /// objects are removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<VersionSpec>,

    /// Manual mode: percent of requests the canary receives; the stable version receives the rest.
    /// Set this or `strategy`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub weight: Option<i32>,

    /// Automatic mode: the steps the canary's share goes through, each held for a while (and
    /// judged by `analysis` when set) before the next; the canary is promoted to 100 % after the
    /// last step, or rolled back to 0 % when its checks fail. Set this or `weight`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategySpec>,

    /// Automatic mode: how each step is judged, by queries to Prometheus. Without it, steps advance
    /// on time (and approvals) alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSpec>,

    /// Horizontal pod autoscaling for each version. When set, the operator creates one HPA per version
    /// and leaves the Deployments' replica count to it; when unset, `replicas` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// The Istio Gateway that brings traffic in: either let the operator create one (`selector`,
    /// `port`) or name gateways that already exist (`existing`). Required by the `istio` provider
    /// unless `traffic.mesh` routes calls made inside the mesh only; not used by `gatewayAPI`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IngressSpec>,

    /// Who routes requests to the versions (Istio, the default, or the Gateway API), from where,
    /// and whether a conversation stays with the version that first answered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficSpec>,
}

/// A reference to a Secret in the release's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// One version of the service.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionSpec {
    /// Version name: the Istio subset name, the value of the pods' `version` label, and the suffix of
    /// the version's objects (`<release>-<name>`). A DNS-1123 label such as `v1`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Model this version calls, passed in the environment variable named by `spec.modelEnv`.
    #[schemars(length(min = 1))]
    pub model: String,

    /// Image for this version only; defaults to `spec.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// Settings for this version only, merged over `spec.config`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,

    /// What this version's model costs, for the cost-per-request check. Not part of what runs:
    /// changing it does not start a new rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<PricingSpec>,

    /// Compute resources of this version's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Number of pods when `spec.autoscaling` is unset (default 1). Must be unset when autoscaling is on,
    /// because the autoscaler owns the replica count then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
}

/// Autoscaling bounds applied to each version.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct AutoscalingSpec {
    /// Lower bound of each version's replica count.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,

    /// Upper bound of each version's replica count.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,

    /// Average CPU utilization, in percent of the requested CPU, that the autoscaler aims for.
    #[serde(
        default = "default_cpu_target",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn default_min_replicas() -> i32 {
    1
}

fn default_cpu_target() -> i32 {
    80
}

fn default_model_env() -> String {
    DEFAULT_MODEL_ENV.to_owned()
}

impl CanaryRelease {
    /// The reference every child carries to its release. As the controller, so the garbage
    /// collector deletes the child with the release and no other controller adopts it; blocking
    /// the owner's deletion, so a foreground deletion of the release ends only once its children
    /// are gone. The build step writes it and the caches recognise it (keeping only the name), so
    /// both take it from here.
    pub fn child_owner_reference(name: &str, uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: CanaryRelease::api_version(&()).into_owned(),
            kind: CanaryRelease::kind(&()).into_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}
