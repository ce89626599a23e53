//! A model swap judged by the built-in checks, against real parts: two chat backend processes
//! answering as models would (time to first chunk, token rate, token counts), Prometheus scraping
//! them, nginx standing in for the ingress gateway in the split the VirtualService carries, and a
//! load generator. Each fault is the canary's real process told to misbehave: 5xx, 429, a slow
//! first chunk, too few requests to tell, no metrics at all.

use std::time::Duration;

use canary_operator::api::TrafficProvider;
use canary_operator::api::{CheckStatus, RolloutStatus};
use canary_operator::rollout::Verb;
use serde_json::{Value, json};

use crate::common::TestNs;
use crate::common::lab::{events, wait_canary_weight, wait_event_noting};
use crate::common::operator::{Operator, start_operator};
use crate::common::setup;
use crate::stage::{NAME, Stage, Versions, WeightLog, apply, ask, automatic, rollout, wait_phase};

const WITHIN: Duration = Duration::from_secs(120);

/// Requests a second through the gateway stand-in: enough that a 10 s window at 50 % holds
/// hundreds of requests per version, so the rates' exact intervals can pass or fail.
const RPS: u32 = 150;

/// How both versions answer unless a test says otherwise: 200 ms to the first chunk, then 20
/// tokens at 400 a second, like a hosted model (slow enough that scheduling noise on a busy
/// 2-core machine does not move a percentile).
const MODEL: [(&str, &str); 3] = [
    ("OFFLINE_TTFT_MS", "200"),
    ("OFFLINE_TOKENS_PER_SECOND", "400"),
    ("OFFLINE_OUTPUT_TOKENS", "20"),
];

/// Half the traffic for a step of two measurements (the first one shows in status at 50 %, the
/// second ends the step), then all of it.
const STEPS: [(i32, &str, bool); 2] = [(50, "15s", false), (100, "1s", false)];

/// Every built-in check, defaults untouched except the values' sample floor (a 10 s window of a
/// test holds fewer requests than a minute of production traffic).
fn builtin_analysis(prometheus: &str) -> Value {
    let sampled = |name: &str| json!({"builtin": name, "minSamples": 50});
    json!({
        "prometheus": {"address": prometheus, "timeout": "2s"},
        "interval": "10s",
        "warmup": "10s",
        "failureLimit": 1,
        "inconclusiveLimit": 3,
        "errorLimit": 2,
        "checks": [
            {"builtin": "error-rate"},
            {"builtin": "rate-limited"},
            sampled("ttft-p95"),
            sampled("latency-p95"),
            sampled("tokens-per-second"),
            sampled("cost-per-request"),
        ],
    })
}

/// The lab's release in automatic mode with the built-in checks and each version's prices
/// (per million input and output tokens).
fn llm_release(
    ns: &TestNs,
    steps: &[(i32, &str, bool)],
    prometheus: &str,
    stable_price: (f64, f64),
    canary_price: (f64, f64),
) -> Value {
    let mut release = automatic(ns, steps, Some(builtin_analysis(prometheus)));
    let price = |(input, output): (f64, f64)| json!({"inputPerMillionTokens": input, "outputPerMillionTokens": output});
    release["spec"]["stable"]["pricing"] = price(stable_price);
    release["spec"]["canary"]["pricing"] = price(canary_price);
    release
}

/// gpt-4.1's and gpt-4o's list prices.
const GPT_41: (f64, f64) = (2.0, 8.0);
const GPT_4O: (f64, f64) = (2.5, 10.0);

fn check<'a>(rollout: &'a RolloutStatus, name: &str) -> &'a CheckStatus {
    rollout
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} in {:#?}", rollout.checks))
}

