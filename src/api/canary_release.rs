//! The `CanaryRelease` custom resource (`canary.dev/v1alpha1`).
//!
//! Doc comments on the spec and status types are the text of `kubectl explain`, so they are written
//! for the person reading them there. Rules that the apiserver can enforce live here as schema
//! constraints and CEL rules; the rest is checked by `reconcile::validate` and reported as a condition.

// Printer columns repeat `type_ = "string"` and the like, which this lint takes for duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::{CustomResource, KubeSchema, Resource};
use schemars::JsonSchema;

use crate::rollout::Builtin;
use serde::{Deserialize, Serialize};

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
    pub gateway: Option<GatewaySpec>,

    /// Who routes requests to the versions (Istio, the default, or the Gateway API), from where,
    /// and whether a conversation stays with the version that first answered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficSpec>,
}

/// How requests reach the versions.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.provider == 'gatewayAPI') == has(self.gatewayAPI)").message("traffic.gatewayAPI is set with provider gatewayAPI, and only then"))]
#[x_kube(validation = Rule::new("!has(self.mesh) || !self.mesh || self.provider == 'istio'").message("traffic.mesh applies to the istio provider"))]
pub struct TrafficSpec {
    /// What the operator writes to route requests: `istio` (a DestinationRule with a subset per
    /// version and a VirtualService splitting between them, as in the lab) or `gatewayAPI` (a
    /// Service per version, named `<release>-<version>`, and an HTTPRoute splitting between them,
    /// for any Gateway API implementation). Changing it on a live release creates the new objects
    /// before the old ones are removed.
    #[serde(default)]
    pub provider: TrafficProvider,

    /// Istio: also split calls made inside the mesh to the release's Service (the VirtualService
    /// is bound to `mesh` and names the Service's host). Without `gateway`, only those are split.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mesh: bool,

    /// Gateway API: the Gateways the HTTPRoute attaches to, and the host names it serves.
    #[serde(
        default,
        rename = "gatewayAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiSpec>,

    /// Keeps a conversation on the version that answered its first request: each answer of the
    /// split carries the version (a cookie, or a response header for API clients), and a request
    /// that carries it back goes to that version while it has a share of the traffic. Without it
    /// every request is split anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stickiness: Option<StickinessSpec>,
}

/// Who routes requests to the versions.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum TrafficProvider {
    /// Istio's DestinationRule and VirtualService.
    #[default]
    #[serde(rename = "istio")]
    Istio,
    /// The Kubernetes Gateway API's HTTPRoute.
    #[serde(rename = "gatewayAPI")]
    GatewayApi,
}

impl TrafficProvider {
    pub const ALL: [TrafficProvider; 2] = [TrafficProvider::Istio, TrafficProvider::GatewayApi];

    /// The name written in the spec and in `--traffic-providers`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficProvider::Istio => "istio",
            TrafficProvider::GatewayApi => "gatewayAPI",
        }
    }

    pub fn parse(text: &str) -> Option<TrafficProvider> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

/// The Gateway API's side of a release.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiSpec {
    /// The Gateways (or their listeners) the HTTPRoute attaches to. A Gateway in another namespace
    /// must allow routes from this one (its listener's `allowedRoutes`); a route no parent accepts
    /// makes the release not Ready, with the Gateway's reason.
    #[schemars(length(min = 1, max = 32))]
    pub parent_refs: Vec<ParentRefSpec>,

    /// Host names the HTTPRoute serves, such as chat.example.com or *.example.com; empty serves
    /// every host name of the listeners it attaches to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub hostnames: Vec<String>,
}

/// A Gateway, or one listener of it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentRefSpec {
    /// The Gateway's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// The Gateway's namespace; the release's own when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,

    /// One listener of the Gateway, by name; all of its listeners that allow the route when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,

    /// The listeners of the Gateway on this port only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// How a conversation is kept on one version. Set exactly one of `cookie` and `header`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.cookie) != has(self.header)").message("set exactly one of stickiness.cookie (browsers) or stickiness.header (API clients)"))]
pub struct StickinessSpec {
    /// For browsers: each answer of the split sets this cookie to the version that gave it, and
    /// the browser sends it back with every later request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieStickiness>,

    /// For API clients: each answer of the split carries this header with the version that gave
    /// it; a client that sends the header (with that value) on later requests of the conversation
    /// reaches the same version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderStickiness>,
}

/// The cookie that carries a conversation's version.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CookieStickiness {
    /// The cookie's name, for example `canary-model`.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub name: String,

    /// How long the browser keeps the cookie, as a duration (`30m`, `24h`); a session cookie,
    /// kept until the browser closes, when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// The header that carries a conversation's version.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderStickiness {
    /// The header's name, in lower case, for example `x-canary-model`.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9][a-z0-9-]*$"))]
    pub name: String,
}

