//! What differs by traffic provider, besides the objects it builds: one exhaustive `match` per
//! fact, so a new [`TrafficProvider`] variant does not compile until every fact is given. The
//! caches, the RBAC rules, the start checks, the plugin and the tests take these facts from here
//! rather than naming providers themselves; the routes a provider builds, the split it reads back
//! and what it observes are its module under `reconcile::traffic`.

use kube::api::ApiResource;

use crate::api::gateway_api::HTTPRoute;
use crate::api::istio::VirtualService;
use crate::api::{CanaryRelease, TrafficProvider};

impl TrafficProvider {
    /// The API group of every kind of the provider's: a child kind of this group is watched,
    /// granted and checked at start only when the operator runs the provider.
    pub fn api_group(self) -> &'static str {
        match self {
            TrafficProvider::Istio => "networking.istio.io",
            TrafficProvider::GatewayApi => "gateway.networking.k8s.io",
        }
    }

    /// The provider whose kinds live in API group `group`; `None` for the kinds every release has
    /// whatever routes it.
    pub fn of_group(group: &str) -> Option<TrafficProvider> {
        TrafficProvider::ALL
            .into_iter()
            .find(|p| p.api_group() == group)
    }

    /// The provider that routes `release`'s traffic (`spec.traffic.provider`, Istio when unset).
    pub fn of_release(release: &CanaryRelease) -> TrafficProvider {
        release
            .spec
            .traffic
            .as_ref()
            .map(|t| t.provider)
            .unwrap_or_default()
    }

    /// The kind of the object that carries a release's split, named after the release: what the
    /// plugin waits on and the tests read.
    pub fn route_resource(self) -> ApiResource {
        match self {
            TrafficProvider::Istio => ApiResource::erase::<VirtualService>(&()),
            TrafficProvider::GatewayApi => ApiResource::erase::<HTTPRoute>(&()),
        }
    }

    /// The CRDs the provider needs, as a person looks them up (`kubectl get crd ...`).
    pub fn crds(self) -> &'static str {
        match self {
            TrafficProvider::Istio => {
                "Istio's networking CRDs (virtualservices/destinationrules/gateways.networking.istio.io, v1)"
            }
            TrafficProvider::GatewayApi => {
                "the Gateway API's CRDs (httproutes.gateway.networking.k8s.io, v1)"
            }
        }
    }

    /// What to do when the provider's CRDs are missing.
    pub fn install_hint(self) -> &'static str {
        match self {
            TrafficProvider::Istio => "install Istio, or its CRDs, first",
            TrafficProvider::GatewayApi => {
                "install the Gateway API's standard CRDs first, or run the operator without the gatewayAPI provider (--traffic-providers=istio)"
            }
        }
    }

    /// Whether the provider gives each version a Service of its own (`<release>-<version>`), so
    /// that the operator prunes Services, and needs `delete` on them, when it runs the provider.
    pub fn owns_version_services(self) -> bool {
        match self {
            TrafficProvider::Istio => false,
            TrafficProvider::GatewayApi => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every provider's group leads back to it, and the route kind is of that group: the caches,
    /// RBAC and the plugin rely on both.
    #[test]
    fn every_provider_is_found_by_its_group_and_routes_in_it() {
        for provider in TrafficProvider::ALL {
            assert_eq!(
                TrafficProvider::of_group(provider.api_group()),
                Some(provider)
            );
            assert_eq!(provider.route_resource().group, provider.api_group());
        }
        assert_eq!(TrafficProvider::of_group("apps"), None);
        assert_eq!(TrafficProvider::of_group(""), None);
    }

    /// `TrafficProvider::ALL` lists every variant once: the watches, the grants and `--help` go by
    /// it. The match stops compiling when a variant is added, which brings the author here.
    #[test]
    fn every_provider_is_listed() {
        let listed = |p: TrafficProvider| match p {
            TrafficProvider::Istio | TrafficProvider::GatewayApi => {
                TrafficProvider::ALL.iter().filter(|q| **q == p).count()
            }
        };
        assert_eq!(listed(TrafficProvider::Istio), 1);
        assert_eq!(listed(TrafficProvider::GatewayApi), 1);
        assert_eq!(TrafficProvider::ALL.len(), 2);
    }

    /// The CRD's CEL rules name providers by their spec names: each name they use is a provider's,
    /// and every provider but the default has its settings field, set with it and only then. A
    /// new provider fails here until the rules know it.
    #[test]
    fn the_crds_rules_know_every_provider_by_name() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_string(&CanaryRelease::crd()).unwrap_or_default();
        let named: Vec<&str> = crd
            .split("provider == '")
            .skip(1)
            .filter_map(|rest| rest.split('\'').next())
            .collect();
        assert!(named.len() >= 3, "the rules name providers: {named:?}");
        for name in &named {
            assert!(
                TrafficProvider::parse(name).is_some(),
                "a CEL rule names provider '{name}', which is none of {:?}",
                TrafficProvider::ALL.map(TrafficProvider::as_str)
            );
        }
        for provider in TrafficProvider::ALL {
            if provider == TrafficProvider::default() {
                continue;
            }
            let name = provider.as_str();
            let rule = format!("(self.provider == '{name}') == has(self.{name})");
            assert!(crd.contains(&rule), "no rule {rule}");
        }
    }
}
