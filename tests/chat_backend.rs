//! The example chat backend (`examples/chat_backend.rs`) as a process: offline answers, bad input,
//! and the Azure path against a fake model API on 127.0.0.1 (success, errors, timeouts, and the
//! key never leaking).
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

mod backend;
#[path = "common/host.rs"]
mod host;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::post;
use backend::{backend_refuses, free_port, start_backend};
use serde_json::{Value, json};

const KEY: &str = "test-key-0123456789";

fn client() -> reqwest::Client {
    canary_operator::plugin::http::client(Duration::from_secs(30)).expect("HTTP client")
}

/// Status and JSON body of a POST to `url`.
async fn post_raw(url: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
    let response = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send");
    let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, value)
}

async fn chat(url: &str, body: Value) -> (StatusCode, Value) {
    post_raw(url, body.to_string()).await
}

#[tokio::test]
async fn offline_backend_answers_with_its_model_and_says_it_is_offline() {
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

#[tokio::test]
async fn bad_input_gets_a_4xx_with_a_message() {
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

#[tokio::test]
async fn backend_refuses_to_start_without_its_settings() {
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

/// One request as the fake model API saw it: path, query, api-key header, JSON body.
type Seen = (String, Option<String>, Option<String>, Value);

/// What the fake model API saw, and how it answers.
#[derive(Clone)]
struct Upstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    answer: fn() -> (StatusCode, String),
    delay: Duration,
}

async fn completions(
    State(up): State<Upstream>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let key = headers
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut seen) = up.seen.lock() {
        seen.push((uri.path().to_owned(), query, key, body));
    }
    tokio::time::sleep(up.delay).await;
    let (status, text) = (up.answer)();
    (status, [("content-type", "application/json")], text)
}

/// A fake Azure OpenAI endpoint on 127.0.0.1; the task ends with the test's runtime.
async fn fake_azure(answer: fn() -> (StatusCode, String), delay: Duration) -> (String, Upstream) {
    let up = Upstream {
        seen: Arc::default(),
        answer,
        delay,
    };
    let app = Router::new()
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(completions),
        )
        .with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/"), up)
}

async fn online_backend(api_url: &str, extra: &[(&str, &str)]) -> backend::Backend {
    let mut env = vec![
        ("AZURE_MODEL_NAME", "gpt-4o"),
        ("AZURE_API_URL", api_url),
        ("AZURE_API_KEY", KEY),
    ];
    env.extend_from_slice(extra);
    start_backend(&env).await
}

#[tokio::test]
async fn online_backend_reports_the_model_the_api_reported() {
    let (api, up) = fake_azure(
        || {
            let answer = json!({
                "model": "gpt-4o-2024-08-06",
                "choices": [{"message": {"role": "assistant", "content": "Hello!"}}],
            });
            (StatusCode::OK, answer.to_string())
        },
        Duration::ZERO,
    )
    .await;
    let b = online_backend(&api, &[]).await;
    let (status, answer) = chat(&b.url("/chat"), json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!({"model": "gpt-4o-2024-08-06", "reply": "Hello!"})
    );
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
    assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
}

#[tokio::test]
async fn upstream_errors_become_502_without_the_key() {
    let (api, _up) = fake_azure(
        || {
            // An upstream that echoes the key back must not make the backend repeat it.
            let answer = json!({"error": {"code": "401", "message": format!("Access denied: key {KEY} is invalid")}});
            (StatusCode::UNAUTHORIZED, answer.to_string())
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

    let (api, _up) = fake_azure(
        || (StatusCode::OK, "<html>a proxy page</html>".into()),
        Duration::ZERO,
    )
    .await;
    let b = online_backend(&api, &[]).await;
    let (status, answer) = chat(&b.url("/chat"), json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    assert_eq!(answer["error"], "the model API's answer is not JSON");

    let closed = format!("http://127.0.0.1:{}/", free_port());
    let b = online_backend(&closed, &[]).await;
    let (status, answer) = chat(&b.url("/chat"), json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    let error = answer["error"].as_str().expect("error");
    assert!(error.starts_with("cannot reach the model API"), "{error}");
}

#[tokio::test]
async fn a_slow_upstream_becomes_504() {
    let (api, up) = fake_azure(
        || (StatusCode::OK, json!({"model": "gpt-4o"}).to_string()),
        Duration::from_secs(20),
    )
    .await;
    let b = online_backend(&api, &[("UPSTREAM_TIMEOUT_SECONDS", "1")]).await;
    let (status, answer) = chat(&b.url("/chat"), json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{answer}");
    assert_eq!(answer["error"], "the model API did not answer within 1s");
    assert_eq!(
        up.seen.lock().expect("lock").len(),
        1,
        "the request reached the API"
    );
}
