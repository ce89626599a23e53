//! The Gateway API provider: a Service per version, and an HTTPRoute, attached to the user's
//! Gateways, that splits between them by weight. Any implementation of the Gateway API routes it
//! (Istio, Envoy Gateway, Cilium, ...); the Gateways' controllers say in the route's status whether
//! they took it, which the release's status repeats.

mod http_route;
mod services;
mod settings;

pub use http_route::http_route;
pub use services::version_service;

use kube::ResourceExt;
use kube::api::DynamicObject;

use super::{Acceptance, Provider, Split};
use crate::api::gateway_api::{HTTPRoute, ParentReference};
use crate::api::{CanaryRelease, CanaryReleaseSpec, TrafficSpec};
use crate::reconcile::children::Children;
use crate::reconcile::decide::Decision;
use crate::reconcile::validated::{GatewayApiSettings as Settings, ParentRef, Traffic, Validated};

pub struct GatewayApi;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

impl GatewayApi {
    fn settings(v: &Validated) -> Option<&Settings> {
        match &v.traffic {
            Traffic::GatewayApi(settings) => Some(settings),
            Traffic::Istio { .. } => None,
        }
    }

    fn route<'a>(v: &Validated, children: &'a Children) -> Option<&'a HTTPRoute> {
        children
            .http_routes
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(v.name.as_str()))
    }
}

impl Provider for GatewayApi {
    fn route(&self, v: &Validated, decision: &Decision) -> Children {
        let Some(settings) = Self::settings(v) else {
            return Children::default();
        };
        Children {
            services: v
                .versions()
                .iter()
                .map(|ver| version_service(v, ver))
                .collect(),
            // Withheld, the version Services stay and no HTTPRoute claims a host.
            http_routes: match decision.withheld {
                None => vec![http_route(v, settings, decision)],
                Some(_) => Vec::new(),
            },
            ..Children::default()
        }
    }

    fn split(&self, v: &Validated, children: &Children) -> Split {
        let route = Self::route(v, children);
        let weight = |version| route.and_then(|r| r.weight_of(&v.version_service(version)));
        Split {
            stable: weight(&v.stable),
            canary: v.canary.as_ref().and_then(weight),
        }
    }

    fn settings(
        &self,
        spec: &CanaryReleaseSpec,
        name: &str,
        settings: &TrafficSpec,
        problem: &mut dyn FnMut(&str, String),
    ) -> Traffic {
        settings::settings(spec, name, settings, problem)
    }

    /// The backends are the versions' Services, `<release>-<version>` (see `version_service`).
    fn read_split(&self, release: &CanaryRelease, route: &DynamicObject) -> Option<Split> {
        let route: HTTPRoute = route.clone().try_parse().ok()?;
        let name = release.name_any();
        let weight = |version: &str| route.weight_of(&format!("{name}-{version}"));
        let spec = &release.spec;
        Some(Split {
            stable: weight(&spec.stable.name),
            canary: spec.canary.as_ref().and_then(|c| weight(&c.name)),
        })
    }

    /// Every Gateway the release names must have accepted the route and resolved its backends.
    fn acceptance(&self, v: &Validated, children: &Children) -> Acceptance {
        let (Some(settings), Some(route)) = (Self::settings(v), Self::route(v, children)) else {
            return Acceptance::Accepted;
        };
        let parents = route
            .status
            .as_ref()
            .map(|s| s.parents.as_slice())
            .unwrap_or_default();
        let name = format!("HTTPRoute {}/{}", v.namespace, v.name);
        for wanted in &settings.parent_refs {
            let gateway = format!(
                "Gateway {}/{}{}",
                wanted.namespace.as_deref().unwrap_or(&v.namespace),
                wanted.name,
                wanted
                    .section_name
                    .as_deref()
                    .map(|s| format!(" (listener {s})"))
                    .unwrap_or_default()
            );
            let Some(status) = parents
                .iter()
                .find(|p| same_parent(&p.parent_ref, wanted, &v.namespace))
            else {
                return Acceptance::Refused {
                    reason: "RoutePending".to_owned(),
                    message: format!(
                        "no controller has reported on {name} for {gateway} yet: check that the Gateway exists and that its GatewayClass has a controller"
                    ),
                };
            };
            for type_ in ["Accepted", "ResolvedRefs"] {
                let condition = status.conditions.iter().find(|c| c.type_ == type_);
                match condition {
                    Some(c) if c.status == "True" => {}
                    Some(c) => {
                        return Acceptance::Refused {
                            reason: if c.reason.is_empty() {
                                format!("Not{type_}")
                            } else {
                                c.reason.clone()
                            },
                            message: format!(
                                "{gateway} reports {name} {type_}={}: {} ({})",
                                c.status, c.message, status.controller_name
                            ),
                        };
                    }
                    None => {
                        return Acceptance::Refused {
                            reason: "RoutePending".to_owned(),
                            message: format!(
                                "{gateway} has not reported {type_} on {name} yet ({})",
                                status.controller_name
                            ),
                        };
                    }
                }
            }
        }
        Acceptance::Accepted
    }
}

