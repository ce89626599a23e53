//! The `CanaryRelease` custom resource (`canary.dev/v1alpha1`).
//!
//! Doc comments on the spec and status types are the text of `kubectl explain`, so they are written
//! for the person reading them there. Rules that the apiserver can enforce live here as schema
//! constraints and CEL rules; the rest is checked by `reconcile::validate` and reported as a condition.

// Printer columns repeat `type_ = "string"` and the like, which this lint takes for duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};
use kube::{CustomResource, KubeSchema, Resource};
use serde::{Deserialize, Serialize};

/// Environment variable that carries the model name when `spec.modelEnv` is not set; the lab's
/// chat backend reads this one.
pub const DEFAULT_MODEL_ENV: &str = "AZURE_MODEL_NAME";

/// A canary release of one HTTP service in two versions, each pinned to its own model, with an
/// Istio traffic split between them.
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
        description = "Percent of traffic the VirtualService sends to the canary",
        priority = 1
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
#[x_kube(validation = Rule::new("self.stable.name != self.canary.name").message("stable.name and canary.name must differ"))]
#[x_kube(validation = Rule::new("!has(self.autoscaling) || (!has(self.stable.replicas) && !has(self.canary.replicas))").message("stable.replicas and canary.replicas must be unset when autoscaling is set: the autoscaler owns the replica count"))]
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

    /// The version under test.
    pub canary: VersionSpec,

    /// Percent of requests the canary receives; the stable version receives the rest.
    #[schemars(range(min = 0, max = 100))]
    pub weight: i32,

    /// Horizontal pod autoscaling for each version. When set, the operator creates one HPA per version
    /// and leaves the Deployments' replica count to it; when unset, `replicas` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// The Istio Gateway that brings traffic in: either let the operator create one (`selector`,
    /// `port`) or name gateways that already exist (`existing`).
    pub gateway: GatewaySpec,
}

fn default_model_env() -> String {
    DEFAULT_MODEL_ENV.to_owned()
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

/// Where traffic enters. Set `selector` to have the operator create a Gateway named after the
/// release, or `existing` to bind to gateways managed elsewhere; not both.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.selector) != has(self.existing)").message("set exactly one of gateway.selector (create a Gateway) or gateway.existing (use existing gateways)"))]
#[x_kube(validation = Rule::new("!has(self.existing) || !has(self.port)").message("gateway.port applies only to a Gateway the operator creates (gateway.selector)"))]
pub struct GatewaySpec {
    /// Labels of the ingress gateway pods the created Gateway binds to, for example
    /// `istio: aks-istio-ingressgateway-external`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub selector: Option<BTreeMap<String, String>>,

    /// Port the created Gateway listens on for HTTP (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// Existing gateways to bind the VirtualService to, as `name` (same namespace) or `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub existing: Option<Vec<String>>,

    /// Host names the VirtualService (and a created Gateway) accepts; `*` accepts any Host header.
    #[serde(default = "default_hosts")]
    #[schemars(length(min = 1))]
    pub hosts: Vec<String>,
}

fn default_hosts() -> Vec<String> {
    vec!["*".to_owned()]
}

/// What the operator last did and saw.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryReleaseStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Percent of traffic the VirtualService sends to the stable version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_weight: Option<i32>,

    /// Percent of traffic the VirtualService sends to the canary version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i32>,

    /// The stable version as deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<VersionStatus>,

    /// The canary version as deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<VersionStatus>,

    /// `Ready`, `Progressing` and `Degraded`, per the Kubernetes API conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One version as deployed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    /// Version name.
    pub name: String,
    /// Model the version calls.
    pub model: String,
    /// Image the version runs.
    pub image: String,
    /// Replicas the Deployment asks for.
    pub desired_replicas: i32,
    /// Replicas that are ready.
    pub ready_replicas: i32,
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
