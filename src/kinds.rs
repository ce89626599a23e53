//! The one list of the kinds of objects a release owns.
//!
//! Each kind is named once, in [`with_child_kinds!`]: its field name, its API type and whether the
//! operator prunes it (deletes objects of it that a release no longer wants). Everything that
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

/// Calls `$callback!` with the list of child kinds, in the order they are applied: configuration
/// before the pods that read it, and subsets (the DestinationRule) before the route that names
/// them. Each entry is `field: Type => pruned` or `=> kept`.
#[macro_export]
macro_rules! with_child_kinds {
    ($callback:ident) => {
        $callback! {
            config_maps: k8s_openapi::api::core::v1::ConfigMap => pruned,
            deployments: k8s_openapi::api::apps::v1::Deployment => pruned,
            autoscalers: k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler => pruned,
            services: k8s_openapi::api::core::v1::Service => kept,
            destination_rules: $crate::api::istio::DestinationRule => kept,
            gateways: $crate::api::istio::Gateway => pruned,
            virtual_services: $crate::api::istio::VirtualService => kept,
        }
    };
}

/// Whether objects of a kind that a release no longer wants are deleted (`pruned`) or a kind's
/// objects only ever change (`kept`), from the list's word for it.
#[macro_export]
macro_rules! child_kind_pruned {
    (pruned) => {
        true
    };
    (kept) => {
        false
    };
}

/// One rule the operator needs: an API group, a resource and its verbs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub group: String,
    pub resource: String,
    pub verbs: Vec<&'static str>,
}

/// Every RBAC rule the operator needs, in the namespaces it watches: its own resource and status,
/// Events, and for each child kind what its cache and apply step use. A server-side apply that
/// creates an object is authorized as `create` as well as `patch`; `delete` only where it prunes.
/// No `get`: the caches list and watch every object of each kind.
/// What only an operator watching every namespace needs besides [`rbac_rules`]: listing pod
/// metadata cluster-wide, to tell whether a Gateway's selector matches any pod
/// (`reconcile/gateway_workload.rs`; an install limited to some namespaces does not check).
pub fn cluster_wide_rbac_rules() -> Vec<Rule> {
    vec![Rule {
        group: String::new(),
        resource: "pods".to_owned(),
        verbs: vec!["list"],
    }]
}

pub fn rbac_rules() -> Vec<Rule> {
    use kube::Resource;
    let rule = |group: &str, resource: &str, verbs: &[&'static str]| Rule {
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
                let mut verbs = vec!["list", "watch", "create", "patch"];
                if $crate::child_kind_pruned!($policy) {
                    verbs.push("delete");
                }
                rules.push(Rule {
                    group: <$kind as Resource>::group(&()).into_owned(),
                    resource: <$kind as Resource>::plural(&()).into_owned(),
                    verbs,
                });
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
        let rules = rbac_rules();
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
            find("virtualservices"),
            Some(vec!["list", "watch", "create", "patch"])
        );
        assert_eq!(rules.len(), 3 + 7, "{rules:?}");
        assert!(
            rules.iter().all(|r| !r.verbs.contains(&"get")),
            "reads come from caches"
        );
    }
}
