//! Types of the APIs the operator reads and writes: its own `CanaryRelease` and the Istio
//! networking resources it manages.

pub mod canary_release;
pub mod istio;

pub use canary_release::{
    AutoscalingSpec, CanaryRelease, CanaryReleaseSpec, CanaryReleaseStatus, GatewaySpec,
    SecretReference, VersionSpec, VersionStatus,
};
