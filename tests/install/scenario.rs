//! The operator binary, run with the environment of the chart's Deployment and a token of the
//! chart's ServiceAccount, through a scenario that needs every permission the chart grants.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use canary_operator::api::TrafficProvider;
use canary_operator::api::gateway_api::HTTPRoute;
use canary_operator::api::istio::{DestinationRule, Gateway, VirtualService};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::common::gateway_api;
use crate::common::lab::{self, api};
use crate::common::operator::install_crd;
use crate::common::process::{Process, Spawn, binary, clock_ticks};
use crate::common::{self, TestNs, WAIT, setup, wait_for};
use crate::helm::{HelmRelease, helm_or_skip, wait_pod_running};
use crate::rbac::{
    Access, Grant, access_of, allows, expected_operator_grants, lease_grants, role_grants,
};

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
) -> Process {
    let container = deployment
        .spec
        .template
        .spec
        .as_ref()
        .map(|s| s.containers[0].clone())
        .expect("the operator container");
    let mut spawn = Spawn::new().env_clear();
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
        spawn = spawn.env(var.name, value);
    }
    let mut operator = spawn
        .args(container.args.unwrap_or_default())
        .kubeconfig(kubeconfig)
        .log_filter("info,canary_operator=debug")
        .log_file(&dir.join("operator.log"))
        .start();
    operator.wait_ready(WAIT).await;
    operator
}

/// Waits for an Event with `reason` that the operator instance `instance` reported.
async fn wait_event(ns: &TestNs, instance: &str, reason: &str) {
    lab::wait_event(ns, &format!("a {reason} Event"), |e| {
        lab::reported_by(e, instance) && e.reason.as_deref() == Some(reason)
    })
    .await;
}

