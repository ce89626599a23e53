//! RBAC as sets of single permissions: what the chart grants, what the operator's list of child
//! kinds needs (`canary_operator::kinds::rbac_rules()`), what a request is authorized as; and the
//! chart's grants as the RBAC authorizer judges them.

use std::collections::BTreeSet;

use canary_operator::api::TrafficProvider;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::common::{TestNs, WAIT, setup, wait_for};
use crate::helm::{HelmRelease, helm_or_skip, name_of, wait_pod_running};

/// One permission: a verb on a resource (with subresource) of an API group, optionally only on
/// one object name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub group: String,
    pub resource: String,
    pub verb: String,
    pub name: Option<String>,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {}.{}", self.verb, self.resource, group)?;
        if let Some(name) = &self.name {
            write!(f, " named {name}")?;
        }
        Ok(())
    }
}

pub fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| item.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Expands RBAC rules (as rendered JSON) into single permissions.
pub fn grants(rules: &Value) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in rules.as_array().expect("rules is a list") {
        let names: Vec<Option<String>> = match strings(&rule["resourceNames"]) {
            names if names.is_empty() => vec![None],
            names => names.into_iter().map(Some).collect(),
        };
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    for name in &names {
                        out.insert(Grant {
                            group: group.clone(),
                            resource: resource.clone(),
                            verb: verb.clone(),
                            name: name.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// What the chart must grant the operator in the watched namespaces (or cluster-wide): the
/// rules the operator derives from its one list of child kinds (`canary_operator::kinds`). The
/// tests below check that the chart renders exactly these and that the operator uses every one.
pub fn expected_operator_grants(providers: &[TrafficProvider]) -> BTreeSet<Grant> {
    canary_operator::kinds::rbac_rules(providers)
        .into_iter()
        .flat_map(|rule| {
            rule.verbs.into_iter().map(move |verb| Grant {
                group: rule.group.clone(),
                resource: rule.resource.clone(),
                verb: verb.to_owned(),
                name: None,
            })
        })
        .collect()
}

/// What the chart grants an operator watching every namespace: [`expected_operator_grants`] and
/// the rules only it needs (`canary_operator::kinds::cluster_wide_rbac_rules()`).
pub fn expected_cluster_grants(providers: &[TrafficProvider]) -> BTreeSet<Grant> {
    let mut grants = expected_operator_grants(providers);
    for rule in canary_operator::kinds::cluster_wide_rbac_rules() {
        for verb in rule.verbs {
            grants.insert(Grant {
                group: rule.group.clone(),
                resource: rule.resource.clone(),
                verb: verb.to_owned(),
                name: None,
            });
        }
    }
    grants
}

pub fn lease_grants(lease: &str) -> BTreeSet<Grant> {
    let grant = |verb: &str, name: Option<&str>| Grant {
        group: "coordination.k8s.io".into(),
        resource: "leases".into(),
        verb: verb.into(),
        name: name.map(str::to_owned),
    };
    [
        grant("create", None),
        grant("get", Some(lease)),
        grant("patch", Some(lease)),
    ]
    .into()
}

/// Checks every RBAC rule in `objects` for what a least-privilege chart must never grant.
pub fn assert_no_broad_rules(objects: &[Value]) {
    for object in objects {
        let Some(rules) = object["rules"].as_array() else {
            continue;
        };
        let kind = object["kind"].as_str().unwrap_or_default();
        for rule in rules {
            let context = format!("{kind} {}: rule {rule}", name_of(object));
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                assert!(
                    !strings(&rule[field]).iter().any(|s| s.contains('*')),
                    "wildcard in {field} of {context}"
                );
            }
            assert!(
                rule.get("nonResourceURLs").is_none(),
                "non-resource URLs in {context}"
            );
            assert!(
                !strings(&rule["resources"])
                    .iter()
                    .any(|r| r == "secrets" || r.starts_with("secrets/")),
                "access to Secrets in {context}"
            );
            for verb in strings(&rule["verbs"]) {
                assert!(
                    ![
                        "escalate",
                        "bind",
                        "impersonate",
                        "update",
                        "deletecollection"
                    ]
                    .contains(&verb.as_str()),
                    "verb {verb} in {context}"
                );
            }
        }
    }
}

/// A request as the RBAC authorizer sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    pub namespace: Option<String>,
    pub grant: Grant,
}

/// The authorizer's attributes of a request (see the API server's request-info resolver): the
/// verb from the method (and `watch=true`, and whether a name is given), the group, resource and
/// subresource from the path. `None` for non-resource paths such as /version.
pub fn access_of(method: &str, url: &str) -> Option<Access> {
    let path_and_query = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path_and_query = &path_and_query[path_and_query.find('/')?..];
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => (Some(*namespace), rest),
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
        _ => return None,
    };
    let watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let verb = match (method, name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some(Access {
        namespace: namespace.map(str::to_owned),
        grant: Grant {
            group: group.to_owned(),
            resource: match subresource {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource.to_owned(),
            },
            verb: verb.to_owned(),
            name: name.map(str::to_owned),
        },
    })
}

/// Whether `grant` (from a Role in `namespace`) allows `access`.
pub fn allows(grant: &Grant, namespace: &str, access: &Access) -> bool {
    access.namespace.as_deref() == Some(namespace)
        && grant.group == access.grant.group
        && grant.resource == access.grant.resource
        && grant.verb == access.grant.verb
        && (grant.name.is_none() || grant.name == access.grant.name)
}

pub fn role_grants(role: &Role) -> BTreeSet<Grant> {
    let rules: &[PolicyRule] = role.rules.as_deref().unwrap_or_default();
    grants(&serde_json::to_value(rules).expect("rules as JSON"))
}

/// Whether the RBAC authorizer lets `user` do `verb` on `resource` ("resource.group/subresource",
/// as kubectl auth can-i takes it) in `namespace` (cluster-wide when empty), on the object `name`
/// (any when empty).
async fn can(
    ns: &TestNs,
    user: &str,
    verb: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> bool {
    // "resource.group/subresource", as kubectl auth can-i takes it.
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_owned())),
        None => (resource, None),
    };
    let (resource, group) = resource.split_once('.').unwrap_or((resource, ""));
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{}", ns.name),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
                name: (!name.is_empty()).then(|| name.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviewed = Api::<SubjectAccessReview>::all(ns.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview");
    reviewed.status.is_some_and(|s| s.allowed)
}

#[tokio::test]
async fn chart_installs_cluster_wide_with_a_cluster_role() {
    let test = "chart_installs_cluster_wide_with_a_cluster_role";
    let Some(helm) = helm_or_skip(test) else {
        return;
    };
    let Some(ns) = setup("chart-cluster").await else {
        return;
    };
    let release = HelmRelease::install(&helm, &ns, &[]);
    let fullname = release.fullname.clone();

    let sa: Api<ServiceAccount> = Api::namespaced(ns.client.clone(), &ns.name);
    sa.get(&fullname).await.expect("the chart's ServiceAccount");
    let role = Api::<ClusterRole>::all(ns.client.clone())
        .get(&fullname)
        .await
        .expect("the chart's ClusterRole");
    let rules = serde_json::to_value(role.rules.unwrap_or_default()).expect("rules");
    assert_eq!(
        grants(&rules),
        expected_cluster_grants(&[TrafficProvider::Istio])
    );
    let binding = Api::<ClusterRoleBinding>::all(ns.client.clone())
        .get(&fullname)
        .await
        .expect("the chart's ClusterRoleBinding");
    assert_eq!(binding.role_ref.name, fullname);
    let deployment: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
    let deployment = deployment.get(&fullname).await.expect("Deployment");
    assert_eq!(
        deployment.status.and_then(|s| s.ready_replicas),
        Some(1),
        "helm --wait returned before the Deployment was ready"
    );
    let pod = wait_pod_running(&ns, &release).await;
    assert_eq!(
        pod.spec.and_then(|s| s.service_account_name),
        Some(fullname.clone())
    );

    // What the bound ClusterRole allows, as the RBAC authorizer sees it.
    let user = format!("system:serviceaccount:{}:{fullname}", ns.name);
    let ns_name = ns.name.as_str();
    for (verb, resource, namespace, name, allowed) in [
        ("list", "configmaps", "", "", true),
        ("watch", "canaryreleases.canary.dev", "", "", true),
        (
            "patch",
            "canaryreleases.canary.dev/status",
            "anywhere",
            "x",
            true,
        ),
        ("create", "events.events.k8s.io", "anywhere", "", true),
        (
            "delete",
            "gateways.networking.istio.io",
            "anywhere",
            "x",
            true,
        ),
        (
            "get",
            "leases.coordination.k8s.io",
            ns_name,
            fullname.as_str(),
            true,
        ),
        ("create", "leases.coordination.k8s.io", ns_name, "", true),
        ("get", "secrets", "anywhere", "x", false),
        ("get", "configmaps", "anywhere", "x", false),
        ("list", "secrets", "", "", false),
        ("get", "canaryreleases.canary.dev", "anywhere", "x", false),
        (
            "delete",
            "canaryreleases.canary.dev",
            "anywhere",
            "x",
            false,
        ),
        ("update", "deployments.apps", "anywhere", "x", false),
        ("delete", "services", "anywhere", "x", false),
        ("list", "pods", "", "", true),
        ("get", "pods", "anywhere", "x", false),
        ("watch", "pods", "", "", false),
        (
            "update",
            "leases.coordination.k8s.io",
            ns_name,
            fullname.as_str(),
            false,
        ),
        (
            "patch",
            "leases.coordination.k8s.io",
            ns_name,
            "someone-else",
            false,
        ),
        (
            "create",
            "leases.coordination.k8s.io",
            "kube-system",
            "",
            false,
        ),
    ] {
        assert_eq!(
            can(&ns, &user, verb, resource, namespace, name).await,
            allowed,
            "{verb} {resource} in {namespace:?} named {name:?}"
        );
    }
    drop(release);
    let gone = Api::<ClusterRole>::all(ns.client.clone())
        .get_opt(&fullname)
        .await
        .expect("get ClusterRole");
    assert!(gone.is_none(), "helm uninstall removes the ClusterRole");
}

/// Why every child kind has `create` besides `patch`: the operator creates its children with
/// server-side apply (a PATCH), and the API server authorizes a PATCH that creates its object as
/// `create` too. A Role with `patch` alone can update a ConfigMap but not create one.
#[tokio::test]
async fn server_side_apply_that_creates_needs_create_as_well_as_patch() {
    let Some(ns) = setup("ssa-create").await else {
        return;
    };
    let admin = ns.client.clone();
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "applier"}})).expect("sa");
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &sa)
        .await
        .expect("create ServiceAccount");
    let roles: Api<Role> = Api::namespaced(admin.clone(), &ns.name);
    let role = |verbs: &[&str]| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "applier"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs}],
        })
    };
    let set_role = async |verbs: &[&str]| {
        roles
            .patch(
                "applier",
                &PatchParams::apply("canary-operator-tests").force(),
                &Patch::Apply(role(verbs)),
            )
            .await
            .expect("apply Role");
    };
    set_role(&["patch"]).await;
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "applier"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "applier"},
        "subjects": [{"kind": "ServiceAccount", "name": "applier", "namespace": ns.name}],
    }))
    .expect("binding");
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create RoleBinding");

    let mut config = kube::Config::infer().await.expect("kube config");
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{}:applier", ns.name));
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{}", ns.name),
        "system:authenticated".into(),
    ]);
    let applier = kube::Client::try_from(config).expect("impersonating client");
    let config_maps: Api<ConfigMap> = Api::namespaced(applier, &ns.name);
    let apply = async |value: &str| {
        let cm = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "applied"},
            "data": {"key": value},
        });
        config_maps
            .patch(
                "applied",
                &PatchParams::apply("canary-operator").force(),
                &Patch::Apply(cm),
            )
            .await
    };

    // RBAC changes reach the authorizer within moments, but not synchronously: each expected
    // answer is awaited (bounded), never assumed after one try.
    let refused = wait_for(
        "SSA create refused with patch only",
        WAIT,
        async || match apply("one").await {
            Err(kube::Error::Api(status)) if status.code == 403 => Some(status.message),
            _ => None,
        },
    )
    .await;
    assert!(
        refused.contains(r#"cannot create resource "configmaps""#),
        "{refused}"
    );
    set_role(&["patch", "create"]).await;
    wait_for(
        "SSA create allowed with patch and create",
        WAIT,
        async || apply("two").await.ok(),
    )
    .await;
    // Once the object exists, applying it again is a plain patch.
    set_role(&["patch"]).await;
    wait_for("SSA update allowed with patch only", WAIT, async || {
        let applied = apply("three").await.ok()?;
        (applied.data?.get("key")? == "three").then_some(())
    })
    .await;
}
