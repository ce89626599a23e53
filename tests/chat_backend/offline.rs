//! The backend without a model API: its answers and health, bad input, the settings it refuses to
//! start with, and the simulated speed of its answers.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::backend::{backend_refuses, start_backend};
use crate::client::{KEY, chat, client, post_raw};
use crate::exposition::{DURATION, FIRST_CHUNK, answered, histogram, scrape, successes, tokens};

pub async fn offline_backend_answers_with_its_model_and_says_it_is_offline() {
    let b = start_backend(&[("AZURE_MODEL_NAME", "gpt-4o")]).await;
    let (status, answer) = chat(&b.url("/chat"), json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["model"], "gpt-4o");
    assert_eq!(answer["offline"], true);
    let reply = answer["reply"].as_str().expect("reply");
    assert!(reply.contains("offline"), "{reply}");
    assert!(reply.contains("hi"), "{reply}");

    let health = client()
        .get(b.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    let health: Value = health.json().await.expect("healthz JSON");
    assert_eq!(
        health,
        json!({"status": "ok", "model": "gpt-4o", "mode": "offline"})
    );
}

pub async fn bad_input_gets_a_4xx_with_a_message() {
    let b = start_backend(&[("AZURE_MODEL_NAME", "gpt-4.1")]).await;
    let url = b.url("/chat");
    let huge = format!(r#"{{"message": "{}"}}"#, "a".repeat(1 << 20));
    let cases: [(&str, String, u16, &str); 7] = [
        ("not JSON", "hello there".into(), 400, "not JSON"),
        ("truncated JSON", r#"{"message": "#.into(), 400, "not JSON"),
        (
            "missing message",
            "{}".into(),
            422,
            "missing field `message`",
        ),
        (
            "message not a string",
            r#"{"message": 5}"#.into(),
            422,
            "invalid type",
        ),
        (
            "empty message",
            r#"{"message": "  "}"#.into(),
            422,
            "must not be empty",
        ),
        ("JSON but not an object", "[1, 2]".into(), 422, "expected"),
        ("1 MiB body", huge, 413, "larger than 64 KiB"),
    ];
    for (what, body, code, message) in cases {
        let (status, answer) = post_raw(&url, body).await;
        assert_eq!(status.as_u16(), code, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(message),
            "{what}: {error:?} lacks {message:?}"
        );
    }
    let wrong_method = client().get(&url).send().await.expect("GET /chat");
    assert_eq!(wrong_method.status().as_u16(), 405);
    let nowhere = client()
        .post(b.url("/nope"))
        .send()
        .await
        .expect("POST /nope");
    assert_eq!(nowhere.status().as_u16(), 404);
    let body: Value = nowhere.json().await.expect("404 body is JSON");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("POST /chat"))
    );

    // Still serving after all that.
    let (status, answer) = chat(&url, json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

pub async fn backend_refuses_to_start_without_its_settings() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "AZURE_MODEL_NAME is not set"),
        (
            &[
                ("AZURE_MODEL_NAME", "gpt-4o"),
                ("AZURE_API_URL", "https://example.openai.azure.com/"),
            ],
            "AZURE_API_KEY is not set",
        ),
        (
            &[
                ("AZURE_MODEL_NAME", "gpt-4o"),
                ("AZURE_API_URL", "not a url"),
                ("AZURE_API_KEY", KEY),
            ],
            "AZURE_API_URL is \"not a url\"",
        ),
        (
            &[("AZURE_MODEL_NAME", "gpt-4o"), ("PORT", "http")],
            "PORT is \"http\"",
        ),
    ];
    for (env, message) in cases {
        let (status, stderr) = backend_refuses(env).await;
        assert_eq!(status.code(), Some(2), "{env:?}: {stderr}");
        assert!(
            stderr.contains(message),
            "{env:?}: {stderr:?} lacks {message:?}"
        );
        assert!(!stderr.contains(KEY), "the key leaked: {stderr}");
    }
}

pub async fn offline_settings_shape_the_answer_time_and_name_the_model() {
    const REQUESTS: f64 = 3.0;
    let b = start_backend(&[
        ("AZURE_MODEL_NAME", "gpt-4o"),
        ("OFFLINE_RESPONSE_MODEL", "gpt-4o-2024-08-06"),
        ("OFFLINE_TTFT_MS", "100"),
        ("OFFLINE_TOKENS_PER_SECOND", "200"),
        ("OFFLINE_OUTPUT_TOKENS", "40"),
    ])
    .await;
    for _ in 0..3 {
        let (status, answer) = chat(&b.url("/chat"), json!({"message": "hi"})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["model"], "gpt-4o-2024-08-06");
    }
    let samples = scrape(&b).await;
    let success = answered("gpt-4o", "gpt-4o-2024-08-06");
    assert_eq!(successes(&samples, "gpt-4o", "gpt-4o-2024-08-06"), REQUESTS);
    let (count, first_chunk) = histogram(&samples, FIRST_CHUNK, &success);
    assert_eq!(count, REQUESTS);
    let (_, duration) = histogram(&samples, DURATION, &success);
    let (_, output) = tokens(&samples, "gpt-4o", "gpt-4o-2024-08-06", "output");
    assert_eq!(output, 40.0 * REQUESTS);
    // 100 ms to the first chunk, then 40 tokens at 200 a second: 200 ms. Timers only run late,
    // by a little on an idle machine and more on a busy one.
    assert!(
        (0.1 * REQUESTS..0.2 * REQUESTS).contains(&first_chunk),
        "{first_chunk} s to the first chunks"
    );
    let generation = duration - first_chunk;
    assert!(
        (0.2 * REQUESTS..0.3 * REQUESTS).contains(&generation),
        "{generation} s of generation"
    );
    // The operator's tokens-per-second: output tokens over the time after the first chunk.
    let rate = output / generation;
    assert!((130.0..=200.0).contains(&rate), "{rate} tokens/s");
}
