use k8s_openapi::api::core::v1::Service;

use crate::labels;
use crate::reconcile::meta::metadata;
use crate::reconcile::validated::{Validated, Version};
use crate::reconcile::workload::service;

/// One ClusterIP Service per version, over that version's pods only: the Gateway API splits
/// between Services, where Istio splits one Service by subset. Built like the release's own
/// Service (the port named `http`), with the version added to its selector.
pub fn version_service(v: &Validated, version: &Version) -> Service {
    let mut built = service(v);
    let name = v.version_service(version);
    built.metadata = metadata(
        v,
        &name,
        labels::version(&v.name, &version.name, version.role.as_str()),
    );
    if let Some(selector) = built.spec.as_mut().and_then(|s| s.selector.as_mut()) {
        selector.insert(labels::VERSION.to_owned(), version.name.clone());
    }
    built
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::reconcile::testing::{lab_validated, to_json};

    #[test]
    fn each_version_has_a_service_over_its_own_pods() {
        let v = lab_validated();
        let built = to_json(&version_service(&v, &v.stable));
        assert_eq!(built["metadata"]["name"], "azureopenaichat-v1");
        assert_eq!(built["metadata"]["labels"]["version"], "v1");
        assert_eq!(
            built["spec"]["selector"],
            json!({
                "app.kubernetes.io/instance": "azureopenaichat",
                "app.kubernetes.io/managed-by": "canary-operator",
                "version": "v1",
            })
        );
        assert_eq!(
            built["spec"]["ports"],
            json!([{"name": "http", "port": 5000, "targetPort": 5000, "protocol": "TCP"}])
        );
    }
}
