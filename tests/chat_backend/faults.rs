//! The faults an offline backend injects: by period or share, with a status, a delay or a late
//! first chunk, from the environment or `PUT /fault`; the settings it refuses; and an online
//! backend, which has none.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::backend::{self, backend_refuses, start_backend};
use crate::client::{KEY, chat_with_headers, client};
use crate::exposition::{
    DURATION, FIRST_CHUNK, Sample, answered, failures, histogram, scrape, successes, tokens, total,
    value,
};
use crate::fake_azure::{fake_azure, online_backend, streamed};

pub async fn fault_every_3_fails_exactly_requests_3_6_9() {
    let b = start_backend(&[("AZURE_MODEL_NAME", "gpt-4.1"), ("FAULT_EVERY", "3")]).await;
    let mut failed = Vec::new();
    for n in 1..=10 {
        let (status, retry_after, body) = chat_with_headers(&b, "hello").await;
        match status {
            200 => assert_eq!(body["model"], "gpt-4.1", "request {n}: {body}"),
            500 => {
                let error = body["error"].as_str().unwrap_or_default();
                assert!(error.contains("injected fault"), "request {n}: {body}");
                assert_eq!(retry_after, None, "a 500 says nothing of retrying");
                failed.push(n);
            }
            other => panic!("request {n}: {other} {body}"),
        }
    }
    assert_eq!(failed, [3, 6, 9]);
    let samples = scrape(&b).await;
    assert_eq!(failures(&samples, "gpt-4.1", "500"), 3.0);
    assert_eq!(successes(&samples, "gpt-4.1", "gpt-4.1"), 7.0);
    // Tokens and first chunks are counted for the answered requests only.
    assert_eq!(tokens(&samples, "gpt-4.1", "gpt-4.1", "input"), (7.0, 7.0));
    assert_eq!(total(&samples, &format!("{FIRST_CHUNK}_count")), 7.0);
}

pub async fn fault_percent_30_fails_exactly_3_in_10_spread_evenly() {
    let b = start_backend(&[
        ("AZURE_MODEL_NAME", "gpt-4.1"),
        ("FAULT_PERCENT", "30"),
        ("FAULT_STATUS", "503"),
    ])
    .await;
    let mut failed = Vec::new();
    for n in 1..=10 {
        let (status, retry_after, body) = chat_with_headers(&b, "hello").await;
        match status {
            200 => {}
            503 => {
                assert_eq!(retry_after.as_deref(), Some("1"), "request {n}");
                failed.push(n);
            }
            other => panic!("request {n}: {other} {body}"),
        }
    }
    assert_eq!(failed, [4, 7, 10]);
    let samples = scrape(&b).await;
    assert_eq!(failures(&samples, "gpt-4.1", "503"), 3.0);
    assert_eq!(successes(&samples, "gpt-4.1", "gpt-4.1"), 7.0);
    assert_eq!(total(&samples, &format!("{FIRST_CHUNK}_count")), 7.0);
    assert_eq!(
        fault_settings(&b).await,
        json!({"every": null, "percent": 30, "status": 503, "delayMs": 0, "ttftMs": 0})
    );
}

