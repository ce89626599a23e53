use std::collections::BTreeMap;

use super::MESH_GATEWAY;
use crate::api::istio::{
    Destination, HeaderOperations, Headers, HttpMatchRequest, HttpRoute, HttpRouteDestination,
    PortSelector, StringMatch, VirtualService, VirtualServiceSpec,
};
use crate::labels;
use crate::reconcile::decide::Decision;
use crate::reconcile::meta::metadata;
use crate::reconcile::traffic::sticky::{self, RequestMatch};
use crate::reconcile::validated::{self, Validated, Version};

/// Name of the split route, so the split is easy to find with `kubectl get -o yaml`.
pub const ROUTE_NAME: &str = "canary-split";

/// The traffic split. Both destinations stay listed even at weight 0, so a shift is a change of two
/// numbers and never of the route's shape; without a canary the stable is the one destination.
/// Bound to the release's gateway (if any) for the gateway's hosts, and with `mesh` to the mesh's
/// sidecars for the Service's own host. A sticky release's match routes come first.
pub fn virtual_service(v: &Validated, decision: &Decision) -> VirtualService {
    let (mut gateways, mut hosts) = match v.gateway() {
        Some(validated::Ingress::Create { hosts, .. }) => (vec![v.name.clone()], hosts.clone()),
        Some(validated::Ingress::Existing { gateways, hosts }) => (gateways.clone(), hosts.clone()),
        None => (Vec::new(), Vec::new()),
    };
    if matches!(v.traffic, validated::Traffic::Istio { mesh: true, .. }) {
        gateways.push(MESH_GATEWAY.to_owned());
        hosts.push(v.host.clone());
    }
    let destination = |version: &Version, weight: i32, answered: bool| HttpRouteDestination {
        destination: Destination {
            host: v.host.clone(),
            subset: Some(version.name.clone()),
            port: Some(PortSelector {
                number: u32::try_from(v.port).unwrap_or_default(),
            }),
        },
        weight,
        // Only the split's answers tell a conversation its version; the match routes' answers
        // go to requests that carry it already.
        headers: v.stickiness.as_ref().filter(|_| answered).map(|s| {
            let (name, value) = sticky::response_header(s, version);
            Headers {
                response: Some(HeaderOperations {
                    add: BTreeMap::from([(name, value)]),
                }),
            }
        }),
    };
    let mut http: Vec<HttpRoute> = match &v.stickiness {
        Some(stickiness) => sticky::sticky_versions(v, decision)
            .into_iter()
            .map(|version| {
                let (header, condition) = match sticky::request_match(stickiness, version) {
                    RequestMatch::Exact { header, value } => (
                        header,
                        StringMatch {
                            exact: Some(value),
                            regex: None,
                        },
                    ),
                    RequestMatch::Regex { header, pattern } => (
                        header,
                        StringMatch {
                            exact: None,
                            regex: Some(pattern),
                        },
                    ),
                };
                HttpRoute {
                    name: Some(sticky::route_name(version)),
                    match_: vec![HttpMatchRequest {
                        headers: BTreeMap::from([(header, condition)]),
                    }],
                    route: vec![destination(version, 100, false)],
                }
            })
            .collect(),
        None => Vec::new(),
    };
    http.push(HttpRoute {
        name: Some(ROUTE_NAME.to_owned()),
        match_: Vec::new(),
        route: match &v.canary {
            Some(canary) => vec![
                destination(&v.stable, decision.stable_weight(), true),
                destination(canary, decision.canary_weight, true),
            ],
            None => vec![destination(&v.stable, 100, true)],
        },
    });
    let mut service = VirtualService::new(
        &v.name,
        VirtualServiceSpec {
            hosts,
            gateways,
            http,
        },
    );
    service.metadata = metadata(v, &v.name, labels::common(&v.name));
    service
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::reconcile::testing::{
        decided, lab_release, lab_validated, shared_metadata, to_json,
    };
    use crate::reconcile::validate;

    fn route(weight_v1: i32, weight_v2: i32) -> serde_json::Value {
        let host = "azureopenaichat.azureopenai.svc.cluster.local";
        json!([{
            "name": "canary-split",
            "route": [
                {"destination": {"host": host, "subset": "v1", "port": {"number": 5000}}, "weight": weight_v1},
                {"destination": {"host": host, "subset": "v2", "port": {"number": 5000}}, "weight": weight_v2},
            ],
        }])
    }

    #[test]
    fn lab_virtual_service_splits_75_25_through_the_created_gateway() {
        let expected = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": shared_metadata(),
            "spec": {"hosts": ["*"], "gateways": ["azureopenaichat"], "http": route(75, 25)},
        });
        assert_eq!(
            to_json(&virtual_service(
                &lab_validated(),
                &decided(&lab_validated())
            )),
            expected
        );
    }

    #[test]
    fn weights_always_sum_to_100_and_both_subsets_stay_listed() {
        for weight in [0, 1, 50, 99, 100] {
            let mut release = lab_release();
            release.spec.weight = Some(weight);
            let v = validate::validate(&release, "cluster.local").unwrap_or_else(|p| panic!("{p}"));
            assert_eq!(
                to_json(&virtual_service(&v, &decided(&v)))["spec"]["http"],
                route(100 - weight, weight),
                "weight {weight}"
            );
        }
    }

    fn gateway_mut(release: &mut crate::api::CanaryRelease) -> &mut crate::api::IngressSpec {
        release
            .spec
            .gateway
            .as_mut()
            .unwrap_or_else(|| panic!("the lab has a gateway"))
    }

    #[test]
    fn existing_gateways_are_referenced_as_given() {
        let mut release = lab_release();
        let gateway = gateway_mut(&mut release);
        gateway.selector = None;
        gateway.port = None;
        gateway.existing = Some(vec!["istio-ingress/public".into(), "other".into()]);
        gateway.hosts = vec!["chat.example.com".into()];
        let v = validate::validate(&release, "cluster.local").unwrap_or_else(|p| panic!("{p}"));
        let spec = virtual_service(&v, &decided(&v)).spec;
        assert_eq!(spec.gateways, ["istio-ingress/public", "other"]);
        assert_eq!(spec.hosts, ["chat.example.com"]);
    }

    /// Each case: the gateway's hosts (none: no gateway), and the VirtualService's gateways and
    /// hosts with `traffic.mesh`.
    #[test]
    fn the_mesh_is_routed_for_the_services_own_host() {
        let fqdn = "azureopenaichat.azureopenai.svc.cluster.local";
        type Case<'a> = (Option<&'a [&'a str]>, &'a [&'a str], Vec<&'a str>);
        let cases: [Case; 2] = [
            (
                Some(&["chat.example.com"]),
                &["azureopenaichat", "mesh"],
                vec!["chat.example.com", fqdn],
            ),
            (None, &["mesh"], vec![fqdn]),
        ];
        for (gateway_hosts, gateways, hosts) in cases {
            let mut release = lab_release();
            match gateway_hosts {
                Some(h) => {
                    gateway_mut(&mut release).hosts = h.iter().map(|s| (*s).to_owned()).collect()
                }
                None => release.spec.gateway = None,
            }
            release.spec.traffic = Some(crate::api::TrafficSpec {
                mesh: true,
                ..Default::default()
            });
            let v = validate::validate(&release, "cluster.local").unwrap_or_else(|p| panic!("{p}"));
            let spec = virtual_service(&v, &decided(&v)).spec;
            assert_eq!(spec.gateways, gateways, "{gateway_hosts:?}");
            assert_eq!(spec.hosts, hosts, "{gateway_hosts:?}");
            assert_eq!(
                spec.http,
                virtual_service(&lab_validated(), &decided(&lab_validated()))
                    .spec
                    .http,
                "the same split"
            );
        }
    }

    #[test]
    fn a_sticky_release_sends_conversations_back_and_tells_new_ones_their_version() {
        let mut release = lab_release();
        release.spec.traffic = Some(crate::api::TrafficSpec {
            stickiness: Some(crate::api::StickinessSpec {
                cookie: Some(crate::api::CookieStickiness {
                    name: "canary-model".into(),
                    max_age: Some("24h".into()),
                }),
                header: None,
            }),
            ..Default::default()
        });
        let v = validate::validate(&release, "cluster.local").unwrap_or_else(|p| panic!("{p}"));
        let host = "azureopenaichat.azureopenai.svc.cluster.local";
        let dest = |subset: &str| json!({"host": host, "subset": subset, "port": {"number": 5000}});
        let cookie = |subset: &str| json!({"response": {"add": {"set-cookie": format!("canary-model={subset}; Path=/; Max-Age=86400")}}});
        let matching = |subset: &str| json!([{"headers": {"cookie": {"regex": format!("^(.*;\\s*)?canary-model={subset}(;.*)?$")}}}]);
        assert_eq!(
            to_json(&virtual_service(&v, &decided(&v)))["spec"]["http"],
            json!([
                {"name": "sticky-v2", "match": matching("v2"), "route": [{"destination": dest("v2"), "weight": 100}]},
                {"name": "sticky-v1", "match": matching("v1"), "route": [{"destination": dest("v1"), "weight": 100}]},
                {"name": "canary-split", "route": [
                    {"destination": dest("v1"), "weight": 75, "headers": cookie("v1")},
                    {"destination": dest("v2"), "weight": 25, "headers": cookie("v2")},
                ]},
            ])
        );
        let service = virtual_service(&v, &decided(&v));
        assert_eq!(
            service.weight_of("v2"),
            Some(25),
            "the split is read from the catch-all route"
        );
        assert_eq!(
            service.weights(),
            [("v1".to_owned(), 75), ("v2".to_owned(), 25)]
        );
    }
}