/// Every step of the operator scenario that needs a distinct permission: creating every child
/// kind, status, Events, a weight shift, drift repair, and each kind of pruning.
async fn run_scenario(apps: &TestNs, operator: &mut Process, instance: &str) {
    lab::create_secret(apps).await;
    let name = "azureopenaichat";
    lab::apply(apps, name).await;
    lab::wait_ready_of(apps, operator, name).await;
    lab::wait_weights(apps, name, &[("v1", 75), ("v2", 25)]).await;
    api::<Gateway>(apps)
        .get(name)
        .await
        .expect("the created Gateway");

    // Shifting traffic.
    lab::patch_release(apps, name, json!({"spec": {"weight": 50}})).await;
    lab::wait_weights(apps, name, &[("v1", 50), ("v2", 50)]).await;
    lab::wait_ready_of(apps, operator, name).await;

    // Drift: a deleted DestinationRule comes back, with an Event.
    let rules = api::<DestinationRule>(apps);
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
    lab::patch_release(apps, name, json!({"spec": {"autoscaling": null}})).await;
    lab::wait_gone::<HorizontalPodAutoscaler>(apps, "azureopenaichat-v1").await;
    lab::wait_gone::<HorizontalPodAutoscaler>(apps, "azureopenaichat-v2").await;
    wait_event(apps, instance, "Pruned").await;
    lab::wait_ready_of(apps, operator, name).await;

    // A renamed version: its old ConfigMap and Deployment go.
    lab::patch_release(apps, name, json!({"spec": {"canary": {"name": "v3"}}})).await;
    lab::wait_weights(apps, name, &[("v1", 50), ("v3", 50)]).await;
    lab::wait_gone::<ConfigMap>(apps, "azureopenaichat-v2").await;
    lab::wait_gone::<Deployment>(apps, "azureopenaichat-v2").await;
    lab::wait_ready_of(apps, operator, name).await;

    // Binding to an existing Gateway (the platform's, for this release's host): the created one
    // goes.
    let shared = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "shared"},
        "spec": {
            "selector": {"istio": "aks-istio-ingressgateway-external"},
            "servers": [{
                "port": {"number": 80, "name": "http", "protocol": "HTTP"},
                "hosts": [apps.host(name)],
            }],
        },
    });
    api::<Gateway>(apps)
        .patch(
            "shared",
            &PatchParams::apply("platform-team").force(),
            &Patch::Apply(&shared),
        )
        .await
        .expect("the platform's Gateway");
    lab::patch_release(
        apps,
        name,
        json!({"spec": {"gateway": {"selector": null, "port": null, "existing": [format!("{}/shared", apps.name)]}}}),
    )
    .await;
    lab::wait_gone::<Gateway>(apps, name).await;
    lab::wait_ready_of(apps, operator, name).await;

    // Moved to the Gateway API: the Istio routing objects go once the HTTPRoute is in place.
    gateway_api::gateway(apps, &apps.name, "public", "Same").await;
    lab::patch_release(
        apps,
        name,
        json!({"spec": {"gateway": null, "traffic": {"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "public"}]}}}}),
    )
    .await;
    gateway_api::wait_route_weights(
        apps,
        name,
        &[("azureopenaichat-v1", 50), ("azureopenaichat-v3", 50)],
    )
    .await;
    lab::wait_gone::<VirtualService>(apps, name).await;
    lab::wait_gone::<DestinationRule>(apps, name).await;
    lab::wait_ready_of(apps, operator, name).await;

    // A renamed version under the Gateway API: its Service goes.
    lab::patch_release(apps, name, json!({"spec": {"canary": {"name": "v4"}}})).await;
    gateway_api::wait_route_weights(
        apps,
        name,
        &[("azureopenaichat-v1", 50), ("azureopenaichat-v4", 50)],
    )
    .await;
    lab::wait_gone::<Service>(apps, "azureopenaichat-v3").await;
    lab::wait_ready_of(apps, operator, name).await;

    // Back to Istio: the HTTPRoute and the versions' Services go.
    lab::patch_release(
        apps,
        name,
        json!({"spec": {"traffic": null, "gateway": {"existing": [format!("{}/shared", apps.name)], "hosts": [apps.host(name)]}}}),
    )
    .await;
    lab::wait_weights(apps, name, &[("v1", 50), ("v4", 50)]).await;
    lab::wait_gone::<HTTPRoute>(apps, name).await;
    lab::wait_gone::<Service>(apps, "azureopenaichat-v1").await;
    lab::wait_gone::<Service>(apps, "azureopenaichat-v4").await;
    lab::wait_ready_of(apps, operator, name).await;
}

// ---------------------------------------------------------------------------------------------
// What the operator sent, from its own request log

/// One request as the operator logged it (its `request answered` debug lines, JSON, written below
/// every client it builds: see `src/requests.rs`).
#[derive(Debug)]
struct Sent {
    method: String,
    url: String,
    status: Option<u64>,
}

fn requests_in_log(log: &str) -> Vec<Sent> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["fields"]["message"] == "request answered")
        .filter_map(|event| {
            let fields = &event["fields"];
            Some(Sent {
                method: fields["method"].as_str()?.to_owned(),
                url: fields["url"].as_str()?.to_owned(),
                status: fields["status"].as_u64(),
            })
        })
        .collect()
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
    // Both traffic providers, so that a release can move between them: the widest grants.
    let release = HelmRelease::install(
        &helm,
        &ops,
        &[&watch, "trafficProviders={istio,gatewayAPI}"],
    );
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
    assert_eq!(
        role_grants(&operator_role),
        expected_operator_grants(&TrafficProvider::ALL)
    );
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

    // Ready comes before leading (a standby is ready too), so the Lease is awaited, bounded.
    let leases = Api::<Lease>::namespaced(ops.client.clone(), &ops.name);
    wait_for("the operator to hold the chart's Lease", WAIT, async || {
        let lease = leases.get_opt(&fullname).await.ok().flatten()?;
        (lease.spec?.holder_identity? == pod_name).then_some(())
    })
    .await;

    run_scenario(&apps, &mut operator, &pod_name).await;
    let events: Vec<_> = lab::events(&apps)
        .await
        .into_iter()
        .filter(|e| lab::reported_by(e, &pod_name))
        .collect();
    assert!(
        !events.is_empty(),
        "Events recorded as the chart's ServiceAccount"
    );
    let (code, metrics) = operator.get("/metrics").await.expect("GET /metrics");
    assert_eq!(code, 200, "{metrics}");
    assert!(!metrics.is_empty());
    if let (Some(memory), Some(cpu)) = (operator.memory(), operator.cpu_seconds(clock_ticks())) {
        eprintln!(
            "operator {}: peak RSS {} MiB, CPU {cpu:.2}s over {:?} of the scenario",
            binary().display(),
            memory.peak_kib / 1024,
            started.elapsed()
        );
    }

    // SIGTERM, as the kubelet stops a pod: exit 0, and the Lease released for the next leader.
    operator.signal("TERM");
    let exit = operator.wait_exit(Duration::from_secs(30));
    assert_eq!(
        exit,
        Some(0),
        "the operator exits 0 within 30s of SIGTERM (None: still running, or killed)\n{}",
        operator.log_tail(40)
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
        "the operator's request log is missing (its `request answered` debug lines); {} lines of log",
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
