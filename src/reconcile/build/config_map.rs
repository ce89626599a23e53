use k8s_openapi::api::core::v1::ConfigMap;

use super::metadata;
use crate::labels;
use crate::reconcile::validate::{Validated, Version};

/// The version's settings and model, consumed by the container through `envFrom`. Secrets never go
/// here: validation refuses keys that look like credentials.
pub fn config_map(v: &Validated, version: &Version) -> ConfigMap {
    ConfigMap {
        metadata: metadata(
            v,
            &version.object_name,
            labels::version(&v.name, &version.name, version.role.as_str()),
        ),
        data: Some(version.config.clone()),
        ..ConfigMap::default()
    }
}
