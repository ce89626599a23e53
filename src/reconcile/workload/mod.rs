//! Pure: the workload children, the same whichever provider routes the traffic: per version a
//! ConfigMap, a Deployment and (with autoscaling) an HPA, and the release's own Service over
//! every version's pods. One file per kind.

mod config_map;
mod deployment;
mod hpa;
mod service;

pub use config_map::config_map;
pub use deployment::deployment;
pub use hpa::autoscaler;
pub use service::service;
