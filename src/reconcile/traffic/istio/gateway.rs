use crate::api::istio::{Gateway, GatewaySpec, Server, ServerPort};
use crate::labels;
use crate::reconcile::meta::metadata;
use crate::reconcile::validated::{self, Validated};

/// The ingress Gateway, when the release asks the operator to create one.
pub fn gateway(v: &Validated) -> Option<Gateway> {
    let Some(validated::Ingress::Create {
        selector,
        port,
        hosts,
    }) = v.gateway()
    else {
        return None;
    };
    let mut gateway = Gateway::new(
        &v.name,
        GatewaySpec {
            selector: selector.clone(),
            servers: vec![Server {
                port: ServerPort {
                    number: u32::try_from(*port).unwrap_or(80),
                    name: "http".to_owned(),
                    protocol: "HTTP".to_owned(),
                },
                hosts: hosts.clone(),
            }],
        },
    );
    gateway.metadata = metadata(v, &v.name, labels::common(&v.name));
    Some(gateway)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::reconcile::testing::{lab_release, lab_validated, shared_metadata, to_json};
    use crate::reconcile::validate;

    #[test]
    fn lab_gateway_listens_on_port_80_for_any_host() {
        let expected = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": shared_metadata(),
            "spec": {
                "selector": {"istio": "aks-istio-ingressgateway-external"},
                "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}],
            },
        });
        assert_eq!(
            gateway(&lab_validated()).map(|g| to_json(&g)),
            Some(expected)
        );
    }

    #[test]
    fn no_gateway_when_binding_to_existing_ones() {
        let mut release = lab_release();
        let spec = release
            .spec
            .gateway
            .as_mut()
            .unwrap_or_else(|| panic!("the lab has a gateway"));
        spec.selector = None;
        spec.port = None;
        spec.existing = Some(vec!["istio-ingress/public".into()]);
        let v = validate::validate(&release, "cluster.local").unwrap_or_else(|p| panic!("{p}"));
        assert_eq!(gateway(&v), None);
    }
}