pub async fn fault_ttft_raises_the_time_to_first_chunk() {
    let b = start_backend(&[("AZURE_MODEL_NAME", "gpt-4o"), ("FAULT_TTFT_MS", "300")]).await;
    for _ in 0..2 {
        assert_eq!(chat_with_headers(&b, "hi").await.0, 200);
    }
    let success = answered("gpt-4o", "gpt-4o");
    let fast = |samples: &[Sample]| {
        let mut le = success.clone();
        le.push(("le", "0.16"));
        value(samples, &format!("{FIRST_CHUNK}_bucket"), &le)
    };
    let samples = scrape(&b).await;
    let (count, first_chunk) = histogram(&samples, FIRST_CHUNK, &success);
    assert_eq!(count, 2.0);
    assert!(first_chunk >= 0.6, "{first_chunk} s to two first chunks");
    assert_eq!(fast(&samples), Some(0.0), "no first chunk came early");
    // Only the first chunk is late: generating the rest takes as long as ever.
    let (_, duration) = histogram(&samples, DURATION, &success);
    assert!(duration - first_chunk < 0.2, "{duration} s in all");

    // Taken away at runtime, the first chunk is early again.
    let (status, body) = put_fault(&b, r#"{"ttftMs": 0}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(chat_with_headers(&b, "hi").await.0, 200);
    assert_eq!(fast(&scrape(&b).await), Some(1.0));
}

pub async fn fault_status_429_says_when_to_retry() {
    let b = start_backend(&[
        ("AZURE_MODEL_NAME", "gpt-4o"),
        ("FAULT_EVERY", "1"),
        ("FAULT_STATUS", "429"),
    ])
    .await;
    for _ in 0..2 {
        let (status, retry_after, body) = chat_with_headers(&b, "hello").await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert!(body["error"].is_string(), "{body}");
    }
    let samples = scrape(&b).await;
    assert_eq!(failures(&samples, "gpt-4o", "429"), 2.0);
    assert_eq!(successes(&samples, "gpt-4o", "gpt-4o"), 0.0);
}

pub async fn fault_delay_slows_every_request() {
    const DELAY: Duration = Duration::from_millis(400);
    let b = start_backend(&[("AZURE_MODEL_NAME", "gpt-4o"), ("FAULT_DELAY_MS", "400")]).await;
    for _ in 0..2 {
        let started = Instant::now();
        let (status, _, body) = chat_with_headers(&b, "hello").await;
        let elapsed = started.elapsed();
        assert_eq!(status, 200, "{body}");
        assert!(elapsed >= DELAY, "answered in {elapsed:?}");
    }
    let samples = scrape(&b).await;
    let success = answered("gpt-4o", "gpt-4o");
    let (_, sum) = histogram(&samples, DURATION, &success);
    assert!(sum >= 0.8, "two delayed requests took {sum} s in all");
    let mut le = success.clone();
    le.push(("le", "0.32"));
    assert_eq!(
        value(&samples, &format!("{DURATION}_bucket"), &le),
        Some(0.0),
        "no request was faster than the delay"
    );
    // The delay comes before anything is answered, so the first chunk waits for it too.
    let (_, first_chunk) = histogram(&samples, FIRST_CHUNK, &success);
    assert!(first_chunk >= 0.8, "{first_chunk} s to two first chunks");
}

async fn fault_settings(b: &backend::Backend) -> Value {
    let response = client()
        .get(b.url("/fault"))
        .send()
        .await
        .expect("GET /fault");
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("fault JSON")
}

async fn put_fault(b: &backend::Backend, body: &str) -> (u16, Value) {
    let response = client()
        .put(b.url("/fault"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("PUT /fault");
    let status = response.status().as_u16();
    (status, response.json().await.expect("fault JSON"))
}

pub async fn put_fault_switches_a_healthy_backend_to_failing_and_back() {
    let b = start_backend(&[("AZURE_MODEL_NAME", "gpt-4o")]).await;
    let healthy = json!({"every": null, "percent": null, "status": 500, "delayMs": 0, "ttftMs": 0});
    assert_eq!(fault_settings(&b).await, healthy);
    assert_eq!(chat_with_headers(&b, "hi").await.0, 200);

    let (status, body) = put_fault(&b, r#"{"every": 1, "status": 503, "delayMs": 0}"#).await;
    assert_eq!(status, 200, "{body}");
    let failing = json!({"every": 1, "percent": null, "status": 503, "delayMs": 0, "ttftMs": 0});
    assert_eq!(body, failing);
    assert_eq!(fault_settings(&b).await, failing);
    for _ in 0..2 {
        let (status, retry_after, body) = chat_with_headers(&b, "hi").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(retry_after.as_deref(), Some("1"));
    }

    // Settings that make no sense are refused and change nothing.
    let refused = [
        (r#"{"every": 0}"#, 422, "every must be 1 or more"),
        (r#"{"every": 1, "status": 200}"#, 422, "status must be"),
        (r#"{"every": 1, "status": 600}"#, 422, "status must be"),
        (r#"{"percent": 101}"#, 422, "percent must be 0 to 100"),
        (
            r#"{"every": 2, "percent": 10}"#,
            422,
            "percent excludes every",
        ),
        (
            r#"{"every": 1, "delay_ms": 5}"#,
            422,
            "unknown field `delay_ms`",
        ),
        (r#"{"every": -1}"#, 422, "invalid value"),
        ("every=1", 400, "not JSON"),
    ];
    for (body, code, message) in refused {
        let (status, answer) = put_fault(&b, body).await;
        assert_eq!(status, code, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(message),
            "{body}: {error:?} lacks {message:?}"
        );
    }
    assert_eq!(fault_settings(&b).await, failing);

    // The count restarts with new settings: the second request from now on is the one to fail.
    let (status, body) = put_fault(&b, r#"{"every": 2}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"every": 2, "percent": null, "status": 500, "delayMs": 0, "ttftMs": 0})
    );
    let statuses = [
        chat_with_headers(&b, "hi").await.0,
        chat_with_headers(&b, "hi").await.0,
    ];
    assert_eq!(statuses, [200, 500]);

    // So does it with a share: half of the requests, the second of every two.
    let (status, body) = put_fault(&b, r#"{"percent": 50}"#).await;
    assert_eq!(status, 200, "{body}");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(chat_with_headers(&b, "hi").await.0);
    }
    assert_eq!(statuses, [200, 500, 200, 500]);

    let (status, body) = put_fault(&b, r#"{"every": null}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, healthy);
    for _ in 0..3 {
        assert_eq!(chat_with_headers(&b, "hi").await.0, 200);
    }
    let samples = scrape(&b).await;
    assert_eq!(failures(&samples, "gpt-4o", "503"), 2.0);
    assert_eq!(failures(&samples, "gpt-4o", "500"), 3.0);
    assert_eq!(successes(&samples, "gpt-4o", "gpt-4o"), 7.0);
}

pub async fn backend_refuses_fault_settings_that_mean_nothing() {
    let cases: [(&[(&str, &str)], &str); 11] = [
        (
            &[("FAULT_EVERY", "0")],
            "FAULT_EVERY is \"0\": must be 1 or more",
        ),
        (&[("FAULT_EVERY", "often")], "FAULT_EVERY is \"often\""),
        (
            &[("FAULT_PERCENT", "101")],
            "FAULT_PERCENT is \"101\": must be 0 to 100",
        ),
        (
            &[("FAULT_PERCENT", "30"), ("FAULT_EVERY", "3")],
            "FAULT_PERCENT is \"30\": excludes every (FAULT_EVERY)",
        ),
        (
            &[("FAULT_STATUS", "200")],
            "FAULT_STATUS is \"200\": must be an HTTP error status",
        ),
        (&[("FAULT_STATUS", "600")], "FAULT_STATUS is \"600\""),
        (&[("FAULT_DELAY_MS", "-5")], "FAULT_DELAY_MS is \"-5\""),
        (&[("FAULT_TTFT_MS", "soon")], "FAULT_TTFT_MS is \"soon\""),
        (
            &[("OFFLINE_TOKENS_PER_SECOND", "0")],
            "OFFLINE_TOKENS_PER_SECOND is \"0\": must be a number above 0",
        ),
        (
            &[("OFFLINE_TOKENS_PER_SECOND", "NaN")],
            "OFFLINE_TOKENS_PER_SECOND is \"NaN\": must be a number above 0",
        ),
        (
            &[("OFFLINE_OUTPUT_TOKENS", "-3")],
            "OFFLINE_OUTPUT_TOKENS is \"-3\"",
        ),
    ];
    for (settings, message) in cases {
        let mut env = vec![("AZURE_MODEL_NAME", "gpt-4o")];
        env.extend_from_slice(settings);
        let (status, stderr) = backend_refuses(&env).await;
        assert_eq!(status.code(), Some(2), "{env:?}: {stderr}");
        assert!(
            stderr.contains(message),
            "{env:?}: {stderr:?} lacks {message:?}"
        );
    }
}

pub async fn online_backend_refuses_offline_settings_and_has_no_fault_endpoint() {
    for name in [
        "FAULT_EVERY",
        "FAULT_PERCENT",
        "FAULT_STATUS",
        "FAULT_DELAY_MS",
        "FAULT_TTFT_MS",
        "OFFLINE_RESPONSE_MODEL",
        "OFFLINE_TTFT_MS",
        "OFFLINE_TOKENS_PER_SECOND",
        "OFFLINE_OUTPUT_TOKENS",
    ] {
        let env = [
            ("AZURE_MODEL_NAME", "gpt-4o"),
            ("AZURE_API_URL", "https://example.openai.azure.com/"),
            ("AZURE_API_KEY", KEY),
            (name, "1"),
        ];
        let (status, stderr) = backend_refuses(&env).await;
        assert_eq!(status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name} is set, but AZURE_API_URL is too")),
            "{name}: {stderr}"
        );
    }

    let (api, up) = fake_azure(|| streamed(true), Duration::ZERO).await;
    let b = online_backend(&api, &[]).await;
    let get = client().get(b.url("/fault")).send().await.expect("GET");
    assert_eq!(get.status().as_u16(), 404);
    let (status, body) = put_fault(&b, r#"{"every": 1}"#).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert!(up.seen.lock().expect("lock").is_empty());
}
