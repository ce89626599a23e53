use super::metadata;
use crate::api::istio::{Gateway, GatewaySpec, Server, ServerPort};
use crate::labels;
use crate::reconcile::validate::{self, Validated};

/// The ingress Gateway, when the release asks the operator to create one.
pub fn gateway(v: &Validated) -> Option<Gateway> {
    let validate::Gateway::Create { selector, port, hosts } = &v.gateway else {
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
