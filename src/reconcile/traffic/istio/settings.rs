//! The Istio provider's settings: `spec.gateway` and `spec.traffic.mesh`, with their problems.

use crate::api::{CanaryReleaseSpec, IngressSpec, TrafficSpec};
use crate::reconcile::names::{is_gateway_reference, is_host, is_label_value};
use crate::reconcile::validated::{Ingress, Traffic};

/// Default HTTP port of a Gateway the operator creates.
const DEFAULT_GATEWAY_PORT: i32 = 80;

/// Where traffic enters (a Gateway created, or existing ones) and whether calls inside the mesh
/// are split too.
pub fn settings(
    spec: &CanaryReleaseSpec,
    settings: &TrafficSpec,
    problem: &mut dyn FnMut(&str, String),
) -> Traffic {
    if settings.gateway_api.is_some() {
        problem(
            "spec.traffic.gatewayAPI",
            "applies to provider gatewayAPI; remove it or set traffic.provider: gatewayAPI"
                .to_owned(),
        );
    }
    if spec.gateway.is_none() && !settings.mesh {
        problem(
            "spec.gateway",
            "set gateway (traffic enters through an Istio ingress gateway), traffic.mesh: true (calls inside the mesh only), or traffic.provider: gatewayAPI".to_owned(),
        );
    }
    let gateway = spec
        .gateway
        .as_ref()
        .map(|g| match (&g.selector, &g.existing) {
            (_, Some(existing)) => Ingress::Existing {
                gateways: existing.clone(),
                hosts: g.hosts.clone(),
            },
            (selector, None) => Ingress::Create {
                selector: selector.clone().unwrap_or_default(),
                port: g.port.unwrap_or(DEFAULT_GATEWAY_PORT),
                hosts: g.hosts.clone(),
            },
        });
    Traffic::Istio {
        gateway,
        mesh: settings.mesh,
    }
}

pub fn check_gateway(gateway: &IngressSpec, mesh: bool, problem: &mut dyn FnMut(&str, String)) {
    for (i, host) in gateway.hosts.iter().enumerate() {
        if !is_host(host) {
            problem(
                &format!("spec.gateway.hosts[{i}]"),
                format!(
                    "{host:?} is not a host name: use a DNS name such as chat.example.com, a wildcard such as *.example.com, or *"
                ),
            );
        } else if mesh && host.starts_with('*') {
            problem(
                &format!("spec.gateway.hosts[{i}]"),
                format!(
                    "{host:?} with traffic.mesh: the VirtualService, bound to the mesh too, would take every call inside the mesh to a matching host; name the host the gateway serves, such as chat.example.com"
                ),
            );
        }
    }
    for (i, reference) in gateway.existing.iter().flatten().enumerate() {
        if !is_gateway_reference(reference) {
            problem(
                &format!("spec.gateway.existing[{i}]"),
                format!("{reference:?} is not a gateway reference: use NAME or NAMESPACE/NAME"),
            );
        } else if reference == MESH_GATEWAY {
            problem(
                &format!("spec.gateway.existing[{i}]"),
                "\"mesh\" is not a gateway: set traffic.mesh: true to split calls made inside the mesh".to_owned(),
            );
        }
    }
    for (key, value) in gateway.selector.iter().flatten() {
        if !is_label_value(value) || key.is_empty() || key.len() > 317 {
            problem(
                &format!("spec.gateway.selector.{key}"),
                format!("{value:?} is not a valid label selector entry"),
            );
        }
    }
}

/// Istio's reserved gateway name for the sidecars of the mesh.
pub const MESH_GATEWAY: &str = "mesh";
