//! An automatic rollout: its steps, and the analysis and checks that judge them.

#![allow(clippy::duplicated_attributes)]

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rollout::Builtin;

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