/// Whether a parent in the route's status is the one the release asked for; the server fills in
/// the group and kind, and a namespace left out is the route's own.
fn same_parent(reported: &ParentReference, wanted: &ParentRef, namespace: &str) -> bool {
    reported.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
        && reported.kind.as_deref().unwrap_or("Gateway") == "Gateway"
        && reported.name == wanted.name
        && reported.namespace.as_deref().unwrap_or(namespace)
            == wanted.namespace.as_deref().unwrap_or(namespace)
        && reported.section_name == wanted.section_name
        && reported.port == wanted.port
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    use super::*;
    use crate::api::gateway_api::{RouteParentStatus, RouteStatus};
    use crate::reconcile::testing::{built, gateway_api_validated};

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: format!("{reason} said"),
            observed_generation: Some(1),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        }
    }

    #[test]
    fn reads_back_the_split_it_builds() {
        let v = gateway_api_validated();
        let children = built(&v);
        assert_eq!(
            GatewayApi.split(&v, &children),
            Split {
                stable: Some(75),
                canary: Some(25)
            }
        );
        assert_eq!(
            children.services.len(),
            3,
            "the release's and one per version"
        );
        assert!(children.virtual_services.is_empty() && children.destination_rules.is_empty());
    }

    /// Each case: what the parent says in the route's status, and the release's verdict.
    #[test]
    fn the_route_is_accepted_only_when_its_gateway_says_so() {
        let v = gateway_api_validated();
        let parent = |name: &str, conditions: Vec<Condition>| RouteParentStatus {
            parent_ref: ParentReference {
                group: Some(GATEWAY_GROUP.to_owned()),
                kind: Some("Gateway".to_owned()),
                name: name.to_owned(),
                namespace: Some("istio-ingress".to_owned()),
                section_name: Some("http".to_owned()),
                port: None,
            },
            controller_name: "istio.io/gateway-controller".to_owned(),
            conditions,
        };
        let accepted = || {
            vec![
                condition("Accepted", "True", "Accepted"),
                condition("ResolvedRefs", "True", "ResolvedRefs"),
            ]
        };
        /// What the case is, the parents' status (none yet: `None`), the reason refused.
        type Case = (
            &'static str,
            Option<Vec<RouteParentStatus>>,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            ("no status yet", None, Some("RoutePending")),
            (
                "another parent only",
                Some(vec![parent("other", accepted())]),
                Some("RoutePending"),
            ),
            ("accepted", Some(vec![parent("public", accepted())]), None),
            (
                "refused by the listener",
                Some(vec![parent(
                    "public",
                    vec![
                        condition("Accepted", "False", "NotAllowedByListeners"),
                        condition("ResolvedRefs", "True", "ResolvedRefs"),
                    ],
                )]),
                Some("NotAllowedByListeners"),
            ),
            (
                "a backend missing",
                Some(vec![parent(
                    "public",
                    vec![
                        condition("Accepted", "True", "Accepted"),
                        condition("ResolvedRefs", "False", "BackendNotFound"),
                    ],
                )]),
                Some("BackendNotFound"),
            ),
            (
                "no ResolvedRefs yet",
                Some(vec![parent(
                    "public",
                    vec![condition("Accepted", "True", "Accepted")],
                )]),
                Some("RoutePending"),
            ),
        ];
        for (what, parents, expected) in cases {
            let mut children = built(&v);
            children.http_routes[0].status = parents.map(|parents| RouteStatus { parents });
            let verdict = match GatewayApi.acceptance(&v, &children) {
                Acceptance::Accepted => None,
                Acceptance::Refused { reason, message } => {
                    assert!(
                        message.contains("istio-ingress/public"),
                        "{what}: {message}"
                    );
                    Some(reason)
                }
            };
            assert_eq!(verdict.as_deref(), expected, "{what}");
        }
    }
}
