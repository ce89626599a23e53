//! The Gateway API provider's settings: `spec.traffic.gatewayAPI`, with their problems and those
//! of the names its version Services would get.

use crate::api::{CanaryReleaseSpec, GatewayApiSpec, TrafficSpec};
use crate::reconcile::names::{
    is_dns1035_label, is_dns1123_label, is_route_hostname, is_subdomain,
};
use crate::reconcile::validated::{GatewayApiSettings, ParentRef, Traffic};

/// The Gateways the HTTPRoute attaches to and the host names it serves; `spec.gateway` and
/// `traffic.mesh` are Istio's.
pub fn settings(
    spec: &CanaryReleaseSpec,
    name: &str,
    settings: &TrafficSpec,
    problem: &mut dyn FnMut(&str, String),
) -> Traffic {
    if spec.gateway.is_some() {
        problem(
            "spec.gateway",
            "is for the istio provider; with gatewayAPI the Gateways are traffic.gatewayAPI.parentRefs".to_owned(),
        );
    }
    if settings.mesh {
        problem(
            "spec.traffic.mesh",
            "applies to the istio provider (a Gateway API route for calls inside the mesh names a Service as its parent, which this operator does not write)".to_owned(),
        );
    }
    Traffic::GatewayApi(gateway_api(
        spec,
        name,
        settings.gateway_api.as_ref(),
        problem,
    ))
}

/// The Gateway API's side of a release, with the problems of its settings and of the names its
/// version Services would get.
fn gateway_api(
    spec: &CanaryReleaseSpec,
    name: &str,
    settings: Option<&GatewayApiSpec>,
    problem: &mut dyn FnMut(&str, String),
) -> GatewayApiSettings {
    // Each version gets a Service of its own, named like its Deployment.
    for (field, version) in [
        ("spec.stable", Some(&spec.stable)),
        ("spec.canary", spec.canary.as_ref()),
    ] {
        if let Some(version) = version {
            let service = format!("{name}-{}", version.name);
            if !is_dns1035_label(&service) {
                problem(
                    &format!("{field}.name"),
                    format!(
                        "the version's Service {service:?} is not a valid Service name (at most 63 characters): shorten the release's or the version's name"
                    ),
                );
            }
        }
    }
    let Some(api) = settings else {
        problem(
            "spec.traffic.gatewayAPI",
            "is required with provider gatewayAPI: name the Gateway in parentRefs".to_owned(),
        );
        return GatewayApiSettings {
            parent_refs: Vec::new(),
            hostnames: Vec::new(),
        };
    };
    if api.parent_refs.is_empty() {
        problem(
            "spec.traffic.gatewayAPI.parentRefs",
            "name at least one Gateway".to_owned(),
        );
    }
    let mut seen = Vec::new();
    for (i, parent) in api.parent_refs.iter().enumerate() {
        let at = format!("spec.traffic.gatewayAPI.parentRefs[{i}]");
        if !is_subdomain(&parent.name) {
            problem(
                &format!("{at}.name"),
                format!("{:?} is not a Gateway name", parent.name),
            );
        }
        if let Some(ns) = &parent.namespace
            && !is_dns1123_label(ns)
        {
            problem(
                &format!("{at}.namespace"),
                format!("{ns:?} is not a namespace name"),
            );
        }
        if let Some(section) = &parent.section_name
            && !is_subdomain(section)
        {
            problem(
                &format!("{at}.sectionName"),
                format!("{section:?} is not a listener name"),
            );
        }
        let key = (
            &parent.name,
            &parent.namespace,
            &parent.section_name,
            parent.port,
        );
        if seen.contains(&key) {
            problem(
                &at,
                "names the same Gateway (and listener) as an earlier entry".to_owned(),
            );
        }
        seen.push(key);
    }
    for (i, host) in api.hostnames.iter().enumerate() {
        if !is_route_hostname(host) {
            problem(
                &format!("spec.traffic.gatewayAPI.hostnames[{i}]"),
                format!(
                    "{host:?} is not a host name: use a lowercase DNS name such as chat.example.com or a wildcard such as *.example.com (a lone * is not allowed: leave hostnames empty to serve every host of the listener)"
                ),
            );
        }
    }
    GatewayApiSettings {
        parent_refs: api
            .parent_refs
            .iter()
            .map(|p| ParentRef {
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                section_name: p.section_name.clone(),
                port: p.port,
            })
            .collect(),
        hostnames: api.hostnames.clone(),
    }
}