/// Waits (bounded) for a rollout status that satisfies `wanted`, panicking with the last one.
async fn wait_rollout(
    ns: &TestNs,
    what: &str,
    wanted: impl Fn(&RolloutStatus) -> bool,
) -> RolloutStatus {
    let mut last = None;
    let found = tokio::time::timeout(WITHIN, async {
        loop {
            if let Some(r) = rollout(ns).await {
                if wanted(&r) {
                    return r;
                }
                last = Some(r);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{what} not seen within {WITHIN:?}; last: {last:#?}"))
}

/// One test's namespace, its real parts with the load running, and the operator.
struct Swap {
    ns: TestNs,
    stage: Stage,
    _operator: Operator,
}

impl Swap {
    /// Both versions answer as `MODEL` says, the canary with `canary_env` on top; `None` when the
    /// test is skipped (no cluster, nginx or Prometheus outside CI).
    async fn start(
        test: &str,
        canary_env: &[(&str, &str)],
        scraped: bool,
        rps: u32,
    ) -> Option<Swap> {
        let ns = setup(test).await?;
        let mut env = MODEL.to_vec();
        env.extend_from_slice(canary_env);
        let versions = Versions {
            stable_env: &MODEL,
            canary_env: &env,
            canary_scraped: scraped,
            provider: TrafficProvider::Istio,
        };
        let mut stage = Stage::start_with(&ns, test, versions).await?;
        stage.load(rps);
        let _operator = start_operator(&ns).await;
        Some(Swap {
            ns,
            stage,
            _operator,
        })
    }

    /// Applies the lab's release, gpt-4.1 at its price against a canary at `canary_price`.
    async fn release(&self, steps: &[(i32, &str, bool)], canary_price: (f64, f64)) {
        let url = self.stage.prometheus.url();
        apply(
            &self.ns,
            llm_release(&self.ns, steps, &url, GPT_41, canary_price),
        )
        .await;
    }
}

/// gpt-4.1 → gpt-4o with both answering alike: at 50 % every built-in check compares the
/// canary with the stable over the same window and passes; the canary is promoted.
#[tokio::test]
async fn a_healthy_model_swap_passes_every_builtin_check_and_is_promoted() {
    let Some(swap) = Swap::start("llm-healthy", &[], true, RPS).await else {
        return;
    };
    let ns = &swap.ns;
    let log = WeightLog::start(ns, TrafficProvider::Istio);
    swap.release(&STEPS, GPT_4O).await;
    let measured = wait_rollout(ns, "a passing measurement at 50%", |r| {
        r.weight == 50 && r.checks.len() == 6 && r.last_verdict.as_deref() == Some("Pass")
    })
    .await;
    for c in &measured.checks {
        assert_eq!(c.verdict, "Pass", "{c:#?}");
        assert!(c.stable_value.is_some(), "compared with the stable: {c:#?}");
        let (canary, stable) = (
            c.sample_size.unwrap_or(0),
            c.stable_sample_size.unwrap_or(0),
        );
        assert!(
            canary >= 50 && stable >= 50,
            "sample sizes in status: {c:#?}"
        );
        assert!(!c.bound.is_empty(), "{c:#?}");
    }
    let errors = check(&measured, "error-rate");
    assert_eq!(errors.value, Some(0.0), "{errors:#?}");
    assert_eq!(errors.bound, "≤ 2% and ≤ stable + 1 point");
    assert!(
        errors.message.contains("within the bound"),
        "{}",
        errors.message
    );
    // Same model behaviour on both sides: the first chunk's p95 is the stable's within 30 %.
    let ttft = check(&measured, "ttft-p95");
    let ratio = ttft.value.unwrap_or(0.0) / ttft.stable_value.unwrap_or(1.0);
    assert!((0.77..1.3).contains(&ratio), "{ttft:#?}");
    // gpt-4o's prices are 1.25 × gpt-4.1's for the same tokens.
    let cost = check(&measured, "cost-per-request");
    let ratio = cost.value.unwrap_or(0.0) / cost.stable_value.unwrap_or(1.0);
    assert!((1.2..1.3).contains(&ratio), "{cost:#?}");
    assert_eq!(cost.action, "Warn");
    wait_phase(ns, "Promoted", None, WITHIN).await;
    wait_canary_weight(ns, NAME, 100, WITHIN).await;
    assert_eq!(log.since_ready(), [50, 100]);
}

/// A canary failing 30 % of its requests with 500 is rolled back by error-rate, whose message
/// gives both versions' counts.
#[tokio::test]
async fn a_canary_with_30_percent_5xx_is_rolled_back() {
    let Some(swap) = Swap::start("llm-5xx", &[("FAULT_PERCENT", "30")], true, RPS).await else {
        return;
    };
    let ns = &swap.ns;
    swap.release(&STEPS, GPT_4O).await;
    let rolled_back = wait_phase(ns, "RolledBack", None, WITHIN).await;
    wait_canary_weight(ns, NAME, 0, WITHIN).await;
    let errors = check(&rolled_back, "error-rate");
    assert_eq!(errors.verdict, "Fail", "{errors:#?}");
    assert!(
        errors.value.is_some_and(|v| (0.2..0.4).contains(&v)),
        "{errors:#?}"
    );
    assert!(
        errors.message.contains("is above the bound"),
        "{}",
        errors.message
    );
    assert!(
        errors.message.contains("requests; 95% interval"),
        "{}",
        errors.message
    );
    assert!(errors.message.contains("stable 0%"), "{}", errors.message);
    wait_event_noting(ns, "RolledBack", "error-rate").await;
}

/// Throttling is not a broken build: a canary answering half its requests with 429 once it has
/// 50 % steps back to 25 % and pauses as RateLimited, its error rate (429 left out) passing.
/// Told to stop throttling and resumed, it goes on.
#[tokio::test]
async fn a_throttled_canary_steps_back_and_pauses_as_rate_limited() {
    let Some(swap) = Swap::start("llm-429", &[], true, RPS).await else {
        return;
    };
    let ns = &swap.ns;
    swap.release(
        &[(25, "10s", false), (50, "20s", false), (100, "1s", false)],
        GPT_4O,
    )
    .await;
    wait_canary_weight(ns, NAME, 50, WITHIN).await;
    swap.stage
        .canary_fault(json!({"every": 2, "status": 429}))
        .await;
    let paused = wait_phase(ns, "Paused", Some("RateLimited"), WITHIN).await;
    wait_canary_weight(ns, NAME, 25, WITHIN).await;
    assert_eq!((paused.step, paused.weight), (1, 25), "{paused:#?}");
    assert_eq!(paused.failed_revision, None, "not rolled back");
    let throttled = check(&paused, "rate-limited");
    assert_eq!(
        (throttled.verdict.as_str(), throttled.action.as_str()),
        ("Fail", "StepBack")
    );
    assert!(
        throttled.value.is_some_and(|v| (0.4..0.6).contains(&v)),
        "{throttled:#?}"
    );
    assert_ne!(
        check(&paused, "error-rate").verdict,
        "Fail",
        "429s are not errors"
    );
    assert!(
        paused
            .message
            .contains("stepped back from step 2 (50%) to 25%"),
        "{}",
        paused.message
    );
    wait_event_noting(ns, "Paused", "RateLimited").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held = rollout(ns).await.expect("rollout status");
    assert_eq!(
        (held.phase.as_str(), held.weight),
        ("Paused", 25),
        "held until resumed"
    );
    swap.stage.canary_fault(json!({})).await;
    ask(ns, Verb::Resume).await;
    wait_canary_weight(ns, NAME, 50, WITHIN).await;
    let resumed = rollout(ns).await.expect("rollout status");
    assert_ne!(resumed.phase, "RolledBack");
}

/// 1.5 s more to the first chunk on the canary: ttft-p95 rolls it back, its message giving the
/// canary's and the stable's values.
#[tokio::test]
async fn a_canary_with_a_slow_first_token_is_rolled_back() {
    let Some(swap) = Swap::start("llm-ttft", &[("FAULT_TTFT_MS", "1500")], true, RPS).await else {
        return;
    };
    let ns = &swap.ns;
    swap.release(&STEPS, GPT_4O).await;
    let rolled_back = wait_phase(ns, "RolledBack", None, WITHIN).await;
    let ttft = check(&rolled_back, "ttft-p95");
    assert_eq!(ttft.verdict, "Fail", "{ttft:#?}");
    assert!(ttft.value.is_some_and(|v| v > 1.5), "{ttft:#?}");
    assert!(ttft.stable_value.is_some_and(|v| v < 0.5), "{ttft:#?}");
    for words in ["canary ", "s over ", " vs stable ", "above maxRatio 1.3"] {
        assert!(
            ttft.message.contains(words),
            "{words:?} in {}",
            ttft.message
        );
    }
    wait_event_noting(ns, "RolledBack", "ttft-p95").await;
}

/// One error in the canary's first ten requests is not evidence either way: error-rate is
/// inconclusive (its interval straddles 2 %), and the canary is not rolled back; with so few
/// requests it pauses for want of data instead.
#[tokio::test]
async fn one_error_in_ten_requests_is_inconclusive_not_a_rollback() {
    // 1.5 requests a second for the canary at 50 %: about fifteen in a window. Not a whole
    // number of failures per window: with the fault every 10th request, a failure at a fixed
    // place in every window could fall between two scrapes at its edge each time, and
    // increase() would never see it.
    let Some(swap) = Swap::start("llm-few", &[("FAULT_EVERY", "10")], true, 3).await else {
        return;
    };
    let ns = &swap.ns;
    swap.release(&STEPS, GPT_4O).await;
    let seen = wait_rollout(ns, "a measured error among a few requests", |r| {
        r.checks
            .iter()
            .any(|c| c.name == "error-rate" && c.value.is_some_and(|v| v > 0.0))
    })
    .await;
    let errors = check(&seen, "error-rate");
    assert_eq!(errors.verdict, "Inconclusive", "{errors:#?}");
    assert!(
        errors.sample_size.is_some_and(|n| (5..=20).contains(&n)),
        "{errors:#?}"
    );
    assert!(
        errors.message.contains("more requests are needed"),
        "{}",
        errors.message
    );
    assert_eq!(errors.failures, 0, "{errors:#?}");
    assert_ne!(seen.phase, "RolledBack");
    let later = wait_phase(ns, "Paused", Some("NoData"), WITHIN).await;
    assert_eq!((later.weight, later.failed_revision.as_deref()), (50, None));
    assert_eq!(check(&later, "error-rate").failures, 0);
    // The pause names every inconclusive check, often more than an Event's 1 kB note holds: the
    // Event is recorded all the same (its note cut short; the status keeps the whole message).
    wait_event_noting(ns, "Paused", "NoData").await;
}

/// A canary as good as the stable at half the price is promoted; the promotion's Event carries
/// the cost check's note, which did not decide.
#[tokio::test]
async fn a_cheaper_equal_canary_is_promoted_with_a_cost_note() {
    let Some(swap) = Swap::start("llm-cheaper", &[], true, RPS).await else {
        return;
    };
    let ns = &swap.ns;
    swap.release(&STEPS, (GPT_41.0 / 2.0, GPT_41.1 / 2.0)).await;
    let measured = wait_rollout(ns, "the cost compared at 50%", |r| {
        r.weight == 50
            && r.checks
                .iter()
                .any(|c| c.name == "cost-per-request" && c.verdict == "Pass")
    })
    .await;
    let cost = check(&measured, "cost-per-request");
    let ratio = cost.value.unwrap_or(0.0) / cost.stable_value.unwrap_or(1.0);
    assert!((0.45..0.55).contains(&ratio), "{cost:#?}");
    assert!(cost.message.contains("per 1k requests"), "{}", cost.message);
    wait_phase(ns, "Promoted", None, WITHIN).await;
    // The news of the promotion quotes the last comparison with the stable (at 100 % the stable
    // is not measured any more).
    wait_event_noting(ns, "Promoted", "cost-per-request: canary").await;
    wait_event_noting(ns, "Promoted", "× stable)").await;
    let promoted = events(ns)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Promoted"))
        .count();
    assert_eq!(promoted, 1);
}

/// A canary that exposes no metrics cannot be judged: every check is inconclusive and the rollout
/// pauses as NoData with the weight held, never promoted on silence.
#[tokio::test]
async fn a_canary_without_metrics_pauses_for_no_data() {
    let Some(swap) = Swap::start("llm-silent", &[], false, RPS).await else {
        return;
    };
    let ns = &swap.ns;
    swap.release(&STEPS, GPT_4O).await;
    let paused = wait_phase(ns, "Paused", Some("NoData"), WITHIN).await;
    assert_eq!(paused.weight, 50);
    for c in &paused.checks {
        assert_eq!(c.verdict, "Inconclusive", "{c:#?}");
        assert!(c.message.contains("no data"), "{c:#?}");
    }
    wait_event_noting(ns, "Paused", "NoData").await;
}