fn default_model_env() -> String {
    DEFAULT_MODEL_ENV.to_owned()
}

/// The steps of an automatic rollout.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.steps.size() == 0 || self.steps[self.steps.size() - 1].weight == 100").message("the last step's weight must be 100: the rollout ends with the canary serving everything"))]
#[x_kube(validation = Rule::new("self.steps.all(a, self.steps.filter(b, b.weight == a.weight).size() == 1) && self.steps.map(s, s.weight).isSorted()").message("step weights must be strictly increasing"))]
pub struct StrategySpec {
    /// Weights strictly increasing, the last one 100. At most 20 steps.
    #[schemars(length(min = 1, max = 20))]
    pub steps: Vec<StepSpec>,

    /// How long a step may wait for the canary's replicas before its weight is applied (Go
    /// duration, default 10m, at least 10s). Meanwhile the rollout's message says what the
    /// canary's Deployment reports (an exceeded quota, a failed pod creation); past it the rollout
    /// does what `progressDeadlineAction` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
    )]
    pub progress_deadline: Option<String>,

    /// What a rollout does when a step's replicas are not ready within `progressDeadline`:
    /// `Pause` (default: held with reason CanaryNotReady, and going on by itself once the replicas
    /// are ready) or `Abort` (canary to 0 %; `kubectl canary retry` starts again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_action: Option<DeadlineAction>,
}

/// What a rollout does past its progress deadline.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeadlineAction {
    Pause,
    Abort,
}

/// One step: a share of traffic for the canary, held for a while.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepSpec {
    /// Percent of requests the canary receives during the step. Sent only once the canary has the
    /// replicas for it.
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,

    /// How long the step lasts at least, counted from when its weight was applied, as a Go
    /// duration (`30s`, `5m`, `1h30m`). With analysis, the step also waits for its last
    /// measurement to pass.
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
    )]
    pub duration: String,

    /// Hold after this step (its duration passed and its checks passed) until someone runs
    /// `kubectl canary promote`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval: bool,
}

/// How an automatic rollout is judged: PromQL checks run against Prometheus once per `interval`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// The Prometheus that holds the versions' metrics.
    pub prometheus: PrometheusSpec,

    /// Time between measurements, and the window `{{interval}}` stands for in queries (Go
    /// duration; default 1m; at least the operator's `--min-analysis-interval`).
    #[serde(default = "default_interval")]
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
    )]
    pub interval: String,

    /// No measurement for this long after a weight change, while the window still holds the old
    /// split (Go duration; default 30s; `0s` for none).
    #[serde(default = "default_warmup")]
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
    )]
    pub warmup: String,

    /// Failed measurements tolerated in one step; one more rolls the canary back to 0 % (default 1).
    #[serde(default = "default_failure_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub failure_limit: i32,

    /// Inconclusive measurements (no data, NaN) in one step that pause the rollout with reason
    /// NoData and the weight held (default 5). An inconclusive measurement never counts as a pass.
    #[serde(default = "default_inconclusive_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub inconclusive_limit: i32,

    /// Query errors in a row (Prometheus unreachable, 5xx, timeout, bad PromQL) that pause the
    /// rollout with reason MetricsUnavailable and the weight held (default 3). It resumes by itself
    /// when queries answer again: not being able to see never rolls back nor promotes.
    #[serde(default = "default_error_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub error_limit: i32,

    /// The checks; each measurement runs every one of them. At most 10. Built-in checks
    /// (`builtin: error-rate`, ...) know the chat backend's metrics (OpenTelemetry GenAI names);
    /// a check with `query` is one's own.
    #[schemars(length(min = 1, max = 10))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, (has(d.name) ? d.name : d.builtin) == (has(c.name) ? c.name : c.builtin)))").message("check names must be unique (a built-in check is named after it unless it has a name)"))]
    pub checks: Vec<CheckSpec>,
}

fn default_interval() -> String {
    "1m".to_owned()
}

fn default_warmup() -> String {
    "30s".to_owned()
}

fn default_failure_limit() -> i32 {
    1
}

fn default_inconclusive_limit() -> i32 {
    5
}

fn default_error_limit() -> i32 {
    3
}

/// Where Prometheus answers.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSpec {
    /// Base URL of Prometheus's HTTP API, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    )]
    pub address: String,

    /// Longest wait for one query (Go duration; default 5s). A query that takes longer is an error.
    #[serde(default = "default_query_timeout")]
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
    )]
    pub timeout: String,
}

