use crate::api::gateway_api::{
    BackendRef, HTTPRoute, HTTPRouteSpec, HeaderMatch, HeaderModifier, HeaderValue,
    ParentReference, RouteFilter, RouteMatch, RouteRule,
};
use crate::labels;
use crate::reconcile::decide::Decision;
use crate::reconcile::meta::metadata;
use crate::reconcile::traffic::istio::ROUTE_NAME;
use crate::reconcile::traffic::sticky::{self, RequestMatch};
use crate::reconcile::validated::{GatewayApiSettings, Validated, Version};

/// The split, as a rule of weighted backends (each version's Service), attached to the user's
/// Gateways. Both versions stay listed at weight 0, as in the VirtualService, so a shift changes
/// two numbers. A sticky release's match rules come first; the Gateway API ranks a rule with
/// header matches above one without anyway.
pub fn http_route(v: &Validated, api: &GatewayApiSettings, decision: &Decision) -> HTTPRoute {
    let port = Some(v.port);
    let backend = |version: &Version, weight: i32, answered: bool| BackendRef {
        name: v.version_service(version),
        port,
        weight: Some(weight),
        filters: v
            .stickiness
            .as_ref()
            .filter(|_| answered)
            .map(|s| {
                let (name, value) = sticky::response_header(s, version);
                vec![RouteFilter {
                    type_: "ResponseHeaderModifier".to_owned(),
                    response_header_modifier: Some(HeaderModifier {
                        add: vec![HeaderValue { name, value }],
                    }),
                }]
            })
            .unwrap_or_default(),
    };
    let mut rules: Vec<RouteRule> = match &v.stickiness {
        Some(stickiness) => sticky::sticky_versions(v, decision)
            .into_iter()
            .map(|version| {
                let header = match sticky::request_match(stickiness, version) {
                    RequestMatch::Exact { header, value } => HeaderMatch {
                        type_: Some("Exact".to_owned()),
                        name: header,
                        value,
                    },
                    RequestMatch::Regex { header, pattern } => HeaderMatch {
                        type_: Some("RegularExpression".to_owned()),
                        name: header,
                        value: pattern,
                    },
                };
                RouteRule {
                    name: Some(sticky::route_name(version)),
                    matches: vec![RouteMatch {
                        headers: vec![header],
                    }],
                    backend_refs: vec![backend(version, 100, false)],
                }
            })
            .collect(),
        None => Vec::new(),
    };
    rules.push(RouteRule {
        name: Some(ROUTE_NAME.to_owned()),
        matches: Vec::new(),
        backend_refs: match &v.canary {
            Some(canary) => vec![
                backend(&v.stable, decision.stable_weight(), true),
                backend(canary, decision.canary_weight, true),
            ],
            None => vec![backend(&v.stable, 100, true)],
        },
    });
    let mut route = HTTPRoute::new(
        &v.name,
        HTTPRouteSpec {
            parent_refs: api
                .parent_refs
                .iter()
                .map(|p| ParentReference {
                    group: None,
                    kind: None,
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                    section_name: p.section_name.clone(),
                    port: p.port,
                })
                .collect(),
            hostnames: api.hostnames.clone(),
            rules,
        },
    );
    route.metadata = metadata(v, &v.name, labels::common(&v.name));
    route
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::reconcile::testing::{decided, gateway_api_validated, shared_metadata, to_json};
    use crate::reconcile::validated::{Stickiness, Traffic};

    fn api(v: &Validated) -> &GatewayApiSettings {
        match &v.traffic {
            Traffic::GatewayApi(api) => api,
            Traffic::Istio { .. } => panic!("a Gateway API release"),
        }
    }

    #[test]
    fn the_lab_split_between_the_versions_services() {
        let v = gateway_api_validated();
        let expected = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": shared_metadata(),
            "spec": {
                "parentRefs": [{"name": "public", "namespace": "istio-ingress", "sectionName": "http"}],
                "hostnames": ["chat.example.com"],
                "rules": [{
                    "name": "canary-split",
                    "backendRefs": [
                        {"name": "azureopenaichat-v1", "port": 5000, "weight": 75},
                        {"name": "azureopenaichat-v2", "port": 5000, "weight": 25},
                    ],
                }],
            },
        });
        assert_eq!(to_json(&http_route(&v, api(&v), &decided(&v))), expected);
    }

    #[test]
    fn a_sticky_release_matches_the_header_and_adds_it_to_the_split_answers() {
        let mut v = gateway_api_validated();
        v.stickiness = Some(Stickiness::Header {
            name: "x-canary-model".to_owned(),
        });
        let route = to_json(&http_route(&v, api(&v), &decided(&v)));
        let header = |version: &str| json!([{"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "x-canary-model", "value": version}]}}]);
        assert_eq!(
            route["spec"]["rules"],
            json!([
                {"name": "sticky-v2", "matches": [{"headers": [{"type": "Exact", "name": "x-canary-model", "value": "v2"}]}],
                 "backendRefs": [{"name": "azureopenaichat-v2", "port": 5000, "weight": 100}]},
                {"name": "sticky-v1", "matches": [{"headers": [{"type": "Exact", "name": "x-canary-model", "value": "v1"}]}],
                 "backendRefs": [{"name": "azureopenaichat-v1", "port": 5000, "weight": 100}]},
                {"name": "canary-split", "backendRefs": [
                    {"name": "azureopenaichat-v1", "port": 5000, "weight": 75, "filters": header("v1")},
                    {"name": "azureopenaichat-v2", "port": 5000, "weight": 25, "filters": header("v2")},
                ]},
            ])
        );
    }
}
