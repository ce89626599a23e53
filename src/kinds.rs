//! The one list of the kinds of objects a release owns.
//!
//! Each kind is named once, in [`with_child_kinds!`]: its field name, its API type and when objects
//! of it become unwanted, to be deleted. Everything that
//! differs by kind is derived from that list: the caches and their watches (`context::Stores`,
//! `controller`), the set of children a release has (`reconcile::build::Children`), the order and
//! the steps of applying and pruning (`reconcile::apply`), and the RBAC rules the operator needs
//! ([`rbac_rules`], which the chart's tests compare with the chart). How a kind is cached
//! compactly is its `cache::Compact` implementation, which the list's consumers require, so a kind
//! listed without one does not compile.
//!
//! Adding a kind: its builder (one file under `reconcile/build/`, or in a traffic provider), its
//! `Compact` implementation, and one line here. The compiler asks for the `Compact`
//! implementation, `every_kind_is_built_for_some_example` fails until a builder produces the kind,
//! and the chart test names the rule the chart lacks.

use crate::api::TrafficProvider;

/// Calls `$callback!` with the list of child kinds, in the order they are applied: configuration
/// before the pods that read it, Services and subsets (the DestinationRule) before the routes that
/// name them. Each entry is `field: Type => Unwanted`: when objects of the kind become unwanted,
/// to be deleted ([`Unwanted`]), which decides the `delete` grant ([`delete_granted`]); the apply
/// step looks for unwanted objects of every kind, which reads the caches only.
#[macro_export]
macro_rules! with_child_kinds {
    ($callback:ident) => {
        $callback! {
            config_maps: k8s_openapi::api::core::v1::ConfigMap => Pruned,
            deployments: k8s_openapi::api::apps::v1::Deployment => Pruned,
            autoscalers: k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler => Pruned,
            services: k8s_openapi::api::core::v1::Service => Versioned,
            destination_rules: $crate::api::istio::DestinationRule => Switched,
            gateways: $crate::api::istio::Gateway => Pruned,
            virtual_services: $crate::api::istio::VirtualService => Pruned,
            http_routes: $crate::api::gateway_api::HTTPRoute => Pruned,
        }
    };
}

/// When objects of a child kind become unwanted, to be deleted: the word after each kind in
/// [`with_child_kinds!`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unwanted {
    /// Whatever routes the traffic (a renamed version's Deployment), and the routes, withheld
    /// while an older claim overlaps the release's hosts.
    Pruned,
    /// The Services: a provider that owns per-version Services prunes them (the release's own
    /// Service is always wanted).
    Versioned,
    /// The kinds of a provider a release moves away from (the DestinationRule).
    Switched,
}

/// Whether the operator needs `delete` on a kind of API group `group` that becomes unwanted as
/// `unwanted` says, running with `providers`: only where objects of it can become unwanted with
/// those providers. A `Switched` kind only when its provider runs with another one to switch to.
pub fn delete_granted(unwanted: Unwanted, group: &str, providers: &[TrafficProvider]) -> bool {
    match unwanted {
        Unwanted::Pruned => true,
        Unwanted::Versioned => providers.iter().any(|p| p.owns_version_services()),
        Unwanted::Switched => {
            TrafficProvider::of_group(group).is_some_and(|p| providers.contains(&p))
                && providers.len() > 1
        }
    }
}

/// One rule the operator needs: an API group, a resource and its verbs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RbacRule {
    pub group: String,
    pub resource: String,
    pub verbs: Vec<&'static str>,
}

/// What only an operator watching every namespace needs besides [`rbac_rules`]: listing pod
/// metadata cluster-wide, to tell whether a Gateway's selector matches any pod
/// (`reconcile/gateway_workload.rs`; an install limited to some namespaces does not check).
pub fn cluster_wide_rbac_rules() -> Vec<RbacRule> {
    vec![RbacRule {
        group: String::new(),
        resource: "pods".to_owned(),
        verbs: vec!["list"],
    }]
}

