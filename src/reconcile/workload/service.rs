use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::labels;
use crate::reconcile::meta::metadata;
use crate::reconcile::validated::Validated;

/// One ClusterIP Service over both versions' pods, and only theirs ([`labels::release_selector`]);
/// Istio splits its traffic by subset. The port is named `http` so Istio treats the traffic as
/// HTTP without protocol sniffing.
pub fn service(v: &Validated) -> Service {
    Service {
        metadata: metadata(v, &v.name, labels::common(&v.name)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(labels::release_selector(&v.name)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: v.port,
                target_port: Some(IntOrString::Int(v.port)),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::reconcile::testing::{lab_validated, shared_metadata, to_json};

    #[test]
    fn lab_service_covers_both_versions() {
        let expected = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": shared_metadata(),
            "spec": {
                "type": "ClusterIP",
                "selector": {
                    "app.kubernetes.io/instance": "azureopenaichat",
                    "app.kubernetes.io/managed-by": "canary-operator",
                },
                "ports": [{"name": "http", "port": 5000, "targetPort": 5000, "protocol": "TCP"}],
            },
        });
        assert_eq!(to_json(&service(&lab_validated())), expected);
    }
}
