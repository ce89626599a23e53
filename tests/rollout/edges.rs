//! The rollout engine at its edges, on the real control plane: a canary that gets no pod (a
//! ResourceQuota leaves it no room), a new revision mid-rollout whose pods take 3 s to start
//! (kwok's stage for `rollout-` namespaces, `hack/build-tools.sh`), a request and status times
//! from clocks that are wrong, and a Prometheus stand-in that answers 20 MB.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use canary_operator::api::CanaryRelease;
use canary_operator::api::TrafficProvider;
use canary_operator::rollout::Verb;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

use crate::common::lab::{api, wait_canary_weight, wait_event_noting};
use crate::common::operator::start_operator;
use crate::common::process::Process;
use crate::common::{WAIT, setup, wait_for};
use crate::stage::{NAME, Seen, WeightLog, apply, ask, automatic, record, rollout, wait_phase};

const WITHIN: Duration = Duration::from_secs(90);

/// The time as the plugin writes request stamps.
fn stamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A ResourceQuota leaves the canary no room (its pods request CPU; the stable's request nothing
/// and are BestEffort, which the quota's scope leaves out): the status names the quota long before
/// the progress deadline; past it the rollout pauses as CanaryNotReady with the Deployment's words;
/// once the quota is raised it goes on by itself.
#[tokio::test]
async fn a_canary_without_room_says_why_pauses_at_the_deadline_and_goes_on_with_room() {
    let Some(ns) = setup("rollout-quota").await else {
        return;
    };
    let quotas = api::<ResourceQuota>(&ns);
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "no-room"},
        "spec": {"hard": {"pods": "0"}, "scopes": ["NotBestEffort"]},
    }))
    .expect("a quota");
    quotas
        .create(&PostParams::default(), &quota)
        .await
        .expect("create the quota");
    // The apiserver admits against a quota only once the controller-manager has counted its use.
    wait_for("the quota's usage to be counted", WAIT, async || {
        quotas.get("no-room").await.ok()?.status?.used.map(|_| ())
    })
    .await;
    let _operator = start_operator(&ns).await;
    let mut release = automatic(&ns, &[(10, "2s", false), (100, "2s", false)], None);
    release["spec"]["strategy"]["progressDeadline"] = json!("15s");
    release["spec"]["canary"]["resources"] = json!({"requests": {"cpu": "100m"}});
    let applied = Instant::now();
    apply(&ns, release).await;

    let waiting = wait_for(
        "the rollout to name the quota while it waits",
        Duration::from_secs(14),
        async || {
            let r = rollout(&ns).await?;
            (r.phase == "Progressing" && r.message.contains("exceeded quota")).then_some(r)
        },
    )
    .await;
    eprintln!(
        "the quota named {} ms after the release was applied: {}",
        applied.elapsed().as_millis(),
        waiting.message
    );
    let paused = wait_phase(&ns, "Paused", Some("CanaryNotReady"), WITHIN).await;
    let took = applied.elapsed();
    eprintln!(
        "paused as CanaryNotReady after {took:?} (now {}, step start {:?}): {}",
        Timestamp::now(),
        paused.step_start_time,
        paused.message
    );
    // The deadline counts from the step's start as status keeps it, to the second.
    let started = paused.step_start_time.as_ref().expect("a step start").0;
    let waited = Timestamp::now().duration_since(started);
    assert!(
        waited >= SignedDuration::from_secs(15),
        "paused {waited} after the step's start, before the deadline"
    );
    assert_eq!(paused.weight, 0, "the canary got no traffic");
    for said in ["progress deadline (15s)", "0/1 ready", "exceeded quota"] {
        assert!(paused.message.contains(said), "{said}: {}", paused.message);
    }
    let event = wait_event_noting(&ns, "Paused", "CanaryNotReady").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let release = api::<CanaryRelease>(&ns)
        .get(NAME)
        .await
        .expect("the release");
    let conditions = release.status.map(|s| s.conditions).unwrap_or_default();
    let progressing = conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .expect("a Progressing condition");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("False", "RolloutPaused"),
        "{}",
        progressing.message
    );
    assert!(progressing.message.starts_with("CanaryNotReady: "));

    quotas
        .patch(
            "no-room",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"pods": "5"}}})),
        )
        .await
        .expect("raise the quota");
    let raised = Instant::now();
    wait_canary_weight(&ns, NAME, 10, WITHIN).await;
    eprintln!(
        "10% to the canary {:?} after the quota was raised",
        raised.elapsed()
    );
    wait_event_noting(&ns, "Resumed", "replicas are ready").await;
}

