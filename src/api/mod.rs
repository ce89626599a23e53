//! Types of the APIs the operator reads and writes: its own `CanaryRelease`, and the Istio and
//! Gateway API networking resources it manages.

pub mod canary_release;
pub mod gateway_api;
pub mod istio;

pub use canary_release::{
    AnalysisSpec, AutoscalingSpec, BuiltinCheck, CanaryRelease, CanaryReleaseSpec,
    CanaryReleaseStatus, CheckAction, CheckSpec, CheckStatus, ComparisonSpec, CookieStickiness,
    DeadlineAction, GatewayApiSpec, HeaderStickiness, IngressSpec, ParentRefSpec, PricingSpec,
    PrometheusSpec, RolloutStatus, SecretReference, StepSpec, StickinessSpec, StrategySpec,
    TrafficProvider, TrafficSpec, VersionSpec, VersionStatus,
};
