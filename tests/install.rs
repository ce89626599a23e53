//! The Helm chart as users meet it: it lints clean and renders locked down for default and other
//! values; it installs into the local control plane (`make cluster-up`); and the permissions it
//! grants are exactly what the operator uses. The operator binary runs as a separate process with
//! a token of the chart's ServiceAccount, so the real RBAC authorizer judges every request of the
//! operator scenario (enough), and every granted verb on every resource shows up in the requests
//! it sent (nothing more than it uses).
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use canary_operator::api::CanaryRelease;
use canary_operator::api::istio::{DestinationRule, Gateway, VirtualService};
use common::operator::install_crd;
use common::{TestNs, setup, skip, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/canary-operator");
/// Release name and namespace for renders that never reach a cluster.
const RENDER_RELEASE: &str = "canary-operator";
const RENDER_NAMESPACE: &str = "operators";

// ---------------------------------------------------------------------------------------------
// helm

/// The helm binary: on PATH after `eval $(make -s cluster-env)`, else where hack/build-tools.sh
/// caches it.
fn helm_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("helm"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let cache = std::env::var_os("CANARY_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/canary-operator"))
            })?;
        let helm = cache.join("bin/helm");
        helm.is_file().then_some(helm)
    })
}

fn helm_or_skip(test_name: &str) -> Option<PathBuf> {
    let helm = helm_binary();
    if helm.is_none() {
        skip(
            test_name,
            "helm not found",
            "run `make tools` (it builds helm) and `eval $(make -s cluster-env)`",
        );
    }
    helm
}

fn run_helm(helm: &Path, args: &[&str]) -> Output {
    Command::new(helm)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running helm {args:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `--set` arguments for helm, one pair per value.
fn set_args(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| ["--set".to_owned(), (*v).to_owned()])
        .collect()
}

/// Renders the chart with `values`; the error is helm's stderr.
fn render(helm: &Path, values: &[&str]) -> Result<Vec<Value>, String> {
    let mut args = vec![
        "template",
        RENDER_RELEASE,
        CHART,
        "--namespace",
        RENDER_NAMESPACE,
    ];
    let sets = set_args(values);
    args.extend(sets.iter().map(String::as_str));
    let out = run_helm(helm, &args);
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    Ok(parse_documents(&text(&out.stdout)))
}

fn parse_documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).expect("rendered YAML parses"))
        .filter(|document| !document.is_null())
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// RBAC as sets of single permissions

/// One permission: a verb on a resource (with subresource) of an API group, optionally only on
/// one object name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    group: String,
    resource: String,
    verb: String,
    name: Option<String>,
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

