//! Types of the APIs the operator reads and writes: its own `CanaryRelease` and the Istio
//! networking resources it manages.

pub mod canary_release;
pub mod istio;

pub use canary_release::{
    AnalysisSpec, AutoscalingSpec, BuiltinCheck, CanaryRelease, CanaryReleaseSpec,
    CanaryReleaseStatus, CheckAction, CheckSpec, CheckStatus, ComparisonSpec, GatewaySpec,
    PricingSpec, PrometheusSpec, RolloutStatus, SecretReference, StepSpec, StrategySpec,
    VersionSpec, VersionStatus,
};
