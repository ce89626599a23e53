//! The Istio provider, as in the lab: a DestinationRule names each version as a subset, a
//! VirtualService splits the Service's traffic between the subsets by weight, and a Gateway
//! brings the traffic in (created, or existing ones bound by name).

mod destination_rule;
mod gateway;
mod settings;
mod virtual_service;

pub use destination_rule::destination_rule;
pub use gateway::gateway;
pub use settings::{MESH_GATEWAY, check_gateway};
pub use virtual_service::{ROUTE_NAME, virtual_service};

use futures::future::BoxFuture;
use kube::api::DynamicObject;

use super::{Provider, Split};
use crate::api::istio::VirtualService;
use crate::api::{CanaryRelease, CanaryReleaseSpec, TrafficSpec};
use crate::context::Context;
use crate::reconcile::children::Children;
use crate::reconcile::decide::Decision;
use crate::reconcile::gateway_workload::{self, Workload};
use crate::reconcile::validated::{Traffic, Validated};

pub struct Istio;

impl Provider for Istio {
    /// Withheld, the release keeps its subsets (they name its own Service's host only) and
    /// claims no host: no Gateway server, no VirtualService.
    fn route(&self, v: &Validated, decision: &Decision) -> Children {
        let routed = decision.withheld.is_none();
        Children {
            destination_rules: vec![destination_rule(v)],
            gateways: gateway(v).into_iter().filter(|_| routed).collect(),
            virtual_services: match routed {
                true => vec![virtual_service(v, decision)],
                false => Vec::new(),
            },
            ..Children::default()
        }
    }

    fn split(&self, v: &Validated, children: &Children) -> Split {
        let route = children
            .virtual_services
            .iter()
            .find(|vs| vs.metadata.name.as_deref() == Some(v.name.as_str()));
        Split {
            stable: route.and_then(|r| r.weight_of(&v.stable.name)),
            // Without a canary the release's status shows none (not "0 %").
            canary: v
                .canary
                .as_ref()
                .and_then(|c| route.and_then(|r| r.weight_of(&c.name))),
        }
    }

    fn settings(
        &self,
        spec: &CanaryReleaseSpec,
        _name: &str,
        settings: &TrafficSpec,
        problem: &mut dyn FnMut(&str, String),
    ) -> Traffic {
        settings::settings(spec, settings, problem)
    }

    /// Istio programs only the proxies of pods a Gateway's selector matches.
    fn observe<'a>(&'a self, ctx: &'a Context, v: &'a Validated) -> BoxFuture<'a, Workload> {
        Box::pin(gateway_workload::observe(ctx, v))
    }

    /// The subsets are named after the versions.
    fn read_split(&self, release: &CanaryRelease, route: &DynamicObject) -> Option<Split> {
        let route: VirtualService = route.clone().try_parse().ok()?;
        let spec = &release.spec;
        Some(Split {
            stable: route.weight_of(&spec.stable.name),
            canary: spec.canary.as_ref().and_then(|c| route.weight_of(&c.name)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::testing::{built, lab_validated};

    #[test]
    fn reads_back_the_split_it_builds() {
        let v = lab_validated();
        let children = built(&v);
        assert_eq!(
            Istio.split(&v, &children),
            Split {
                stable: Some(75),
                canary: Some(25)
            }
        );
        assert_eq!(
            Istio.split(&v, &Children::default()),
            Split::default(),
            "no route, no split"
        );
    }
}
