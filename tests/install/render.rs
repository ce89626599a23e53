//! The chart rendered and linted with helm alone, no cluster: locked down for default and other
//! values, and granting exactly the operator's rules.

use std::collections::BTreeSet;

use canary_operator::api::TrafficProvider;
use serde_json::{Value, json};

use crate::helm::{helm_or_skip, name_of, of_kind, one, render, run_helm, set_args, text};
use crate::rbac::{
    assert_no_broad_rules, expected_cluster_grants, expected_operator_grants, grants, lease_grants,
};
use crate::{CHART, RENDER_NAMESPACE};

#[test]
fn chart_lints_clean_with_default_and_other_values() {
    let Some(helm) = helm_or_skip("chart_lints_clean_with_default_and_other_values") else {
        return;
    };
    let variants: &[&[&str]] = &[
        &[],
        &[
            "watchNamespaces={team-a,team-b}",
            "leaderElection.enabled=false",
        ],
        &[
            "replicas=2",
            "metrics.service.enabled=false",
            "logFormat=json",
            "trafficProviders={istio,gatewayAPI}",
        ],
    ];
    for values in variants {
        let mut args = vec!["lint", "--strict", CHART];
        let sets = set_args(values);
        args.extend(sets.iter().map(String::as_str));
        let out = run_helm(&helm, &args);
        let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "helm lint {values:?} failed:\n{report}"
        );
        assert!(
            report.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{report}"
        );
        for level in ["[WARNING]", "[ERROR]"] {
            assert!(!report.contains(level), "helm lint {values:?}:\n{report}");
        }
    }
}

#[test]
fn default_values_render_a_cluster_role_and_a_locked_down_deployment() {
    let Some(helm) = helm_or_skip("default_values_render_a_cluster_role") else {
        return;
    };
    let objects = render(&helm, &[]).expect("helm template with default values");
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
        .into(),
        "the default install's objects"
    );
    assert_no_broad_rules(&objects);
    let fullname = "canary-operator";

    // Every object carries the recommended labels.
    for object in &objects {
        let labels = &object["metadata"]["labels"];
        for key in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/component",
            "helm.sh/chart",
        ] {
            assert!(
                labels[key].is_string(),
                "{} {} lacks label {key}",
                object["kind"],
                name_of(object)
            );
        }
        if object["kind"] != "ClusterRole" && object["kind"] != "ClusterRoleBinding" {
            assert!(object["metadata"]["namespace"].is_string());
        }
    }

    // Cluster-wide: the operator's rules, bound to its ServiceAccount.
    let cluster_role = one(&objects, "ClusterRole");
    assert_eq!(name_of(cluster_role), fullname);
    assert_eq!(
        grants(&cluster_role["rules"]),
        expected_cluster_grants(&[TrafficProvider::Istio]),
        "Istio alone by default"
    );
    let binding = one(&objects, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], fullname);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": fullname, "namespace": RENDER_NAMESPACE}])
    );

    // The only namespaced Role is the Lease's, in the release namespace, on our Lease by name.
    let lease_role = one(&objects, "Role");
    assert_eq!(lease_role["metadata"]["namespace"], RENDER_NAMESPACE);
    assert_eq!(grants(&lease_role["rules"]), lease_grants(fullname));
    let lease_binding = one(&objects, "RoleBinding");
    assert_eq!(lease_binding["roleRef"]["name"], name_of(lease_role));
    assert_eq!(lease_binding["subjects"][0]["name"], fullname);

    let sa = one(&objects, "ServiceAccount");
    assert_eq!(name_of(sa), fullname);

    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    let pod = &deployment["spec"]["template"];
    let selector = deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector");
    for (key, value) in selector {
        assert_eq!(&pod["metadata"]["labels"][key], value, "pod label {key}");
    }
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], fullname);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["securityContext"]["runAsUser"], 65532);
    assert_eq!(spec["securityContext"]["runAsGroup"], 65532);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let containers = spec["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    assert_eq!(container["image"], "canary-operator:0.1.0");
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["runAsUser"], 65532);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["privileged"], false);
    assert_eq!(security["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        container["ports"],
        json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "http");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "http");
    for (kind, resource) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "memory"),
    ] {
        assert!(
            container["resources"][kind][resource].is_string(),
            "resources.{kind}.{resource}"
        );
    }

    let env = env_of(container);
    assert_eq!(env.field("POD_NAME"), Some("metadata.name"));
    assert_eq!(env.field("POD_NAMESPACE"), Some("metadata.namespace"));
    assert_eq!(env.value("HTTP_ADDRESS"), Some("0.0.0.0:8080"));
    assert_eq!(env.value("LEADER_ELECT"), Some("true"));
    assert_eq!(env.value("LEASE_NAME"), Some(fullname));
    assert_eq!(env.value("LEASE_DURATION_SECONDS"), Some("15"));
    assert_eq!(env.value("LOG_FORMAT"), Some("text"));
    assert_eq!(env.value("RUST_LOG"), Some("info"));
    assert_eq!(env.value("WATCH_NAMESPACES"), None, "all namespaces");

    let service = one(&objects, "Service");
    assert_eq!(name_of(service), format!("{fullname}-metrics"));
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "http-metrics", "port": 8080, "targetPort": "http", "protocol": "TCP"}])
    );
    for (key, value) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(
            &pod["metadata"]["labels"][key], value,
            "Service selector {key}"
        );
    }
}

