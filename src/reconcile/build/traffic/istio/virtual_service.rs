use crate::api::istio::{
    Destination, HttpRoute, HttpRouteDestination, PortSelector, VirtualService, VirtualServiceSpec,
};
use crate::labels;
use crate::reconcile::build::meta::metadata;
use crate::reconcile::decide::Decision;
use crate::reconcile::validated::{self, Validated};

/// Name of the one HTTP route, so the split is easy to find with `kubectl get -o yaml`.
pub const ROUTE_NAME: &str = "canary-split";

/// The traffic split. Both destinations stay listed even at weight 0, so a shift is a change of two
/// numbers and never of the route's shape; without a canary the stable is the one destination.
pub fn virtual_service(v: &Validated, decision: &Decision) -> VirtualService {
    let gateways = match &v.gateway {
        validated::Gateway::Create { .. } => vec![v.name.clone()],
        validated::Gateway::Existing { gateways, .. } => gateways.clone(),
    };
    let destination = |subset: &str, weight: i32| HttpRouteDestination {
        destination: Destination {
            host: v.host.clone(),
            subset: Some(subset.to_owned()),
            port: Some(PortSelector {
                number: u32::try_from(v.port).unwrap_or_default(),
            }),
        },
        weight,
    };
    let mut service = VirtualService::new(
        &v.name,
        VirtualServiceSpec {
            hosts: v.gateway.hosts().to_vec(),
            gateways,
            http: vec![HttpRoute {
                name: Some(ROUTE_NAME.to_owned()),
                route: match &v.canary {
                    Some(canary) => vec![
                        destination(&v.stable.name, decision.stable_weight()),
                        destination(&canary.name, decision.canary_weight),
                    ],
                    None => vec![destination(&v.stable.name, 100)],
                },
            }],
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

    #[test]
    fn existing_gateways_are_referenced_as_given() {
        let mut release = lab_release();
        release.spec.gateway.selector = None;
        release.spec.gateway.port = None;
        release.spec.gateway.existing = Some(vec!["istio-ingress/public".into(), "mesh".into()]);
        release.spec.gateway.hosts = vec!["chat.example.com".into()];
        let v = validate::validate(&release, "cluster.local").unwrap_or_else(|p| panic!("{p}"));
        let spec = virtual_service(&v, &decided(&v)).spec;
        assert_eq!(spec.gateways, ["istio-ingress/public", "mesh"]);
        assert_eq!(spec.hosts, ["chat.example.com"]);
    }
}