/// Every RBAC rule the operator needs, in the namespaces it watches: its own resource and status,
/// Events, and for each child kind what its cache and apply step use. A server-side apply that
/// creates an object is authorized as `create` as well as `patch`; `delete` only where it prunes.
/// No `get`: the caches list and watch every object of each kind. Only the kinds of the traffic
/// providers in `providers` are granted.
pub fn rbac_rules(providers: &[TrafficProvider]) -> Vec<RbacRule> {
    use kube::Resource;
    let rule = |group: &str, resource: &str, verbs: &[&'static str]| RbacRule {
        group: group.to_owned(),
        resource: resource.to_owned(),
        verbs: verbs.to_vec(),
    };
    let mut rules = vec![
        rule("canary.dev", "canaryreleases", &["list", "watch"]),
        rule("canary.dev", "canaryreleases/status", &["patch"]),
        rule("events.k8s.io", "events", &["create"]),
    ];
    macro_rules! child_rules {
        ($($field:ident: $kind:ty => $policy:ident),* $(,)?) => {
            $(
                let group = <$kind as Resource>::group(&());
                let wanted = TrafficProvider::of_group(&group).is_none_or(|p| providers.contains(&p));
                let mut verbs = vec!["list", "watch", "create", "patch"];
                if delete_granted(Unwanted::$policy, &group, providers) {
                    verbs.push("delete");
                }
                if wanted {
                    rules.push(RbacRule {
                        group: group.into_owned(),
                        resource: <$kind as Resource>::plural(&()).into_owned(),
                        verbs,
                    });
                }
            )*
        };
    }
    with_child_kinds!(child_rules);
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_cover_every_kind_with_delete_only_where_pruned() {
        let rules = rbac_rules(&[TrafficProvider::Istio]);
        let find = |resource: &str| {
            rules
                .iter()
                .find(|r| r.resource == resource)
                .map(|r| r.verbs.clone())
        };
        assert_eq!(
            find("deployments"),
            Some(vec!["list", "watch", "create", "patch", "delete"])
        );
        assert_eq!(
            find("destinationrules"),
            Some(vec!["list", "watch", "create", "patch"])
        );
        assert_eq!(rules.len(), 3 + 7, "{rules:?}");
        assert!(
            rules.iter().all(|r| !r.verbs.contains(&"get")),
            "reads come from caches"
        );
    }

    /// Each case: the providers, the resource, and whether `delete` is granted on it.
    #[test]
    fn delete_is_granted_where_objects_can_become_unwanted() {
        use TrafficProvider::{GatewayApi, Istio};
        let both: &[TrafficProvider] = &[Istio, GatewayApi];
        let cases: [(&[TrafficProvider], &str, bool); 11] = [
            (&[Istio], "deployments", true),
            (&[Istio], "gateways", true),
            (&[Istio], "services", false),
            (&[Istio], "virtualservices", true),
            (&[Istio], "destinationrules", false),
            (&[GatewayApi], "services", true),
            (&[GatewayApi], "httproutes", true),
            (both, "services", true),
            (both, "virtualservices", true),
            (both, "destinationrules", true),
            (both, "httproutes", true),
        ];
        for (providers, resource, granted) in cases {
            let rules = rbac_rules(providers);
            let rule = rules
                .iter()
                .find(|r| r.resource == resource)
                .unwrap_or_else(|| panic!("{resource} granted with {providers:?}"));
            assert_eq!(
                rule.verbs.contains(&"delete"),
                granted,
                "{resource} with {providers:?}"
            );
        }
    }

    /// Each case: the providers the operator runs with, and the API groups it is granted.
    #[test]
    fn only_the_providers_run_with_are_granted() {
        let groups = |providers: &[TrafficProvider]| {
            let mut groups: Vec<String> =
                rbac_rules(providers).into_iter().map(|r| r.group).collect();
            groups.sort();
            groups.dedup();
            groups
        };
        let cases: [(&[TrafficProvider], &[&str]); 3] = [
            (&[TrafficProvider::Istio], &["networking.istio.io"]),
            (
                &[TrafficProvider::GatewayApi],
                &["gateway.networking.k8s.io"],
            ),
            (
                &TrafficProvider::ALL,
                &["gateway.networking.k8s.io", "networking.istio.io"],
            ),
        ];
        for (providers, routing) in cases {
            let mut expected: Vec<String> =
                ["", "apps", "autoscaling", "canary.dev", "events.k8s.io"]
                    .iter()
                    .chain(routing)
                    .map(|g| (*g).to_owned())
                    .collect();
            expected.sort();
            assert_eq!(groups(providers), expected, "{providers:?}");
        }
    }
}