fn strings(value: &Value) -> Vec<String> {
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
fn grants(rules: &Value) -> BTreeSet<Grant> {
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
fn expected_operator_grants() -> BTreeSet<Grant> {
    canary_operator::kinds::rbac_rules()
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

fn lease_grants(lease: &str) -> BTreeSet<Grant> {
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
fn assert_no_broad_rules(objects: &[Value]) {
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

// ---------------------------------------------------------------------------------------------
// Rendering and linting (helm only, no cluster)

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
    assert_eq!(grants(&cluster_role["rules"]), expected_operator_grants());
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
        // The same rules as the ClusterRole of the default install, CanaryReleases included.
        assert_eq!(grants(&role["rules"]), expected_operator_grants());
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

// ---------------------------------------------------------------------------------------------
// Installing into the cluster

/// A Helm release in a test namespace; uninstalled when dropped (before the namespace goes,
/// since it is declared after it), which removes its cluster-scoped objects too.
struct HelmRelease {
    helm: PathBuf,
    name: String,
    namespace: String,
    /// The name of the chart's objects (`<release>-canary-operator`).
    fullname: String,
}

impl HelmRelease {
    fn install(helm: &Path, ns: &TestNs, values: &[&str]) -> HelmRelease {
        // The namespace's name is unique per run, and so are the cluster-scoped names.
        let name = ns.name.clone();
        let mut args = vec![
            "install",
            &name,
            CHART,
            "--namespace",
            &ns.name,
            "--wait",
            "--timeout",
            "120s",
        ];
        let sets = set_args(values);
        args.extend(sets.iter().map(String::as_str));
        let started = Instant::now();
        let out = run_helm(helm, &args);
        assert!(
            out.status.success(),
            "helm install failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let notes = text(&out.stdout);
        assert!(notes.contains("kubectl -n NAMESPACE get crel"), "{notes}");
        eprintln!("helm install {name}: {:?}", started.elapsed());
        HelmRelease {
            helm: helm.to_owned(),
            fullname: format!("{name}-canary-operator"),
            name,
            namespace: ns.name.clone(),
        }
    }
}

impl Drop for HelmRelease {
    fn drop(&mut self) {
        let out = Command::new(&self.helm)
            .args([
                "uninstall",
                &self.name,
                "--namespace",
                &self.namespace,
                "--wait",
                "--timeout",
                "60s",
            ])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: helm uninstall {}: {}",
                self.name,
                text(&out.stderr)
            ),
            Err(e) => eprintln!("warning: helm uninstall {}: {e}", self.name),
        }
    }
}

/// Waits until the chart's operator pod is Running (kwok plays the kubelet: no container runs).
async fn wait_pod_running(ns: &TestNs, release: &HelmRelease) -> Pod {
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let selector = format!("app.kubernetes.io/instance={}", release.name);
    wait_for("the operator pod Running", WAIT, async || {
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await
}

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
    assert_eq!(grants(&rules), expected_operator_grants());
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
        ("list", "pods", "", "", false),
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

// ---------------------------------------------------------------------------------------------
// The operator process, as the chart's ServiceAccount

/// The operator binary under test; CANARY_OPERATOR_BIN picks another build (for example the
/// release binary, to measure what the chart's resources should be).
fn operator_binary() -> PathBuf {
    std::env::var_os("CANARY_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_canary-operator")))
}

/// The operator running as a child process; killed if the test ends early.
struct OperatorProcess {
    child: tokio::process::Child,
    log: PathBuf,
    port: u16,
}

impl OperatorProcess {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Panics with the log's tail if the process has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "the operator exited ({status}); last lines of {}:\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
    }

    /// Peak resident memory (KiB) and CPU seconds so far, from /proc.
    fn usage(&self) -> Option<(u64, f64)> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let peak_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may contain spaces): utime and stime are the
        // 12th and 13th, in clock ticks (100 per second on Linux).
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some((peak_kib, ticks as f64 / 100.0))
    }
}

/// Sends one GET to the operator's HTTP server; the status code and body.
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let code = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((code, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Starts the operator with the environment the chart's Deployment gives its container (the
/// downward API filled in as the kubelet would), authenticated by `kubeconfig` alone. Only what a
/// test cannot take over is changed: the HTTP address (loopback, a free port) and the log
/// (JSON, with kube's per-request debug lines that the minimality check reads).
async fn start_operator_process(
    deployment: &Deployment,
    pod_name: &str,
    namespace: &str,
    kubeconfig: &Path,
    dir: &Path,
) -> OperatorProcess {
    let container = deployment
        .spec
        .template
        .spec
        .as_ref()
        .map(|s| s.containers[0].clone())
        .expect("the operator container");
    let port = free_port();
    let mut command = tokio::process::Command::new(operator_binary());
    command.env_clear();
    for var in container.env.unwrap_or_default() {
        let field = var
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        let value = match (var.value, field) {
            (Some(value), _) => value,
            (None, Some("metadata.name")) => pod_name.to_owned(),
            (None, Some("metadata.namespace")) => namespace.to_owned(),
            (None, other) => panic!("env {} from an unexpected source {other:?}", var.name),
        };
        command.env(var.name, value);
    }
    let log = dir.join("operator.log");
    let file = std::fs::File::create(&log).expect("create operator log");
    let stdout = file.try_clone().expect("clone log file");
    command
        .args(container.args.unwrap_or_default())
        .env("KUBECONFIG", kubeconfig)
        .env("HTTP_ADDRESS", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info,canary_operator=debug,kube_client=debug")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(file)
        .kill_on_drop(true);
    let child = command.spawn().expect("start the operator");
    let mut operator = OperatorProcess { child, log, port };
    let deadline = Instant::now() + WAIT;
    loop {
        operator.assert_running();
        if let Some((200, _)) = http_get(port, "/readyz").await {
            return operator;
        }
        assert!(
            Instant::now() < deadline,
            "the operator was not ready within {WAIT:?}; last lines:\n{}",
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The operator scenario, seen from the user's side (admin client)

fn lab(namespace: &str) -> Value {
    let path = format!("{}/examples/lab.yaml", env!("CARGO_MANIFEST_DIR"));
    let mut release: Value =
        serde_norway::from_str(&std::fs::read_to_string(path).expect("read lab.yaml"))
            .expect("parse lab.yaml");
    release["metadata"]["namespace"] = json!(namespace);
    release
}

async fn patch_release(ns: &TestNs, name: &str, patch: Value) {
    Api::<CanaryRelease>::namespaced(ns.client.clone(), &ns.name)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch release");
}

/// Waits until the release is Ready (Available) for its current generation.
async fn wait_ready(ns: &TestNs, operator: &mut OperatorProcess, name: &str) {
    let releases: Api<CanaryRelease> = Api::namespaced(ns.client.clone(), &ns.name);
    let deadline = Instant::now() + WAIT;
    loop {
        operator.assert_running();
        let release = releases.get(name).await.ok();
        let ready = release.as_ref().is_some_and(|r| {
            r.status.as_ref().is_some_and(|s| {
                s.observed_generation == r.metadata.generation
                    && s.conditions.iter().any(|c| {
                        c.type_ == "Ready" && c.status == "True" && c.reason == "Available"
                    })
            })
        });
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not Ready within {WAIT:?}; status {:?}; operator log:\n{}",
            release.map(|r| serde_json::to_string(&r.status).unwrap_or_default()),
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_weights(ns: &TestNs, name: &str, expected: &[(&str, i32)]) {
    let routes: Api<VirtualService> = Api::namespaced(ns.client.clone(), &ns.name);
    let expected: Vec<(String, i32)> = expected.iter().map(|(s, w)| ((*s).into(), *w)).collect();
    wait_for(
        &format!("VirtualService weights {expected:?}"),
        WAIT,
        async || {
            let vs = routes.get(name).await.ok()?;
            (vs.weights() == expected).then_some(())
        },
    )
    .await;
}

async fn wait_gone<K>(ns: &TestNs, name: &str)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(ns.client.clone(), &ns.name);
    let what = format!("{} {name} deleted", K::kind(&()));
    wait_for(&what, WAIT, async || {
        match api.get_opt(name).await {
            Ok(None) => Some(()),
            // Deleted in the background: gone for our purposes once marked.
            Ok(Some(o)) if o.meta().deletion_timestamp.is_some() => Some(()),
            _ => None,
        }
    })
    .await;
}

async fn operator_events(ns: &TestNs, instance: &str) -> Vec<Event> {
    Api::<Event>::namespaced(ns.client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| {
            e.reporting_controller.as_deref() == Some(canary_operator::FIELD_MANAGER)
                && e.reporting_instance.as_deref() == Some(instance)
        })
        .collect()
}

async fn wait_event(ns: &TestNs, instance: &str, reason: &str) {
    wait_for(&format!("a {reason} Event"), WAIT, async || {
        operator_events(ns, instance)
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason))
    })
    .await;
}

/// Every step of the operator scenario that needs a distinct permission: creating every child
/// kind, status, Events, a weight shift, drift repair, and each kind of pruning.
async fn run_scenario(apps: &TestNs, operator: &mut OperatorProcess, instance: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "azure-openai"},
        "stringData": {"AZURE_API_KEY": "not-a-real-key"},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(apps.client.clone(), &apps.name)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let name = "azureopenaichat";
    Api::<CanaryRelease>::namespaced(apps.client.clone(), &apps.name)
        .patch(
            name,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(lab(&apps.name)),
        )
        .await
        .expect("apply the lab release");
    wait_ready(apps, operator, name).await;
    wait_weights(apps, name, &[("v1", 75), ("v2", 25)]).await;
    Api::<Gateway>::namespaced(apps.client.clone(), &apps.name)
        .get(name)
        .await
        .expect("the created Gateway");

    // Shifting traffic.
    patch_release(apps, name, json!({"spec": {"weight": 50}})).await;
    wait_weights(apps, name, &[("v1", 50), ("v2", 50)]).await;
    wait_ready(apps, operator, name).await;

    // Drift: a deleted DestinationRule comes back, with an Event.
    let rules: Api<DestinationRule> = Api::namespaced(apps.client.clone(), &apps.name);
    let before = rules.get(name).await.expect("DestinationRule").uid();
    rules
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete DestinationRule");
    wait_for("the DestinationRule recreated", WAIT, async || {
        let now = rules.get_opt(name).await.ok().flatten()?;
        (now.uid() != before && now.meta().deletion_timestamp.is_none()).then_some(())
    })
    .await;
    wait_event(apps, instance, "DriftCorrected").await;

    // Autoscaling off: the HPAs go.
    patch_release(apps, name, json!({"spec": {"autoscaling": null}})).await;
    wait_gone::<HorizontalPodAutoscaler>(apps, "azureopenaichat-v1").await;
    wait_gone::<HorizontalPodAutoscaler>(apps, "azureopenaichat-v2").await;
    wait_event(apps, instance, "Pruned").await;
    wait_ready(apps, operator, name).await;

    // A renamed version: its old ConfigMap and Deployment go.
    patch_release(apps, name, json!({"spec": {"canary": {"name": "v3"}}})).await;
    wait_weights(apps, name, &[("v1", 50), ("v3", 50)]).await;
    wait_gone::<ConfigMap>(apps, "azureopenaichat-v2").await;
    wait_gone::<Deployment>(apps, "azureopenaichat-v2").await;
    wait_ready(apps, operator, name).await;

    // Binding to an existing Gateway: the created one goes.
    patch_release(
        apps,
        name,
        json!({"spec": {"gateway": {"selector": null, "port": null, "existing": ["istio-system/shared"]}}}),
    )
    .await;
    wait_gone::<Gateway>(apps, name).await;
    wait_ready(apps, operator, name).await;
}

// ---------------------------------------------------------------------------------------------
// What the operator sent, from its own request log

/// One request as kube's client logged it (`kube_client` debug lines, JSON).
#[derive(Debug)]
struct Sent {
    method: String,
    url: String,
    status: Option<u64>,
}

fn requests_in_log(log: &str) -> Vec<Sent> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["span"]["name"] == "HTTP")
        .filter_map(|event| {
            let span = &event["span"];
            let status = match &span["http.status_code"] {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            };
            Some(Sent {
                method: span["http.method"].as_str()?.to_owned(),
                url: span["http.url"].as_str()?.to_owned(),
                status,
            })
        })
        .collect()
}

/// A request as the RBAC authorizer sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Access {
    namespace: Option<String>,
    grant: Grant,
}

/// The authorizer's attributes of a request (see the API server's request-info resolver): the
/// verb from the method (and `watch=true`, and whether a name is given), the group, resource and
/// subresource from the path. `None` for non-resource paths such as /version.
fn access_of(method: &str, url: &str) -> Option<Access> {
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
fn allows(grant: &Grant, namespace: &str, access: &Access) -> bool {
    access.namespace.as_deref() == Some(namespace)
        && grant.group == access.grant.group
        && grant.resource == access.grant.resource
        && grant.verb == access.grant.verb
        && (grant.name.is_none() || grant.name == access.grant.name)
}

fn role_grants(role: &Role) -> BTreeSet<Grant> {
    let rules: &[PolicyRule] = role.rules.as_deref().unwrap_or_default();
    grants(&serde_json::to_value(rules).expect("rules as JSON"))
}

/// The chart installed for one watched namespace; the operator binary, run with the
/// environment of the chart's Deployment and a token of the chart's ServiceAccount, goes through
/// the whole scenario against the real RBAC authorizer, then stops on SIGTERM. Its request log
/// then shows that it used every permission the chart grants, and nothing else.
#[tokio::test]
async fn the_charts_service_account_runs_the_scenario_and_uses_every_grant() {
    let test = "the_charts_service_account_runs_the_scenario_and_uses_every_grant";
    let Some(helm) = helm_or_skip(test) else {
        return;
    };
    let Some(ops) = setup("chart-ops").await else {
        return;
    };
    let Some(apps) = setup("chart-apps").await else {
        return;
    };
    install_crd(&apps).await;
    let watch = format!("watchNamespaces={{{}}}", apps.name);
    let release = HelmRelease::install(&helm, &ops, &[&watch]);
    let fullname = release.fullname.clone();

    // The permissions as installed: the operator's Role in the watched namespace, the Lease's in
    // the release namespace, and nothing cluster-wide under the chart's names.
    let operator_role = Api::<Role>::namespaced(apps.client.clone(), &apps.name)
        .get(&fullname)
        .await
        .expect("the operator's Role in the watched namespace");
    let lease_role = Api::<Role>::namespaced(ops.client.clone(), &ops.name)
        .get(&format!("{fullname}-leader-election"))
        .await
        .expect("the Lease Role in the release namespace");
    assert!(
        Api::<ClusterRole>::all(ops.client.clone())
            .get_opt(&fullname)
            .await
            .expect("get ClusterRole")
            .is_none()
    );
    let granted: Vec<(String, Grant)> = role_grants(&operator_role)
        .into_iter()
        .map(|g| (apps.name.clone(), g))
        .chain(
            role_grants(&lease_role)
                .into_iter()
                .map(|g| (ops.name.clone(), g)),
        )
        .collect();
    assert_eq!(role_grants(&operator_role), expected_operator_grants());
    assert_eq!(role_grants(&lease_role), lease_grants(&fullname));

    let pod = wait_pod_running(&ops, &release).await;
    let pod_name = pod.name_any();
    let token = common::service_account_token(&ops, &fullname).await;
    let dir = std::env::temp_dir().join(format!("canary-operator-{}", ops.name));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, common::token_kubeconfig(&token, &apps.name))
        .expect("write kubeconfig");

    let deployment = Api::<Deployment>::namespaced(ops.client.clone(), &ops.name)
        .get(&fullname)
        .await
        .expect("the chart's Deployment");
    let started = Instant::now();
    let mut operator =
        start_operator_process(&deployment, &pod_name, &ops.name, &kubeconfig, &dir).await;
    eprintln!("operator ready after {:?}", started.elapsed());

    let lease = Api::<Lease>::namespaced(ops.client.clone(), &ops.name)
        .get(&fullname)
        .await
        .expect("the Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(pod_name.as_str()),
        "the operator holds the chart's Lease"
    );

    run_scenario(&apps, &mut operator, &pod_name).await;
    let events = operator_events(&apps, &pod_name).await;
    assert!(
        !events.is_empty(),
        "Events recorded as the chart's ServiceAccount"
    );
    let (code, metrics) = http_get(operator.port, "/metrics")
        .await
        .expect("GET /metrics");
    assert_eq!(code, 200, "{metrics}");
    assert!(!metrics.is_empty());
    if let Some((peak_kib, cpu)) = operator.usage() {
        eprintln!(
            "operator {}: peak RSS {} MiB, CPU {cpu:.2}s over {:?} of the scenario",
            operator_binary().display(),
            peak_kib / 1024,
            started.elapsed()
        );
    }

    // SIGTERM, as the kubelet stops a pod: exit 0, and the Lease released for the next leader.
    let pid = operator.child.id().expect("operator pid");
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(killed.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), operator.child.wait())
        .await
        .expect("the operator stops within 30s of SIGTERM")
        .expect("wait for the operator");
    assert!(
        exit.success(),
        "exit after SIGTERM: {exit}\n{}",
        operator.log_tail()
    );
    let lease = Api::<Lease>::namespaced(ops.client.clone(), &ops.name)
        .get(&fullname)
        .await
        .expect("the Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        None,
        "the Lease is released on SIGTERM"
    );

    // Minimality: every request the operator sent, as the authorizer saw it.
    let log = operator.log_text();
    let sent = requests_in_log(&log);
    assert!(
        sent.len() > 20,
        "the operator's request log is missing (kube_client debug lines); {} lines of log",
        log.lines().count()
    );
    let mut used: BTreeSet<Access> = BTreeSet::new();
    let mut other_paths: BTreeSet<String> = BTreeSet::new();
    for request in &sent {
        assert_ne!(
            request.status,
            Some(403),
            "forbidden: {} {}",
            request.method,
            request.url
        );
        let Some(access) = access_of(&request.method, &request.url) else {
            other_paths.insert(format!("{} {}", request.method, request.url));
            continue;
        };
        // A server-side apply that creates its object is authorized as `create` as well as
        // `patch` (the API server answers 201 then).
        if access.grant.verb == "patch" && request.status == Some(201) {
            let mut create = access.clone();
            create.grant.verb = "create".into();
            used.insert(create);
        }
        used.insert(access);
    }
    eprintln!("non-resource requests (allowed to every authenticated user): {other_paths:?}");
    let not_granted: Vec<String> = used
        .iter()
        .filter(|a| !granted.iter().any(|(ns, g)| allows(g, ns, a)))
        .map(|a| format!("{} in {:?}", a.grant, a.namespace))
        .collect();
    assert!(
        not_granted.is_empty(),
        "sent but not granted (should have been 403): {not_granted:#?}"
    );
    let unused: Vec<String> = granted
        .iter()
        .filter(|(ns, g)| !used.iter().any(|a| allows(g, ns, a)))
        .map(|(ns, g)| format!("{g} in {ns}"))
        .collect();
    assert!(
        unused.is_empty(),
        "granted by the chart but never used in the scenario: {unused:#?}"
    );
    let summary: BTreeSet<String> = used
        .iter()
        .map(|a| {
            let mut g = a.grant.clone();
            if g.resource != "leases" {
                g.name = None;
            }
            g.to_string()
        })
        .collect();
    eprintln!(
        "used, one line per permission:\n  {}",
        summary.into_iter().collect::<Vec<_>>().join("\n  ")
    );
    let _ = std::fs::remove_dir_all(&dir);
    drop(release);
}
