//! Traffic providers: what routes requests to the versions. The workload children (ConfigMaps,
//! Deployments, HPAs, the Service) are the same whichever provider routes; a provider builds the
//! routing children for the versions and the decided split, reads back the split that routing
//! children carry (for status, and for the plugin, the tests and the bench through
//! [`applied_split`]), says whether what routes has taken them up, checks its own settings and
//! observes what it alone needs (Istio's gateway pods).
//!
//! Adding a provider (docs/development.md, "Adding a traffic provider", lists every place): a
//! variant of [`TrafficProvider`] with its facts (`crate::providers`, one exhaustive `match`
//! each), its kinds in [`crate::kinds`], one module here with a type implementing [`Provider`]
//! (its settings checked by [`Provider::settings`]), an arm in [`of`] and [`provider_of`], and a
//! variant of `validated::Traffic`.

pub mod gateway_api;
pub mod istio;
pub mod sticky;

use futures::future::BoxFuture;
use kube::api::{Api, DynamicObject};
use kube::{Client, ResourceExt};

use super::children::Children;
use super::decide::Decision;
use super::gateway_workload::Workload;
use super::validated::{Traffic, Validated};
use crate::api::{CanaryRelease, CanaryReleaseSpec, TrafficProvider, TrafficSpec};
use crate::context::Context;

/// The split a route carries: each version's share, `None` when the route does not name it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub stable: Option<i32>,
    pub canary: Option<i32>,
}

pub trait Provider {
    /// The routing children that send `decision`'s split to `v`'s versions; the other kinds are
    /// left empty.
    fn route(&self, v: &Validated, decision: &Decision) -> Children;

    /// The split that the routing children among `children` carry.
    fn split(&self, v: &Validated, children: &Children) -> Split;

    /// Whether what routes traffic has taken up the routing children among `children`, as far
    /// as it says; a provider whose objects carry no such word has them accepted.
    fn acceptance(&self, _v: &Validated, _children: &Children) -> Acceptance {
        Acceptance::Accepted
    }

    /// The split `route`, an object of the provider's route kind
    /// ([`TrafficProvider::route_resource`]) as read from the API server, gives `release`'s
    /// versions; `None` when it is not such an object.
    fn read_split(&self, release: &CanaryRelease, route: &DynamicObject) -> Option<Split>;

    /// The provider's settings of release `name` (`settings` is its `spec.traffic`, or the
    /// defaults), each problem reported to `problem` with its field path.
    fn settings(
        &self,
        spec: &CanaryReleaseSpec,
        name: &str,
        settings: &TrafficSpec,
        problem: &mut dyn FnMut(&str, String),
    ) -> Traffic;

    /// What only this provider needs looked at once its routes are in place, beyond the caches
    /// (Istio: whether any pod carries the selector of the Gateway it created). A provider that
    /// creates no Gateway has nothing to look at.
    fn observe<'a>(&'a self, _ctx: &'a Context, _v: &'a Validated) -> BoxFuture<'a, Workload> {
        Box::pin(std::future::ready(Workload::NoGateway))
    }
}

/// What the routing's controller says of a release's routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acceptance {
    Accepted,
    /// Not (yet) taken up: the controller's reason (a condition reason) and a message for people.
    Refused {
        reason: String,
        message: String,
    },
}

/// The provider that routes `v`'s traffic.
pub fn provider(v: &Validated) -> &'static dyn Provider {
    of(provider_of(&v.traffic))
}

/// The provider that validated settings `traffic` are for.
pub fn provider_of(traffic: &Traffic) -> TrafficProvider {
    match traffic {
        Traffic::Istio { .. } => TrafficProvider::Istio,
        Traffic::GatewayApi(_) => TrafficProvider::GatewayApi,
    }
}

/// The provider of a [`TrafficProvider`] value.
pub fn of(provider: TrafficProvider) -> &'static dyn Provider {
    match provider {
        TrafficProvider::Istio => &istio::Istio,
        TrafficProvider::GatewayApi => &gateway_api::GatewayApi,
    }
}

/// The split that `release`'s route, as read from the API server, gives its versions: the one
/// read-back of an applied split outside the reconcile (the plugin, the tests, the bench).
pub fn applied_split(release: &CanaryRelease, route: &DynamicObject) -> Option<Split> {
    let provider = TrafficProvider::of_release(release);
    let kind = provider.route_resource().kind;
    // An object parses leniently into another kind's type: only the route kind is read.
    route
        .types
        .as_ref()
        .filter(|t| t.kind == kind)
        .and_then(|_| of(provider).read_split(release, route))
}