#[test]
fn listed_namespaces_render_roles_there_and_nothing_cluster_wide() {
    let Some(helm) = helm_or_skip("listed_namespaces_render_roles_there") else {
        return;
    };
    let objects = render(
        &helm,
        &[
            "watchNamespaces={team-a,team-b}",
            "leaderElection.enabled=false",
            "metrics.service.enabled=false",
            "logFormat=json",
            "logLevel=debug",
            "fullnameOverride=canary",
            "trafficProviders={istio,gatewayAPI}",
        ],
    )
    .expect("helm template with listed namespaces");
    assert_no_broad_rules(&objects);
    assert!(of_kind(&objects, "ClusterRole").is_empty());
    assert!(of_kind(&objects, "ClusterRoleBinding").is_empty());
    assert!(
        of_kind(&objects, "Service").is_empty(),
        "metrics Service off"
    );

    let roles = of_kind(&objects, "Role");
    let namespaces: BTreeSet<&str> = roles
        .iter()
        .filter_map(|r| r["metadata"]["namespace"].as_str())
        .collect();
    assert_eq!(
        namespaces,
        ["team-a", "team-b"].into(),
        "one Role per watched namespace and no Lease Role"
    );
    for role in &roles {
        // The rules of the ClusterRole of the default install, CanaryReleases included, but
        // listing pods (cluster-wide only: this install does not check gateway pods).
        assert_eq!(
            grants(&role["rules"]),
            expected_operator_grants(&TrafficProvider::ALL)
        );
        assert_eq!(name_of(role), "canary");
    }
    let bindings = of_kind(&objects, "RoleBinding");
    assert_eq!(bindings.len(), 2);
    for binding in bindings {
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["roleRef"]["name"], "canary");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "canary", "namespace": RENDER_NAMESPACE}])
        );
    }

    let deployment = one(&objects, "Deployment");
    let env = env_of(&deployment["spec"]["template"]["spec"]["containers"][0]);
    assert_eq!(env.value("WATCH_NAMESPACES"), Some("team-a,team-b"));
    assert_eq!(env.value("LEADER_ELECT"), Some("false"));
    assert_eq!(env.value("LEASE_NAME"), None);
    assert_eq!(env.value("LOG_FORMAT"), Some("json"));
    assert_eq!(env.value("RUST_LOG"), Some("debug"));
    assert_eq!(env.value("TRAFFIC_PROVIDERS"), Some("istio,gatewayAPI"));
}

/// The Gateway API alone: HTTPRoutes granted, nothing of Istio's; and a provider the operator
/// does not know is refused at install.
#[test]
fn the_gateway_api_alone_is_granted_its_routes_and_nothing_of_istio() {
    let Some(helm) = helm_or_skip("the_gateway_api_alone") else {
        return;
    };
    let objects = render(&helm, &["trafficProviders={gatewayAPI}"])
        .expect("helm template with the Gateway API alone");
    assert_no_broad_rules(&objects);
    let cluster_role = one(&objects, "ClusterRole");
    let granted = grants(&cluster_role["rules"]);
    assert_eq!(
        granted,
        expected_cluster_grants(&[TrafficProvider::GatewayApi])
    );
    assert!(
        granted.iter().all(|g| g.group != "networking.istio.io"),
        "{granted:?}"
    );
    let deployment = one(&objects, "Deployment");
    let env = env_of(&deployment["spec"]["template"]["spec"]["containers"][0]);
    assert_eq!(env.value("TRAFFIC_PROVIDERS"), Some("gatewayAPI"));

    let refused =
        render(&helm, &["trafficProviders={istio,linkerd}"]).expect_err("unknown provider");
    assert!(
        refused.contains("\"linkerd\" is not a traffic provider"),
        "{refused}"
    );
}

#[test]
fn two_replicas_render_with_leader_election_and_are_refused_without_it() {
    let Some(helm) = helm_or_skip("two_replicas_render_with_leader_election") else {
        return;
    };
    let objects = render(
        &helm,
        &["replicas=2", "leaderElection.leaseDurationSeconds=20"],
    )
    .expect("helm template with two replicas");
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let env = env_of(&deployment["spec"]["template"]["spec"]["containers"][0]);
    assert_eq!(env.value("LEADER_ELECT"), Some("true"));
    assert_eq!(env.value("LEASE_DURATION_SECONDS"), Some("20"));

    let refused = render(&helm, &["replicas=2", "leaderElection.enabled=false"])
        .expect_err("two replicas without leader election");
    assert!(
        refused.contains("needs leaderElection.enabled=true"),
        "{refused}"
    );
    let refused = render(&helm, &["logFormat=xml"]).expect_err("unknown log format");
    assert!(
        refused.contains("logFormat must be text or json"),
        "{refused}"
    );
}

/// A container's environment, by variable name.
struct Env(Vec<Value>);

fn env_of(container: &Value) -> Env {
    Env(container["env"].as_array().cloned().unwrap_or_default())
}

impl Env {
    fn find(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|e| e["name"] == name)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.find(name)?["value"].as_str()
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.find(name)?["valueFrom"]["fieldRef"]["fieldPath"].as_str()
    }
}