fn default_query_timeout() -> String {
    "5s".to_owned()
}

/// One check of the canary: a built-in one, or one's own PromQL query.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.query) != has(self.builtin)").message("set query (a check of your own) or builtin, not both"))]
#[x_kube(validation = Rule::new("has(self.name) || has(self.builtin)").message("a check of your own needs a name"))]
#[x_kube(validation = Rule::new("has(self.builtin) || has(self.min) || has(self.max) || has(self.compareToStable)").message("a check needs a bound: min, max or compareToStable"))]
#[x_kube(validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max").message("min must not exceed max"))]
#[x_kube(validation = Rule::new("!has(self.minSamples) || has(self.builtin)").message("minSamples applies to built-in checks"))]
pub struct CheckSpec {
    /// Name shown in status and Events; unique in the release. A built-in check is named after
    /// itself unless given a name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: Option<String>,

    /// A check that knows the model swap, written against the OpenTelemetry GenAI client metrics
    /// (see the README's metric contract); its bounds and action have defaults that `min`, `max`,
    /// `compareToStable`, `minSamples` and `action` replace one by one.
    /// `error-rate`: share of 5xx and timeouts (429 left out), <= 2% and <= stable + 1 point,
    /// Rollback. `rate-limited`: share of 429, <= 5% and <= 2 x stable, StepBack.
    /// `ttft-p95`: p95 time to first chunk, <= 2s and <= 1.3 x stable, Rollback.
    /// `latency-p95`: p95 duration of successes, <= 1.25 x stable, Rollback.
    /// `tokens-per-second`: output tokens per second of generation, >= 0.7 x stable, Rollback.
    /// `cost-per-request`: cost per 1,000 requests from token counts and each version's
    /// `pricing`, <= 1.5 x stable, Warn. Rates are judged by the exact 95% interval of their
    /// counts; the others need `minSamples` requests behind them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinCheck>,

    /// PromQL instant query that returns one number for one version. Placeholders:
    /// `{{namespace}}`, `{{release}}`, `{{version}}` (the version measured), `{{model}}` (its model)
    /// and `{{interval}}` (the analysis interval, e.g. `60s`). An empty result or NaN (as a ratio
    /// with no requests gives) is inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub query: Option<String>,

    /// Lowest acceptable value of the canary's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,

    /// Highest acceptable value of the canary's result (for a rate, a share: 0.02 is 2%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,

    /// Also measure the stable version with the same queries over the same window, and bound the
    /// canary's value relative to the stable's. Ratios are not compared when the stable's value
    /// is 0. For a rate, the stable's upper 95% bound is what the canary is compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare_to_stable: Option<ComparisonSpec>,

    /// Built-in checks other than rates: requests the value needs behind it, for each version,
    /// before it is judged; fewer is inconclusive (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub min_samples: Option<i32>,

    /// What a failure (beyond `failureLimit`) does: Rollback (canary to 0%), StepBack (back to
    /// the previous step's weight, paused until `kubectl canary resume`) or Warn (an Event and
    /// the status, no effect on the rollout). Default Rollback, or the built-in check's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<CheckAction>,
}

/// The built-in checks of a model swap.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BuiltinCheck {
    ErrorRate,
    RateLimited,
    TtftP95,
    LatencyP95,
    TokensPerSecond,
    CostPerRequest,
}

impl BuiltinCheck {
    /// The rollout's own name for it (the API's enum is the wire format, the rollout's the logic).
    pub fn builtin(self) -> Builtin {
        match self {
            BuiltinCheck::ErrorRate => Builtin::ErrorRate,
            BuiltinCheck::RateLimited => Builtin::RateLimited,
            BuiltinCheck::TtftP95 => Builtin::TtftP95,
            BuiltinCheck::LatencyP95 => Builtin::LatencyP95,
            BuiltinCheck::TokensPerSecond => Builtin::TokensPerSecond,
            BuiltinCheck::CostPerRequest => Builtin::CostPerRequest,
        }
    }
}

/// What a check's failure does to the rollout.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CheckAction {
    Rollback,
    StepBack,
    Warn,
}

/// Bounds of the canary's value relative to the stable's.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.minRatio) || has(self.maxRatio) || has(self.maxIncrease)").message("set minRatio, maxRatio or maxIncrease"))]
#[x_kube(validation = Rule::new("!has(self.minRatio) || !has(self.maxRatio) || self.minRatio <= self.maxRatio").message("minRatio must not exceed maxRatio"))]
pub struct ComparisonSpec {
    /// Lowest acceptable canary / stable ratio, e.g. 0.8 for "at least 80 % of the stable's".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub min_ratio: Option<f64>,

