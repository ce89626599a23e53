use k8s_openapi::api::core::v1::ConfigMap;

use crate::labels;
use crate::reconcile::meta::metadata;
use crate::reconcile::validated::{Validated, Version};

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    #[allow(unused_imports)]
    use crate::reconcile::testing::{canary, canary_spec};
    use crate::reconcile::testing::{lab_validated, owner, to_json};

    #[test]
    fn lab_config_maps_carry_shared_config_and_each_model() {
        let v = lab_validated();
        let expected = |version: &str, component: &str, model: &str| {
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": format!("azureopenaichat-{version}"),
                    "namespace": "azureopenai",
                    "labels": {
                        "app": "azureopenaichat",
                        "version": version,
                        "app.kubernetes.io/name": "azureopenaichat",
                        "app.kubernetes.io/instance": "azureopenaichat",
                        "app.kubernetes.io/component": component,
                        "app.kubernetes.io/managed-by": "canary-operator",
                    },
                    "ownerReferences": owner(),
                },
                "data": {
                    "AZURE_API_URL": "https://example.openai.azure.com/",
                    "AZURE_MODEL_NAME": model,
                },
            })
        };
        assert_eq!(
            to_json(&config_map(&v, &v.stable)),
            expected("v1", "stable", "gpt-4.1")
        );
        assert_eq!(
            to_json(&config_map(&v, canary(&v))),
            expected("v2", "canary", "gpt-4o")
        );
    }
}
