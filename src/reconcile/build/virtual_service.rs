use super::metadata;
use crate::api::istio::{Destination, HttpRoute, HttpRouteDestination, PortSelector, VirtualService, VirtualServiceSpec};
use crate::labels;
use crate::reconcile::validate::{self, Validated};

/// Name of the one HTTP route, so the split is easy to find with `kubectl get -o yaml`.
pub const ROUTE_NAME: &str = "canary-split";

/// The traffic split. Both destinations stay listed even at weight 0, so a shift is a change of two
/// numbers and never of the route's shape.
pub fn virtual_service(v: &Validated) -> VirtualService {
    let gateways = match &v.gateway {
        validate::Gateway::Create { .. } => vec![v.name.clone()],
        validate::Gateway::Existing { gateways, .. } => gateways.clone(),
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
                route: vec![
                    destination(&v.stable.name, v.stable_weight()),
                    destination(&v.canary.name, v.canary_weight),
                ],
            }],
        },
    );
    service.metadata = metadata(v, &v.name, labels::common(&v.name));
    service
}
