//! The example chat backend (`examples/chat_backend.rs`) as a process: offline answers, bad input,
//! the Azure path against a fake model API on 127.0.0.1 (success, errors, timeouts, and the key
//! never leaking), its `/metrics`, and the faults it injects offline.
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

mod backend;
#[path = "common/host.rs"]
mod host;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Status, `Retry-After` header and JSON body of a `/chat` request saying `message`.
async fn chat_with_headers(b: &backend::Backend, message: &str) -> (u16, Option<String>, Value) {
    let response = client()
        .post(b.url("/chat"))
        .json(&json!({ "message": message }))
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.expect("JSON body");
    (status, retry_after, body)
}

const DURATION: &str = "gen_ai_client_operation_duration_seconds";
const TOKENS: &str = "gen_ai_client_token_usage";

/// One line of the text exposition format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a text exposition; comments (`# HELP`, `# TYPE`) are left out.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("value {v:?} in {line:?}: {e}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => (name, parse_labels(rest, line)),
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

/// `k="v",k2="v2"}` as a map; `line` is for the panic message.
fn parse_labels(text: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || key == "}" {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label {key} in {line:?}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("unfinished escape in {line:?}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unfinished label value in {line:?}"),
            }
        }
        labels.insert(key, value);
        match chars.next() {
            Some(',') => {}
            Some('}') => break,
            other => panic!("{other:?} after label {labels:?} in {line:?}"),
        }
    }
    labels
}

/// The backend's `/metrics`, after checking it is the Prometheus text format with both histograms.
async fn scrape(b: &backend::Backend) -> Vec<Sample> {
    let response = client()
        .get(b.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(
        content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = response.text().await.expect("metrics text");
    for name in [DURATION, TOKENS] {
        assert!(
            text.contains(&format!("# TYPE {name} histogram\n")),
            "no histogram {name}:\n{text}"
        );
    }
    parse_exposition(&text)
}

/// The value of the sample named `name` whose labels are exactly `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == wanted)
        .map(|s| s.value)
}

/// The labels every GenAI series of a backend calling `model` has, plus `extra`.
fn genai<'a>(model: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut labels = vec![
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_provider_name", "azure.ai.openai"),
        ("gen_ai_request_model", model),
    ];
    labels.extend_from_slice(extra);
    labels
}

/// Requests observed by the duration histogram: successes (`None`) or one `error_type`.
fn operations(samples: &[Sample], model: &str, error_type: Option<&str>) -> f64 {
    let extra: Vec<(&str, &str)> = error_type.map(|e| ("error_type", e)).into_iter().collect();
    value(samples, &format!("{DURATION}_count"), &genai(model, &extra)).unwrap_or(0.0)
}

/// Count and sum of the token histogram for `token_type` ("input" or "output").
fn tokens(samples: &[Sample], model: &str, token_type: &str) -> (f64, f64) {
    let labels = genai(model, &[("gen_ai_token_type", token_type)]);
    let count = value(samples, &format!("{TOKENS}_count"), &labels).unwrap_or(0.0);
    let sum = value(samples, &format!("{TOKENS}_sum"), &labels).unwrap_or(0.0);
    (count, sum)
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
                "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
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

    // The metrics name the configured model, and take the token counts from the API's usage.
    let samples = scrape(&b).await;
    assert_eq!(operations(&samples, "gpt-4o", None), 1.0);
    assert_eq!(tokens(&samples, "gpt-4o", "input"), (1.0, 9.0));
    assert_eq!(tokens(&samples, "gpt-4o", "output"), (1.0, 2.0));
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
    let samples = scrape(&b).await;
    assert_eq!(operations(&samples, "gpt-4o", Some("502")), 1.0);
    assert_eq!(operations(&samples, "gpt-4o", None), 0.0);
    assert_eq!(tokens(&samples, "gpt-4o", "input"), (0.0, 0.0));

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
    let samples = scrape(&b).await;
    assert_eq!(operations(&samples, "gpt-4o", Some("timeout")), 1.0);
    assert_eq!(operations(&samples, "gpt-4o", Some("504")), 0.0);
}

