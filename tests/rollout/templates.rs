//! The built-in checks' PromQL against a real Prometheus scraping real backends: every query is
//! accepted, and each selects its own version's series, in its namespace, and the right ones
//! among them (5xx apart from 429, successes for latency and tokens).

use std::time::Duration;

use canary_operator::rollout::template::{Vars, render};
use canary_operator::rollout::{Builtin, Price, Rule};
use serde_json::json;

use crate::backend::start_backend;
use crate::common::prometheus::{self, Prometheus, ScrapeTarget};

/// Requests sent to each backend.
const REQUESTS: usize = 40;

async fn send(url: String, n: usize) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let requests = (0..n).map(|_| {
        client
            .post(&url)
            .json(&json!({"message": "one two three four five"}))
            .send()
    });
    for answer in futures::future::join_all(requests).await {
        answer.expect("the backend answers");
    }
}

/// The queries of a built-in check for one version of namespace `lab`, over the last minute.
fn queries(builtin: Builtin, version: &str) -> Vec<String> {
    let rule = builtin.rule(1, (Price::default(), Price::default()));
    let vars = Vars {
        namespace: "lab",
        release: "chat",
        version,
        model: "m",
        interval: Duration::from_secs(60),
    };
    rule.queries()
        .into_iter()
        .map(|q| render(q, &vars))
        .collect()
}

async fn values(prometheus: &Prometheus, builtin: Builtin, version: &str) -> Vec<f64> {
    let mut values = Vec::new();
    for query in queries(builtin, version) {
        let series = prometheus
            .query_vector(&query)
            .await
            .unwrap_or_else(|| panic!("Prometheus refused or failed {query}"));
        assert_eq!(series.len(), 1, "{query} yields one number: {series:?}");
        values.push(series[0].1);
    }
    values
}

#[tokio::test]
async fn builtin_queries_select_the_right_series() {
    let test = "builtin-promql";
    let Some(binary) = prometheus::binary(test) else {
        return;
    };
    let model = [("OFFLINE_OUTPUT_TOKENS", "10"), ("AZURE_MODEL_NAME", "m")];
    // Stable: quick to the first chunk, fast tokens, no faults.
    let mut env = model.to_vec();
    env.extend([
        ("OFFLINE_TTFT_MS", "40"),
        ("OFFLINE_TOKENS_PER_SECOND", "1000"),
    ]);
    let stable = start_backend(&env).await;
    // Canary: slow to the first chunk, slow tokens, every 4th request a 500.
    let mut env = model.to_vec();
    env.extend([
        ("OFFLINE_TTFT_MS", "300"),
        ("OFFLINE_TOKENS_PER_SECOND", "100"),
        ("FAULT_EVERY", "4"),
    ]);
    let canary = start_backend(&env).await;
    // The same version name in another namespace, throttling every other request: a query that
    // forgot its namespace would count these 429s.
    let mut env = model.to_vec();
    env.extend([("FAULT_EVERY", "2"), ("FAULT_STATUS", "429")]);
    let elsewhere = start_backend(&env).await;
    let prometheus = Prometheus::start(
        &binary,
        &[
            ScrapeTarget::new(stable.addr, &[("namespace", "lab"), ("version", "v1")]),
            ScrapeTarget::new(canary.addr, &[("namespace", "lab"), ("version", "v2")]),
            ScrapeTarget::new(elsewhere.addr, &[("namespace", "other"), ("version", "v2")]),
        ],
    )
    .await;
    // A first scrape before the traffic, so every count's increase is seen from its start.
    prometheus
        .wait_for_samples(
            r#"count(up{job="canary"} == 1) == 3"#,
            Duration::from_secs(30),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    futures::join!(
        send(stable.url("/chat"), REQUESTS),
        send(canary.url("/chat"), REQUESTS),
        send(elsewhere.url("/chat"), REQUESTS),
    );
    // Two scrapes after the last request.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // increase() extrapolates to the window's edges, so counts are compared as shares and
    // per-request means, which it scales alike.
    let share = |v: &[f64]| v[0] / v[1];
    let errors = values(&prometheus, Builtin::ErrorRate, "v2").await;
    assert!(
        (0.2..0.3).contains(&share(&errors)),
        "canary 5xx share: {errors:?}"
    );
    let errors = values(&prometheus, Builtin::ErrorRate, "v1").await;
    assert_eq!(
        errors[0], 0.0,
        "stable: no 5xx, and `or vector(0)` says so: {errors:?}"
    );
    let throttled = values(&prometheus, Builtin::RateLimited, "v2").await;
    assert_eq!(
        throttled[0], 0.0,
        "the other namespace's 429s are not ours: {throttled:?}"
    );
    assert!(throttled[1] > 0.0, "{throttled:?}");

    let ttft_canary = values(&prometheus, Builtin::TtftP95, "v2").await;
    let ttft_stable = values(&prometheus, Builtin::TtftP95, "v1").await;
    assert!(
        (0.16..=0.64).contains(&ttft_canary[0]),
        "canary p95 TTFT: {ttft_canary:?}"
    );
    assert!(ttft_stable[0] < 0.16, "stable p95 TTFT: {ttft_stable:?}");
    // Recorded for successes only: 30 of the canary's 40 (every 4th failed).
    assert!(
        ttft_canary[1] < ttft_stable[1],
        "{ttft_canary:?} vs {ttft_stable:?}"
    );

    let latency = values(&prometheus, Builtin::LatencyP95, "v2").await;
    assert!(
        latency[0] > ttft_canary[0],
        "latency includes generation: {latency:?}"
    );

    // 10 tokens at 100/s and at 1000/s, measured after the first chunk.
    let speed = values(&prometheus, Builtin::TokensPerSecond, "v2").await;
    assert!(
        (60.0..=110.0).contains(&speed[0]),
        "canary tokens/s: {speed:?}"
    );
    let speed = values(&prometheus, Builtin::TokensPerSecond, "v1").await;
    assert!(speed[0] > 300.0, "stable tokens/s: {speed:?}");

    let Rule::Cost { .. } = Builtin::CostPerRequest.rule(1, Default::default()) else {
        panic!("cost-per-request is a cost rule");
    };
    let tokens = values(&prometheus, Builtin::CostPerRequest, "v2").await;
    let per_request = |i: usize| tokens[i] / tokens[2];
    assert!(
        (4.5..=5.5).contains(&per_request(0)),
        "5 input words a request: {tokens:?}"
    );
    assert!(
        (9.5..=10.5).contains(&per_request(1)),
        "10 output tokens a request: {tokens:?}"
    );
}
