//! The operator as a process while the control plane fails under it, on the local control plane:
//! kube-apiserver stopped with SIGTERM and with SIGKILL, and etcd stopped, each for 20 s and then
//! started again with the same command line (`hack/cluster.sh stop|start`); the CRD (ours, and
//! the Gateway API's HTTPRoute) deleted and installed again while the operator runs; and istiod
//! killed and started again.
//!
//! What must hold: the process keeps running; `/readyz` says 503 while its watches are broken; a
//! weight edit made as soon as the control plane is ready again reaches the VirtualService within
//! 10 s of the apiserver accepting it; and once things settle, 30 s pass without a single write.
//!
//! These tests stop components of the shared test cluster (and the CRD that every namespace uses),
//! so they run one at a time, and each leaves the cluster healthy.
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use canary_operator::api::gateway_api::HTTPRoute;
use canary_operator::api::istio::{DestinationRule, Gateway, VirtualService};
use common::operator::install_crd_on;
use common::process::Process;
use common::{TestNs, WAIT, lab, setup, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams};

/// One test at a time: each takes the control plane (or the CRD) away from all of them.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const RELEASES: [&str; 3] = ["alpha", "beta", "gamma"];
const OUTAGE: Duration = Duration::from_secs(20);
/// The longest an edit made at readiness may take to reach the VirtualService.
const EDIT_LIMIT: Duration = Duration::from_secs(10);
/// Quiet time in which the operator must not write.
const QUIET: Duration = Duration::from_secs(30);
const CRD: &str = "canaryreleases.canary.dev";
/// How long after the control plane returns the quiet time may start at the earliest (see
/// [`settle`]).
const KUBELET_CATCH_UP: Duration = Duration::from_secs(40);

/// Runs `hack/cluster.sh` with `args` against the cluster the tests use ($CANARY_RUN_DIR).
async fn cluster(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/cluster.sh");
    let output = tokio::process::Command::new(script)
        .args(args)
        .output()
        .await
        .expect("run hack/cluster.sh");
    assert!(
        output.status.success(),
        "hack/cluster.sh {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether every component runs and the apiserver says it is ready.
async fn cluster_healthy() -> bool {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/cluster.sh");
    tokio::process::Command::new(script)
        .arg("status")
        .output()
        .await
        .is_ok_and(|o| o.status.success())
}

/// The lab's release three times over, and the operator for them, settled.
async fn steady(ns: &TestNs) -> Process {
    lab::create_secret(ns).await;
    for name in RELEASES {
        lab::apply(ns, name).await;
    }
    let operator = Process::start_logging(ns, &[], "info,canary_operator::reconcile=debug");
    for name in RELEASES {
        lab::wait_canary_weight(ns, name, 25, WAIT).await;
    }
    wait_for("/readyz to answer 200", WAIT, async || {
        (operator.readyz().await == 200).then_some(())
    })
    .await;
    settle(ns, &operator, Instant::now()).await;
    operator
}

/// The pods, ReplicaSets and Deployments of the namespace, as name@resourceVersion: what changes
/// when the kubelet (here kwok) or the controller-manager reports something.
async fn world(ns: &TestNs) -> Vec<String> {
    async fn versions<K>(ns: &TestNs) -> Vec<String>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let listed = Api::<K>::namespaced(ns.client.clone(), &ns.name)
            .list(&kube::api::ListParams::default())
            .await;
        listed.map_or_else(
            |e| vec![format!("error: {e}")],
            |list| {
                list.items
                    .iter()
                    .map(|o| {
                        let meta = o.meta();
                        format!(
                            "{} {}@{}",
                            K::kind(&()),
                            meta.name.as_deref().unwrap_or_default(),
                            meta.resource_version.as_deref().unwrap_or_default()
                        )
                    })
                    .collect()
            },
        )
    }
    let mut all = versions::<Pod>(ns).await;
    all.extend(versions::<ReplicaSet>(ns).await);
    all.extend(versions::<Deployment>(ns).await);
    all.sort();
    all
}

/// Waits (bounded) until things have settled: the operator has neither written nor reconciled
/// for 5 s (after an outage, caches that list again trigger reconciles for a while), the
/// namespace's pods, ReplicaSets and Deployments have not changed for 10 s, and `not_before` has
/// passed. Returns the operator's write count then.
///
/// `not_before` leaves room for the kubelet's own catching up: kwok, which plays the kubelet here,
/// retried status patches that had failed during an outage about 25 s after the apiserver
/// returned, and a pod that turns not Ready for a moment is a real change that the operator must
/// report (two status writes).
async fn settle(ns: &TestNs, operator: &Process, not_before: Instant) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (
        operator.writes().await,
        operator.reconciles().await,
        world(ns).await,
    );
    let mut operator_since = Instant::now();
    let mut world_since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = (
            operator.writes().await,
            operator.reconciles().await,
            world(ns).await,
        );
        if (now.0, now.1) != (last.0, last.1) {
            operator_since = Instant::now();
        }
        if now.2 != last.2 {
            world_since = Instant::now();
        }
        last = now;
        if operator_since.elapsed() >= Duration::from_secs(5)
            && world_since.elapsed() >= Duration::from_secs(10)
            && Instant::now() >= not_before
        {
            return last.0.expect("write count");
        }
    }
    panic!("the operator or the namespace kept changing for 120 s");
}