    /// Highest acceptable canary / stable ratio, e.g. 1.5 for "at most 50 % worse than stable".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_ratio: Option<f64>,

    /// Most the canary's value may exceed the stable's, in the check's unit (for a rate, a
    /// share: 0.01 is one percentage point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_increase: Option<f64>,
}

/// What a model's tokens cost, per million, as its provider lists them (any currency, the same
/// for both versions).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PricingSpec {
    /// Price of one million input (prompt) tokens.
    #[schemars(range(min = 0.0))]
    pub input_per_million_tokens: f64,

    /// Price of one million output (completion) tokens.
    #[schemars(range(min = 0.0))]
    pub output_per_million_tokens: f64,
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

    /// Percent of traffic the route (VirtualService or HTTPRoute) sends to the stable version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_weight: Option<i32>,

    /// Percent of traffic the route (VirtualService or HTTPRoute) sends to the canary version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i32>,

    /// The stable version as deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<VersionStatus>,

    /// The canary version as deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<VersionStatus>,

    /// Where an automatic rollout stands; absent in manual mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,

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

/// An automatic rollout's state. All of it lives here, so an operator restarted mid-step goes on
/// with the same step and the same start time.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Idle, Progressing, Paused, Promoted (the canary serves 100 %), RolledBack (a check failed
    /// too often: canary at 0 %) or Aborted (by request: canary at 0 %).
    pub phase: String,

    /// Why a Paused rollout waits: Requested (`kubectl canary pause`; `resume` continues),
    /// AwaitingApproval (`promote` continues), NoData (too many inconclusive measurements),
    /// MetricsUnavailable (queries fail; resumes by itself when they answer), RateLimited (the
    /// rate-limited check failed: stepped back one step; `resume` continues), SteppedBack
    /// (another StepBack check failed; `resume` continues) or CanaryNotReady (the step's replicas
    /// were not ready within `spec.strategy.progressDeadline`; goes on by itself once they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_reason: Option<String>,

    /// Where the rollout stands, in a sentence.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,

    /// Hash of the canary's effective spec (image, model, config, resources) being rolled out.
    pub revision: String,

    /// The last revision rolled back; it is not rolled out again until `kubectl canary retry` or
    /// a change to the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_revision: Option<String>,

    /// Current step, counted from 1.
    pub step: i32,

    /// Number of steps.
    pub steps: i32,

    /// When the current step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_start_time: Option<Time>,

    /// When the current step's weight was applied (its duration and warmup count from here);
    /// unset while the canary's replicas are awaited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_applied_time: Option<Time>,

    /// Percent of traffic the rollout gives the canary now.
    pub weight: i32,

    /// `kubectl canary promote --full` is in progress: 100 % once the replicas are ready.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_promotion: bool,

    /// When the checks were last measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_measurement_time: Option<Time>,

    /// Verdict of the last measurement in this step: Pass, Fail, Inconclusive or Error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<String>,

    /// Failed measurements in this step.
    #[serde(default)]
    pub failures: i32,

    /// Inconclusive measurements in this step.
    #[serde(default)]
    pub inconclusive: i32,

    /// Query errors in a row.
    #[serde(default)]
    pub consecutive_errors: i32,

    /// The last `canary.dev/request` acted on; the same request is not acted on twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,

    /// The last `canary.dev/request` refused because its time stamp was more than 5 minutes ahead
    /// of the operator's clock (a machine with a wrong clock): it is not acted on, not even once
    /// the clock catches up with its stamp, and it does not count as the last request, so
    /// requests made after it with a right clock are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_request: Option<String>,

    /// Each check as last measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub checks: Vec<CheckStatus>,
}

/// One check as last measured, with its counts in the current step.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    pub name: String,
    /// Pass, Fail, Inconclusive or Error.
    pub verdict: String,
    /// The canary's value (absent when there was none, or NaN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The stable's value, when the check compares with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_value: Option<f64>,
    /// Both values, the bound and the sample sizes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The bound the canary is held to, e.g. `≤ 2% and ≤ stable + 1 point`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bound: String,
    /// Requests behind the canary's value in the window, when the check counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_size: Option<i64>,
    /// Requests behind the stable's value in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_sample_size: Option<i64>,
    /// Rollback, StepBack or Warn.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// The message of the last measurement that compared the canary with the stable, kept once
    /// the canary has 100 % and the stable is no longer measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_comparison: Option<String>,
    #[serde(default)]
    pub passes: i32,
    #[serde(default)]
    pub failures: i32,
    #[serde(default)]
    pub inconclusive: i32,
    #[serde(default)]
    pub errors: i32,
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