/// Reads `release`'s route (named after it, of its provider's route kind) and the split it
/// carries; `None` when there is no such route.
pub async fn read_applied(client: &Client, release: &CanaryRelease) -> kube::Result<Option<Split>> {
    let resource = TrafficProvider::of_release(release).route_resource();
    let namespace = release.namespace().unwrap_or_default();
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
    Ok(routes
        .get_opt(&release.name_any())
        .await?
        .and_then(|route| applied_split(release, &route)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::testing::{built, example_releases};

    /// The read-back outside the reconcile (from the route as the API server returns it) agrees
    /// with the one status uses (from the typed children), for every example and both providers:
    /// the plugin and the tests judge the same split the release reports.
    #[test]
    fn the_applied_split_reads_as_status_reads_it() {
        let mut seen = Vec::new();
        for (file, release, v) in example_releases() {
            let children = built(&v);
            let kind = TrafficProvider::of_release(&release).route_resource().kind;
            let route = children
                .dynamic()
                .into_iter()
                .find(|o| o.types.as_ref().is_some_and(|t| t.kind == kind))
                .unwrap_or_else(|| panic!("{file}: no {kind} built"));
            let split = applied_split(&release, &route);
            assert_eq!(split, Some(provider(&v).split(&v, &children)), "{file}");
            assert!(
                split.is_some_and(|s| s.stable.is_some()),
                "{file}: {split:?}"
            );
            seen.push(provider_of(&v.traffic));
        }
        for provider in TrafficProvider::ALL {
            assert!(
                seen.contains(&provider),
                "no example routes by {provider:?}"
            );
        }
    }

    /// Routes as the API server returns them, read for a release `chat` with versions v1 and
    /// v2. Each case: the release's provider, the route, and the split read.
    #[test]
    fn routes_from_the_server_read_by_version() {
        use serde_json::json;
        let release = |provider: &str| -> CanaryRelease {
            serde_json::from_value(json!({
                "apiVersion": "canary.dev/v1alpha1", "kind": "CanaryRelease",
                "metadata": {"name": "chat", "namespace": "ns"},
                "spec": {
                    "image": "chat:1", "port": 5000, "weight": 30,
                    "stable": {"name": "v1", "model": "gpt-4.1"},
                    "canary": {"name": "v2", "model": "gpt-4o"},
                    "traffic": {"provider": provider},
                },
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let route = |value: serde_json::Value| -> DynamicObject {
            serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
        };
        let split = |stable, canary| Split {
            stable: Some(stable),
            canary: Some(canary),
        };
        let cases = [
            (
                "istio",
                route(json!({
                    "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                    "metadata": {"name": "chat"},
                    "spec": {"http": [{"route": [
                        {"destination": {"host": "chat", "subset": "v2"}, "weight": 30},
                        {"destination": {"host": "chat", "subset": "v1"}, "weight": 70},
                    ]}]},
                })),
                Some(split(70, 30)),
            ),
            (
                // The sticky rule (a header match) comes first; the split is the other rule.
                "gatewayAPI",
                route(json!({
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                    "metadata": {"name": "chat"},
                    "spec": {"rules": [
                        {"matches": [{"headers": [{"name": "x-model", "value": "v2"}]}],
                         "backendRefs": [{"name": "chat-v2", "port": 5000, "weight": 100}]},
                        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                         "backendRefs": [
                            {"name": "chat-v1", "port": 5000, "weight": 70},
                            {"name": "chat-v2", "port": 5000, "weight": 30},
                         ]},
                    ]},
                })),
                Some(split(70, 30)),
            ),
            (
                // A release moved to the Gateway API reads its HTTPRoute, not its old route.
                "gatewayAPI",
                route(json!({
                    "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                    "metadata": {"name": "chat"},
                    "spec": {"http": [{"route": [
                        {"destination": {"host": "chat", "subset": "v1"}, "weight": 100},
                    ]}]},
                })),
                None,
            ),
            (
                // An object of another kind parses leniently into a route type: it is no route.
                "istio",
                route(json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "chat"},
                    "spec": {"ports": [{"port": 80}]},
                })),
                None,
            ),
        ];
        for (provider, route, expected) in cases {
            assert_eq!(
                applied_split(&release(provider), &route),
                expected,
                "{provider}"
            );
        }
    }
}