/// Asserts that the operator sends no write in [`QUIET`] once things have settled; on failure,
/// with what it wrote and what changed in the namespace.
async fn assert_quiet(ns: &TestNs, operator: &Process, not_before: Instant, what: &str) {
    let before = settle(ns, operator, not_before).await;
    let world_before = world(ns).await;
    let start = Instant::now();
    tokio::time::sleep(QUIET).await;
    let after = operator.writes().await.expect("write count");
    let world_after = world(ns).await;
    let changed: Vec<&String> = world_after
        .iter()
        .filter(|o| !world_before.contains(o))
        .collect();
    assert_eq!(
        after - before,
        0.0,
        "{what}: writes in the {QUIET:?} after settling; what the operator wrote:\n{}\nwhat changed in the namespace meanwhile: {changed:?}",
        operator
            .lines_since(
                start,
                &["applied", "status written", "restored", "recreated"]
            )
            .join("\n")
    );
}

/// The edit a user makes once the control plane is back: retried while the apiserver still
/// refuses it (it may, for a while, after etcd returns: its etcd client reconnects with a backoff
/// of its own), and timed from when the apiserver accepted it until the VirtualService carries it.
/// What the apiserver takes to accept writes again is not the operator's; it is printed.
async fn edit_and_time(ns: &TestNs, name: &str, weight: i32) -> Duration {
    let tried = Instant::now();
    wait_for("the weight edit to be accepted", WAIT, async || {
        lab::set_weight(ns, name, weight).await.ok()
    })
    .await;
    let start = Instant::now();
    eprintln!(
        "the apiserver accepted the edit {} ms after the first try",
        start.duration_since(tried).as_millis()
    );
    wait_for(
        &format!("VirtualService {name} at {weight}%"),
        WAIT,
        async || (lab::canary_weight(ns, name).await? == weight).then_some(()),
    )
    .await;
    start.elapsed()
}

