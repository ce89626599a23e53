//! The Azure path against the fake model API: a streamed answer and its first chunk, the
//! `api-version` that decides on usage, an answer in one piece, a 429 passed on, other errors
//! as 502 without the key, and a timeout as 504.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use crate::backend::free_port;
use crate::client::{KEY, chat, chat_with_headers};
use crate::exposition::{
    DURATION, FIRST_CHUNK, TOKENS, answered, failures, histogram, scrape, successes, tokens, total,
};
use crate::fake_azure::{
    Answer, CHUNK_GAP, FIRST_CHUNK_WAIT, Reply, SERVED, chunk, fake_azure, online_backend, streamed,
};

pub async fn online_backend_streams_the_answer_and_times_its_first_chunk() {
    let (api, up) = fake_azure(|| streamed(true), Duration::ZERO).await;
    let b = online_backend(&api, &[]).await;
    let (status, answer) = chat(&b.url("/chat"), json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"model": SERVED, "reply": "Hello!"}));
    let seen = up.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (path, query, key, body) = &seen[0];
    assert_eq!(path, "/openai/deployments/gpt-4o/chat/completions");
    assert_eq!(query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(
        key.as_deref(),
        Some(KEY),
        "the key goes in the api-key header"
    );
    assert_eq!(
        body,
        &json!({
            "messages": [{"role": "user", "content": "hi"}],
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );

    // The series name the configured model and the one that answered; the tokens are the
    // stream's usage; the first chunk is the first with content, not the first of the stream.
    let samples = scrape(&b).await;
    assert_eq!(successes(&samples, "gpt-4o", SERVED), 1.0, "{samples:?}");
    assert_eq!(tokens(&samples, "gpt-4o", SERVED, "input"), (1.0, 9.0));
    assert_eq!(tokens(&samples, "gpt-4o", SERVED, "output"), (1.0, 2.0));
    let (_, duration) = histogram(&samples, DURATION, &answered("gpt-4o", SERVED));
    let (count, first_chunk) = histogram(&samples, FIRST_CHUNK, &answered("gpt-4o", SERVED));
    assert_eq!(count, 1.0);
    assert!(
        first_chunk >= FIRST_CHUNK_WAIT.as_secs_f64(),
        "first chunk after {first_chunk} s"
    );
    // The first chunk is timed when the backend has read it, a moment after the upstream sent
    // it, so the time after it can come out a few milliseconds short of the gaps that followed.
    let generation = duration - first_chunk;
    assert!(
        generation >= (2 * CHUNK_GAP).as_secs_f64() - 0.02 && generation < 1.0,
        "{duration} s in all, first chunk after {first_chunk} s"
    );
}

pub async fn an_api_version_before_2024_10_21_is_not_asked_for_usage() {
    let (api, up) = fake_azure(|| streamed(false), Duration::ZERO).await;
    let b = online_backend(&api, &[("AZURE_API_VERSION", "2024-06-01")]).await;
    let (status, answer) = chat(&b.url("/chat"), json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["reply"], "Hello!");
    let seen = up.seen.lock().expect("lock").clone();
    let (_, query, _, body) = &seen[0];
    assert_eq!(query.as_deref(), Some("api-version=2024-06-01"));
    assert_eq!(body["stream"], true);
    assert!(body.get("stream_options").is_none(), "{body}");
    // No usage in the stream, so none recorded; the rest is.
    let samples = scrape(&b).await;
    assert_eq!(successes(&samples, "gpt-4o", SERVED), 1.0);
    assert_eq!(total(&samples, &format!("{TOKENS}_count")), 0.0);
    assert_eq!(total(&samples, &format!("{FIRST_CHUNK}_count")), 1.0);
}

pub async fn upstream_stream_false_asks_for_one_piece_and_records_no_first_chunk() {
    let (api, up) = fake_azure(
        || {
            let answer = json!({
                "model": SERVED,
                "choices": [{"message": {"role": "assistant", "content": "Hello!"}}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
            });
            Reply::Json(StatusCode::OK, answer.to_string())
        },
        Duration::ZERO,
    )
    .await;
    let b = online_backend(&api, &[("UPSTREAM_STREAM", "false")]).await;
    let (status, answer) = chat(&b.url("/chat"), json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"model": SERVED, "reply": "Hello!"}));
    let seen = up.seen.lock().expect("lock").clone();
    assert_eq!(
        seen[0].3,
        json!({"messages": [{"role": "user", "content": "hi"}]}),
        "no stream asked for"
    );
    let samples = scrape(&b).await;
    assert_eq!(successes(&samples, "gpt-4o", SERVED), 1.0);
    assert_eq!(tokens(&samples, "gpt-4o", SERVED, "output"), (1.0, 2.0));
    assert_eq!(total(&samples, &format!("{FIRST_CHUNK}_count")), 0.0);
}

pub async fn an_upstream_429_is_passed_on_with_when_to_retry() {
    fn throttled(headers: &'static [(&'static str, &'static str)]) -> Reply {
        let answer = json!({"error": {"code": "429", "message": "Rate limit is exceeded."}});
        Reply::WithHeaders(StatusCode::TOO_MANY_REQUESTS, headers, answer.to_string())
    }
    let cases: [(Answer, Option<&str>); 3] = [
        (
            || throttled(&[("retry-after", "7"), ("retry-after-ms", "6500")]),
            Some("7"),
        ),
        // Azure's milliseconds alone: rounded up, never early.
        (|| throttled(&[("retry-after-ms", "1500")]), Some("2")),
        (|| throttled(&[]), None),
    ];
    for (answer, expected) in cases {
        let (api, _up) = fake_azure(answer, Duration::ZERO).await;
        let b = online_backend(&api, &[]).await;
        let (status, retry_after, body) = chat_with_headers(&b, "hi").await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(retry_after.as_deref(), expected, "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("Rate limit is exceeded."), "{error}");
        let samples = scrape(&b).await;
        assert_eq!(failures(&samples, "gpt-4o", "429"), 1.0);
        assert_eq!(failures(&samples, "gpt-4o", "502"), 0.0);
        assert_eq!(total(&samples, &format!("{FIRST_CHUNK}_count")), 0.0);
        assert_eq!(total(&samples, &format!("{TOKENS}_count")), 0.0);
    }
}

pub async fn upstream_errors_become_502_without_the_key() {
    let (api, _up) = fake_azure(
        || {
            // An upstream that echoes the key back must not make the backend repeat it.
            let answer = json!({"error": {"code": "401", "message": format!("Access denied: key {KEY} is invalid")}});
            Reply::Json(StatusCode::UNAUTHORIZED, answer.to_string())
        },
        Duration::ZERO,
    )
    .await;
    let b = online_backend(&api, &[]).await;
    let (status, answer) = chat(&b.url("/chat"), json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    let error = answer["error"].as_str().expect("error");
    assert!(error.contains("401 Unauthorized"), "{error}");
    assert!(error.contains("Access denied: key [redacted]"), "{error}");
    assert!(
        !answer.to_string().contains(KEY),
        "the key leaked: {answer}"
    );
    let samples = scrape(&b).await;
    assert_eq!(failures(&samples, "gpt-4o", "502"), 1.0);
    assert_eq!(total(&samples, &format!("{DURATION}_count")), 1.0);
    assert_eq!(total(&samples, &format!("{TOKENS}_count")), 0.0);

    let cases: [(Answer, &str); 3] = [
        // A 5xx is the API's failure, not a throttle: 502, with no Retry-After to pass on.
        (
            || {
                Reply::WithHeaders(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &[("retry-after", "3")],
                    "{}".into(),
                )
            },
            "the model API answered 503 Service Unavailable",
        ),
        (
            || Reply::Json(StatusCode::OK, "<html>a proxy page</html>".into()),
            "the model API's answer is not JSON",
        ),
        (
            || Reply::Events(vec![(Duration::ZERO, chunk("Hel"))]),
            "the model API's answer broke off: the stream ended before data: [DONE]",
        ),
    ];
    for (reply, message) in cases {
        let (api, _up) = fake_azure(reply, Duration::ZERO).await;
        let b = online_backend(&api, &[]).await;
        let (status, retry_after, answer) = chat_with_headers(&b, "hi").await;
        assert_eq!(status, 502, "{answer}");
        assert_eq!(retry_after, None, "{answer}");
        assert_eq!(answer["error"], message);
        let samples = scrape(&b).await;
        assert_eq!(failures(&samples, "gpt-4o", "502"), 1.0, "{message}");
    }

    let closed = format!("http://127.0.0.1:{}/", free_port());
    let b = online_backend(&closed, &[]).await;
    let (status, answer) = chat(&b.url("/chat"), json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    let error = answer["error"].as_str().expect("error");
    assert!(error.starts_with("cannot reach the model API"), "{error}");
}

pub async fn a_slow_upstream_becomes_504() {
    // Slow to answer at all, and slow in the middle of a stream: the timeout covers both.
    let cases: [(Answer, Duration); 2] = [
        (|| streamed(true), Duration::from_secs(20)),
        (
            || {
                Reply::Events(vec![
                    (Duration::ZERO, chunk("Hel")),
                    (Duration::from_secs(20), chunk("lo")),
                ])
            },
            Duration::ZERO,
        ),
    ];
    for (reply, delay) in cases {
        let (api, up) = fake_azure(reply, delay).await;
        let b = online_backend(&api, &[("UPSTREAM_TIMEOUT_SECONDS", "1")]).await;
        let (status, answer) = chat(&b.url("/chat"), json!({"message": "hi"})).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{answer}");
        assert_eq!(answer["error"], "the model API did not answer within 1s");
        assert_eq!(
            up.seen.lock().expect("lock").len(),
            1,
            "the request reached the API"
        );
        let samples = scrape(&b).await;
        assert_eq!(failures(&samples, "gpt-4o", "timeout"), 1.0);
        assert_eq!(failures(&samples, "gpt-4o", "504"), 0.0);
        assert_eq!(total(&samples, &format!("{FIRST_CHUNK}_count")), 0.0);
    }
}