fn copy<T: Clone>(seen: &Seen<T>) -> Vec<(u64, T)> {
    seen.lock().map(|s| s.clone()).unwrap_or_default()
}

/// With the canary at 50 % awaiting approval, its model is edited: the route takes the canary to
/// 0 % before any other weight for the new revision, and step 1's 10 % is written only after a
/// pod of the new template is Ready (kwok makes pods here Ready 3 s after they are scheduled).
#[tokio::test]
async fn a_new_revision_starts_from_zero_and_gets_weight_once_its_pods_are_ready() {
    let Some(ns) = setup("rollout-revision").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    let steps = [(10, "1s", false), (50, "1s", true), (100, "1s", false)];
    apply(&ns, automatic(&ns, &steps, None)).await;
    let held = wait_phase(&ns, "Paused", Some("AwaitingApproval"), WITHIN).await;
    assert_eq!(held.weight, 50);

    let pods = api::<Pod>(&ns);
    let old: Vec<String> = pods
        .list(&kube::api::ListParams::default().labels("version=v2"))
        .await
        .expect("list the canary's pods")
        .items
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect();
    let routes = WeightLog::start(&ns, TrafficProvider::Istio);
    let (ready, pod_watch) = record(
        pods.clone(),
        watcher::Config::default().labels("version=v2"),
        move |pod: &Pod| {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let is_ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            (is_ready && !old.contains(&name)).then_some(name)
        },
    );
    wait_for("the watches to list", Duration::from_secs(10), async || {
        (!routes.weights().is_empty()).then_some(())
    })
    .await;

    let edited = Instant::now();
    api::<CanaryRelease>(&ns)
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"canary": {"model": "gpt-4o-mini"}}})),
        )
        .await
        .expect("edit the canary's model");
    wait_canary_weight(&ns, NAME, 10, WITHIN).await;
    let took = edited.elapsed();
    pod_watch.abort();
    let (routes, ready) = (routes.revisions(), copy(&ready));
    eprintln!(
        "after the edit ({took:?} to 10%): the canary's weight at each resourceVersion {routes:?}; new pods Ready {ready:?}"
    );
    let after_edit: Vec<i32> = routes
        .iter()
        .map(|(_, w)| *w)
        .skip_while(|w| *w == 50)
        .collect();
    assert_eq!(
        after_edit.first(),
        Some(&0),
        "the canary's first weight after the edit: {routes:?}"
    );
    let first_ten = routes
        .iter()
        .find(|(_, w)| *w == 10)
        .map(|(rv, _)| *rv)
        .expect("10% written");
    let first_ready = ready.first().map(|(rv, _)| *rv).expect("a new pod Ready");
    assert!(
        first_ready < first_ten,
        "10% (resourceVersion {first_ten}) before a new pod was Ready ({first_ready})"
    );
    assert!(
        took >= Duration::from_secs(3),
        "pods take 3 s to start here, yet 10% came after {took:?}"
    );
    let now = rollout(&ns).await.expect("rollout status");
    assert_eq!((now.phase.as_str(), now.step), ("Progressing", 1));
}

/// A request stamped a day ahead (a machine whose clock is off) is refused and not recorded, and
/// an honest `kubectl canary abort` right after it works; a step start an hour ahead in status (a
/// standby whose clock runs fast) counts from now, with an Event, and the step ends on time.
#[tokio::test]
async fn times_from_wrong_clocks_lock_nothing() {
    let Some(ns) = setup("rollout-clocks").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    let steps = [(10, "20s", false), (100, "1s", false)];
    apply(&ns, automatic(&ns, &steps, None)).await;
    wait_canary_weight(&ns, NAME, 10, WITHIN).await;

    let releases = api::<CanaryRelease>(&ns);
    let ahead = format!(
        "pause@{}",
        stamp(Timestamp::now() + SignedDuration::from_hours(25))
    );
    releases
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"canary.dev/request": ahead}}})),
        )
        .await
        .expect("annotate");
    let refused = wait_event_noting(&ns, "RequestIgnored", "ahead of the operator's clock").await;
    let note = refused.note.unwrap_or_default();
    assert!(
        note.contains("stamped 1d1h ahead") && note.contains("5m"),
        "{note}"
    );
    let status = rollout(&ns).await.expect("rollout status");
    assert_eq!(status.refused_request.as_deref(), Some(ahead.as_str()));
    assert_ne!(status.last_request.as_deref(), Some(ahead.as_str()));
    assert_eq!(status.phase, "Progressing", "not paused");
    ask(&ns, Verb::Abort).await;
    wait_phase(&ns, "Aborted", None, WITHIN).await;

    ask(&ns, Verb::Retry).await;
    wait_canary_weight(&ns, NAME, 10, WITHIN).await;
    let skewed = Timestamp::now() + SignedDuration::from_hours(1);
    let skewed = skewed.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    releases
        .patch_status(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"rollout": {
                "stepStartTime": skewed,
                "weightAppliedTime": skewed,
            }}})),
        )
        .await
        .expect("write the skewed times");
    let written = Instant::now();
    let event = wait_event_noting(&ns, "ClockSkew", "stepStartTime by").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    wait_canary_weight(&ns, NAME, 100, Duration::from_secs(60)).await;
    let took = written.elapsed();
    eprintln!("the 20 s step ended {took:?} after its start was written an hour ahead");
    assert!(
        took <= Duration::from_secs(30),
        "the 20 s step ended {took:?} after the skewed write"
    );
}