/// Stops `component` with `signal` for [`OUTAGE`], starts it again, and checks what the
/// operator did meanwhile and after.
async fn outage(test: &str, component: &str, signal: &str, must_turn_unready: bool) {
    let _serial = SERIAL.lock().await;
    let Some(ns) = setup(test).await else {
        return;
    };
    let mut operator = steady(&ns).await;

    cluster(&["stop", component, "--signal", signal]).await;
    let down = Instant::now();
    let mut unready_after = None;
    while down.elapsed() < OUTAGE {
        if unready_after.is_none() && operator.readyz().await == 503 {
            unready_after = Some(down.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(operator.running(), "the operator exited during the outage");
    cluster(&["start", component]).await;
    let back = Instant::now();
    wait_for("the control plane to be ready again", WAIT, async || {
        cluster_healthy().await.then_some(())
    })
    .await;

    let took = edit_and_time(&ns, RELEASES[0], 60).await;
    eprintln!(
        "{test}: /readyz 503 after {unready_after:?} of the outage; edit at readiness reached the VirtualService in {} ms",
        took.as_millis()
    );
    if must_turn_unready {
        assert!(
            unready_after.is_some(),
            "/readyz stayed 200 while the {component} was down"
        );
    }
    assert!(
        took <= EDIT_LIMIT,
        "the edit took {took:?} to reach the VirtualService (limit {EDIT_LIMIT:?})"
    );
    wait_for("/readyz to answer 200 again", WAIT, async || {
        (operator.readyz().await == 200).then_some(())
    })
    .await;
    for name in &RELEASES[1..] {
        assert_eq!(lab::canary_weight(&ns, name).await, Some(25), "{name}");
    }
    assert_quiet(&ns, &operator, back + KUBELET_CATCH_UP, test).await;
    assert!(operator.running());
}

#[tokio::test]
async fn survives_an_apiserver_stopped_with_sigterm() {
    outage("recovery-apiserver-term", "kube-apiserver", "TERM", true).await;
}

#[tokio::test]
async fn survives_an_apiserver_killed() {
    outage("recovery-apiserver-kill", "kube-apiserver", "KILL", true).await;
}

/// The apiserver keeps serving its watch cache while etcd is down, so the operator's watches may
/// stay open: `/readyz` is not required to turn 503 here, only to be right afterwards.
#[tokio::test]
async fn survives_an_etcd_restart() {
    outage("recovery-etcd", "etcd", "TERM", false).await;
}

/// The documented choice (docs/operations.md, "Recovery"): stay up, say not ready and why, and carry on by
/// itself as soon as the CRD is back.
#[tokio::test]
async fn a_deleted_crd_is_reported_and_its_return_picked_up_at_once() {
    let _serial = SERIAL.lock().await;
    let Some(ns) = setup("recovery-crd").await else {
        return;
    };
    lab::create_secret(&ns).await;
    lab::apply(&ns, RELEASES[0]).await;
    let mut operator = Process::start(&ns, &[]);
    lab::wait_canary_weight(&ns, RELEASES[0], 25, WAIT).await;
    wait_for("/readyz to answer 200", WAIT, async || {
        (operator.readyz().await == 200).then_some(())
    })
    .await;

    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    let deleted = Instant::now();
    crds.delete(CRD, &DeleteParams::default())
        .await
        .expect("delete the CRD");
    let (logged_at, line) = wait_for("a log line naming the CRD", WAIT, async || {
        operator.logged(deleted, &[CRD, "not served"])
    })
    .await;
    let noticed = logged_at.duration_since(deleted);
    assert!(
        noticed <= Duration::from_secs(5),
        "the deleted CRD was logged after {noticed:?}: {line}"
    );
    assert!(line.contains("kubectl apply"), "with the fix: {line}");
    unready_without(&operator, &crds, CRD).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(operator.running(), "the operator stays up without its CRD");
    assert_eq!(operator.readyz().await, 503, "and says it is not ready");

    install_crd_on(&ns.client).await;
    let back = Instant::now();
    // The apiserver may need a moment after Established before it serves the new resource.
    wait_for(
        "the release to be accepted",
        Duration::from_secs(5),
        async || lab::try_apply(&ns, RELEASES[1]).await.ok(),
    )
    .await;
    lab::wait_canary_weight(&ns, RELEASES[1], 25, WAIT).await;
    let took = back.elapsed();
    eprintln!(
        "CRD deletion logged after {} ms; a new release reconciled {} ms after the CRD was back",
        noticed.as_millis(),
        took.as_millis()
    );
    assert!(
        took <= Duration::from_secs(5),
        "a new release took {took:?} after the CRD came back"
    );
    wait_for("/readyz to answer 200 again", WAIT, async || {
        (operator.readyz().await == 200).then_some(())
    })
    .await;
    assert!(operator.running());
    // The first release went with the CRD, and the garbage collector removes its children in no
    // particular order: until it is done, its VirtualService may name subsets whose
    // DestinationRule is gone, which istioctl analyze (when the namespace is dropped) rightly
    // reports. What is judged is what stays.
    lab::wait_gone::<VirtualService>(&ns, RELEASES[0]).await;
    lab::wait_gone::<DestinationRule>(&ns, RELEASES[0]).await;
    lab::wait_gone::<Gateway>(&ns, RELEASES[0]).await;
}

/// The Gateway API's HTTPRoute CRD deleted under an operator that runs the Gateway API provider
/// (and the release's HTTPRoute with it): `/readyz` says 503 naming the CRD, the operator stays up,
/// and once the CRD is installed again the route is put back, which istiod (its controller)
/// accepts again, without anything restarted.
#[tokio::test]
async fn a_deleted_gateway_api_crd_is_reported_and_the_route_restored_when_it_returns() {
    let _serial = SERIAL.lock().await;
    let Some(ns) = setup("recovery-gateway-api-crd").await else {
        return;
    };
    let name = RELEASES[0];
    lab::create_secret(&ns).await;
    common::gateway_api::platform_gateway(&ns).await;
    let release = common::gateway_api::routed_by_gateway_api(
        &ns,
        lab::release(&ns, name),
        common::gateway_api::PLATFORM,
    );
    lab::apply_release(&ns, release).await.expect("apply");
    let mut operator = Process::start(&ns, &["--traffic-providers", "istio,gatewayAPI"]);
    lab::wait_ready(&ns, name).await;
    wait_for("/readyz to answer 200", WAIT, async || {
        (operator.readyz().await == 200).then_some(())
    })
    .await;

    const ROUTES_CRD: &str = "httproutes.gateway.networking.k8s.io";
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    crds.delete(ROUTES_CRD, &DeleteParams::default())
        .await
        .expect("delete the HTTPRoute CRD");
    unready_without(&operator, &crds, ROUTES_CRD).await;
    assert!(operator.running(), "the operator stays up without the CRD");

    let crd = common::gateway_api::crd(ROUTES_CRD);
    crds.patch(
        ROUTES_CRD,
        &kube::api::PatchParams::apply("canary-cluster-sh").force(),
        &kube::api::Patch::Apply(&crd),
    )
    .await
    .expect("install the HTTPRoute CRD again");
    let back = Instant::now();
    wait_for("/readyz to answer 200 again", WAIT, async || {
        (operator.readyz().await == 200).then_some(())
    })
    .await;
    let route = common::gateway_api::wait_route_weights(
        &ns,
        name,
        &[(&format!("{name}-v1"), 75), (&format!("{name}-v2"), 25)],
    )
    .await;
    eprintln!(
        "the HTTPRoute was back {} ms after its CRD",
        back.elapsed().as_millis()
    );
    // istiod took the CRD's return too: it accepts the new route, and the release says so.
    wait_for("istiod to accept the route again", WAIT, async || {
        let route = lab::api::<HTTPRoute>(&ns).get(name).await.ok()?;
        common::gateway_api::parent_conditions(&route)
            .iter()
            .any(|(_, t, status, _)| t == "Accepted" && status == "True")
            .then_some(())
    })
    .await;
    lab::wait_ready(&ns, name).await;
    assert!(route.metadata.uid.is_some());
    assert!(operator.running());
}

/// Waits until `/readyz` answers 503 naming the deleted CRD `name`, and the CRD is gone.
async fn unready_without(operator: &Process, crds: &Api<CustomResourceDefinition>, name: &str) {
    let (status, body) = wait_for("/readyz to answer 503", WAIT, async || {
        operator
            .get("/readyz")
            .await
            .filter(|(status, _)| *status == 503)
    })
    .await;
    assert!(body.contains(name), "{status}: {body}");
    wait_for("the CRD to be gone", WAIT, async || {
        crds.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

/// istiod is part of the control plane the tests stand on: killed while a weight is edited, and
/// started again (`hack/cluster.sh stop|start istiod`), the gateway's route comes back carrying
/// the edit, through the same `xdsroutes` connection's retries, as a gateway's proxy reconnects.
#[tokio::test]
async fn after_an_istiod_restart_the_gateway_route_carries_the_edit_made_meanwhile() {
    let _serial = SERIAL.lock().await;
    let Some(ns) = setup("recovery-istiod").await else {
        return;
    };
    let mut routes = match common::istio::RouteWatch::start() {
        Ok(routes) => routes,
        Err(why) => {
            return common::host::skip(
                "recovery-istiod",
                &why,
                "run `make cluster-up` (it starts istiod)",
            );
        }
    };
    let name = RELEASES[0];
    let (host, fqdn) = (ns.host(name), ns.fqdn(name));
    lab::create_secret(&ns).await;
    lab::apply(&ns, name).await;
    let _operator = Process::start(&ns, &[]);
    lab::wait_canary_weight(&ns, name, 25, WAIT).await;
    routes
        .wait_split(&host, &fqdn, &[("v1", 75), ("v2", 25)], WAIT)
        .await;

    cluster(&["stop", "istiod", "--signal", "KILL"]).await;
    // The operator does its part with istiod away: the VirtualService carries the edit.
    lab::set_weight(&ns, name, 40)
        .await
        .expect("set the weight");
    lab::wait_weights(&ns, name, &[("v1", 60), ("v2", 40)]).await;
    cluster(&["start", "istiod"]).await;
    routes
        .wait_split(&host, &fqdn, &[("v1", 60), ("v2", 40)], WAIT)
        .await;
    assert!(cluster_healthy().await, "the cluster is left healthy");
}