#[tokio::test]
async fn metrics_observe_every_chat_request_with_the_genai_labels() {
    let b = start_backend(&[("AZURE_MODEL_NAME", "gpt-4o")]).await;
    let before = scrape(&b).await;
    // The success series are there, at zero, before the first request.
    assert_eq!(
        value(&before, &format!("{DURATION}_count"), &genai("gpt-4o", &[])),
        Some(0.0),
        "{before:?}"
    );
    assert_eq!(tokens(&before, "gpt-4o", "input"), (0.0, 0.0));

    let mut reply_words = 0.0;
    for _ in 0..3 {
        let (status, answer) = chat(&b.url("/chat"), json!({"message": "one two three"})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let reply = answer["reply"].as_str().expect("reply");
        reply_words += reply.split_whitespace().count() as f64;
    }
    // A malformed request is the caller's mistake: documented as not observed.
    let (status, _) = post_raw(&b.url("/chat"), "not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let samples = scrape(&b).await;
    assert_eq!(operations(&samples, "gpt-4o", None), 3.0, "{samples:?}");
    let buckets: Vec<String> = samples
        .iter()
        .filter(|s| {
            s.name == format!("{DURATION}_bucket")
                && s.labels.len() == 4
                && s.labels.get("gen_ai_request_model").map(String::as_str) == Some("gpt-4o")
        })
        .map(|s| s.labels["le"].clone())
        .collect();
    assert_eq!(
        buckets,
        [
            "0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64", "1.28", "2.56", "5.12",
            "10.24", "20.48", "40.96", "81.92", "+Inf"
        ]
    );
    let mut le = genai("gpt-4o", &[]);
    le.push(("le", "+Inf"));
    assert_eq!(
        value(&samples, &format!("{DURATION}_bucket"), &le),
        Some(3.0)
    );
    assert_eq!(tokens(&samples, "gpt-4o", "input"), (3.0, 9.0));
    assert_eq!(tokens(&samples, "gpt-4o", "output"), (3.0, reply_words));
    let mut le = genai("gpt-4o", &[("gen_ai_token_type", "input")]);
    le.push(("le", "4"));
    assert_eq!(value(&samples, &format!("{TOKENS}_bucket"), &le), Some(3.0));

    // Successes carry no error_type, and no series carries labels the scrape adds itself.
    let allowed = [
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "gen_ai_token_type",
        "error_type",
        "le",
    ];
    for sample in &samples {
        assert!(
            sample.name.starts_with(DURATION) || sample.name.starts_with(TOKENS),
            "{sample:?}"
        );
        assert!(
            !sample.labels.contains_key("error_type"),
            "nothing failed: {sample:?}"
        );
        assert!(
            sample.labels.keys().all(|k| allowed.contains(&k.as_str())),
            "{sample:?}"
        );
    }
}

#[tokio::test]
async fn fault_every_3_fails_exactly_requests_3_6_9() {
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
    assert_eq!(operations(&samples, "gpt-4.1", Some("500")), 3.0);
    assert_eq!(operations(&samples, "gpt-4.1", None), 7.0);
    // Tokens are counted for the answered requests only.
    assert_eq!(tokens(&samples, "gpt-4.1", "input"), (7.0, 7.0));
}

#[tokio::test]
async fn fault_status_429_says_when_to_retry() {
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
    assert_eq!(operations(&samples, "gpt-4o", Some("429")), 2.0);
    assert_eq!(operations(&samples, "gpt-4o", None), 0.0);
}

#[tokio::test]
async fn fault_delay_slows_every_request() {
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
    let sum =
        value(&samples, &format!("{DURATION}_sum"), &genai("gpt-4o", &[])).expect("duration sum");
    assert!(sum >= 0.8, "two delayed requests took {sum} s in all");
    let mut le = genai("gpt-4o", &[]);
    le.push(("le", "0.32"));
    assert_eq!(
        value(&samples, &format!("{DURATION}_bucket"), &le),
        Some(0.0),
        "no request was faster than the delay"
    );
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

#[tokio::test]
async fn put_fault_switches_a_healthy_backend_to_failing_and_back() {
    let b = start_backend(&[("AZURE_MODEL_NAME", "gpt-4o")]).await;
    let healthy = json!({"every": null, "status": 500, "delayMs": 0});
    assert_eq!(fault_settings(&b).await, healthy);
    assert_eq!(chat_with_headers(&b, "hi").await.0, 200);

    let (status, body) = put_fault(&b, r#"{"every": 1, "status": 503, "delayMs": 0}"#).await;
    assert_eq!(status, 200, "{body}");
    let failing = json!({"every": 1, "status": 503, "delayMs": 0});
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
    assert_eq!(body, json!({"every": 2, "status": 500, "delayMs": 0}));
    let statuses = [
        chat_with_headers(&b, "hi").await.0,
        chat_with_headers(&b, "hi").await.0,
    ];
    assert_eq!(statuses, [200, 500]);

    let (status, body) = put_fault(&b, r#"{"every": null}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, healthy);
    for _ in 0..3 {
        assert_eq!(chat_with_headers(&b, "hi").await.0, 200);
    }
    let samples = scrape(&b).await;
    assert_eq!(operations(&samples, "gpt-4o", Some("503")), 2.0);
    assert_eq!(operations(&samples, "gpt-4o", Some("500")), 1.0);
    assert_eq!(operations(&samples, "gpt-4o", None), 5.0);
}

#[tokio::test]
async fn backend_refuses_fault_settings_that_mean_nothing() {
    let cases = [
        (
            "FAULT_EVERY",
            "0",
            "FAULT_EVERY is \"0\": must be 1 or more",
        ),
        ("FAULT_EVERY", "often", "FAULT_EVERY is \"often\""),
        (
            "FAULT_STATUS",
            "200",
            "FAULT_STATUS is \"200\": must be an HTTP error status",
        ),
        ("FAULT_STATUS", "600", "FAULT_STATUS is \"600\""),
        ("FAULT_DELAY_MS", "-5", "FAULT_DELAY_MS is \"-5\""),
    ];
    for (name, value, message) in cases {
        let env = [("AZURE_MODEL_NAME", "gpt-4o"), (name, value)];
        let (status, stderr) = backend_refuses(&env).await;
        assert_eq!(status.code(), Some(2), "{env:?}: {stderr}");
        assert!(
            stderr.contains(message),
            "{env:?}: {stderr:?} lacks {message:?}"
        );
    }
}

#[tokio::test]
async fn online_backend_refuses_faults_and_has_no_fault_endpoint() {
    for name in ["FAULT_EVERY", "FAULT_STATUS", "FAULT_DELAY_MS"] {
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

    let (api, up) = fake_azure(
        || (StatusCode::OK, json!({"model": "gpt-4o"}).to_string()),
        Duration::ZERO,
    )
    .await;
    let b = online_backend(&api, &[]).await;
    let get = client().get(b.url("/fault")).send().await.expect("GET");
    assert_eq!(get.status().as_u16(), 404);
    let (status, body) = put_fault(&b, r#"{"every": 1}"#).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert!(up.seen.lock().expect("lock").is_empty());
}