/// A Prometheus stand-in on 127.0.0.1 that answers every query with `size` bytes of valid JSON
/// (a vector of that many series' worth), streamed without a length, as a query that selects far
/// too much would be answered. Returns its base URL, how many answers it began, and its task.
async fn oversized_prometheus(
    size: usize,
) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let series =
        r#"{"metric":{"pod":"chat-v2-0123456789-abcde","version":"v2"},"value":[1,"0.01"]},"#;
    let app = axum::Router::new().route(
        "/api/v1/query",
        axum::routing::get(move || {
            count.fetch_add(1, Ordering::Relaxed);
            let chunks = size / (64 * 1024);
            let chunk = series.repeat(64 * 1024 / series.len());
            let head = r#"{"status":"success","data":{"resultType":"vector","result":["#;
            let body = futures::stream::iter(
                std::iter::once(head.to_owned())
                    .chain(std::iter::repeat_n(chunk, chunks))
                    .chain(std::iter::once(format!(
                        "{}]}}}}",
                        &series[..series.len() - 1]
                    )))
                    .map(Ok::<_, std::convert::Infallible>),
            );
            async move { axum::body::Body::from_stream(body) }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, answered, task)
}

/// Answers of 20 MB are errors that name their size, read no further than the limit: the
/// operator's peak memory grows by far less than one answer.
#[tokio::test]
async fn an_oversized_answer_is_an_error_that_names_its_size() {
    let Some(ns) = setup("rollout-oversized").await else {
        return;
    };
    let (url, answered, server) = oversized_prometheus(20 * 1024 * 1024).await;
    let mut operator = Process::start(&ns, &["--min-analysis-interval", "1s"]);
    operator.wait_ready(WAIT).await;
    let before = operator.memory().expect("the operator's memory");
    let analysis: Value = json!({
        "prometheus": {"address": url, "timeout": "1s"},
        "interval": "1s",
        "warmup": "0s",
        "errorLimit": 3,
        "checks": [{"name": "error-rate", "query": "sum(rate(x[1m]))", "max": 0.05}],
    });
    apply(
        &ns,
        automatic(
            &ns,
            &[(10, "30s", false), (100, "1s", false)],
            Some(analysis),
        ),
    )
    .await;
    let paused = wait_phase(&ns, "Paused", Some("MetricsUnavailable"), WITHIN).await;
    let check = paused.checks.first().expect("the check's state");
    assert_eq!(check.verdict, "Error");
    assert!(
        check.message.contains("larger than 1.00 MiB"),
        "{}",
        check.message
    );
    // More answers while paused (a blind rollout keeps measuring): they cost nothing more.
    let at_pause = operator.memory().expect("the operator's memory");
    let served = answered.load(Ordering::Relaxed);
    wait_for(
        "more oversized answers",
        Duration::from_secs(30),
        async || (answered.load(Ordering::Relaxed) >= served + 5).then_some(()),
    )
    .await;
    let after = operator.memory().expect("the operator's memory");
    server.abort();
    let (whole, more) = (
        after.peak_kib.saturating_sub(before.peak_kib),
        after.peak_kib.saturating_sub(at_pause.peak_kib),
    );
    eprintln!(
        "{} answers of 20 MiB: peak RSS {} KiB before the release, {} KiB at the pause, {} KiB after {} more (+{whole} KiB in all, +{more} KiB for the later answers); {}",
        answered.load(Ordering::Relaxed),
        before.peak_kib,
        at_pause.peak_kib,
        after.peak_kib,
        answered.load(Ordering::Relaxed) - served,
        check.message
    );
    assert!(
        whole < 16 * 1024,
        "peak RSS grew by {whole} KiB with a rolling release answered 20 MiB"
    );
    assert!(
        more < 2 * 1024,
        "peak RSS grew by {more} KiB over more answers of 20 MiB"
    );
}
