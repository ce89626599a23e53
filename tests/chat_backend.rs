//! The example chat backend (`examples/chat_backend.rs`) as a process: offline answers, bad input,
//! the Azure path against a fake model API on 127.0.0.1 (a streamed answer, one in one piece, a
//! 429 passed on, errors, timeouts, and the key never leaking), its `/metrics` (the GenAI metric
//! contract), the simulated speed of offline answers and the faults it injects offline.
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

mod backend;
#[path = "common/host.rs"]
mod host;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use backend::{backend_refuses, free_port, start_backend};
use futures::StreamExt;
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
const FIRST_CHUNK: &str = "gen_ai_client_operation_time_to_first_chunk_seconds";
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

/// The backend's `/metrics`, after checking it is the Prometheus text format and that the GenAI
/// series are histograms.
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
    // A family without series yet (online, before the first answer) has no TYPE line either.
    for name in [DURATION, FIRST_CHUNK, TOKENS] {
        assert!(
            !text.lines().any(|line| line.starts_with(name))
                || text.contains(&format!("# TYPE {name} histogram\n")),
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

/// The labels of the series of requests that `model` was asked and `response_model` answered.
fn answered<'a>(model: &'a str, response_model: &'a str) -> Vec<(&'a str, &'a str)> {
    genai(model, &[("gen_ai_response_model", response_model)])
}

/// Successful requests observed by the duration histogram.
fn successes(samples: &[Sample], model: &str, response_model: &str) -> f64 {
    let labels = answered(model, response_model);
    value(samples, &format!("{DURATION}_count"), &labels).unwrap_or(0.0)
}

/// Failed requests observed by the duration histogram with this `error_type`.
fn failures(samples: &[Sample], model: &str, error_type: &str) -> f64 {
    let labels = genai(model, &[("error_type", error_type)]);
    value(samples, &format!("{DURATION}_count"), &labels).unwrap_or(0.0)
}

/// Count and sum of a histogram's series of successful requests.
fn histogram(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> (f64, f64) {
    let count = value(samples, &format!("{name}_count"), labels).unwrap_or(0.0);
    let sum = value(samples, &format!("{name}_sum"), labels).unwrap_or(0.0);
    (count, sum)
}

/// Count and sum of the token histogram for `token_type` ("input" or "output").
fn tokens(samples: &[Sample], model: &str, response_model: &str, token_type: &str) -> (f64, f64) {
    let mut labels = answered(model, response_model);
    labels.push(("gen_ai_token_type", token_type));
    histogram(samples, TOKENS, &labels)
}

/// The sum of every sample named `name`, whatever its labels.
fn total(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
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

/// How the fake model API answers.
enum Reply {
    /// One JSON document with this status.
    Json(StatusCode, String),
    /// This status, these headers and a JSON body.
    WithHeaders(StatusCode, &'static [(&'static str, &'static str)], String),
    /// 200 with server-sent events: each event's data, sent after its wait. Without a `[DONE]`
    /// among them, the stream just ends.
    Events(Vec<(Duration, Value)>),
}

/// Makes the fake model API's answer to each request.
type Answer = fn() -> Reply;

/// What the fake model API saw, and how it answers.
#[derive(Clone)]
struct Upstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    answer: Answer,
    delay: Duration,
}

async fn completions(
    State(up): State<Upstream>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut seen) = up.seen.lock() {
        seen.push((uri.path().to_owned(), query, key, body));
    }
    tokio::time::sleep(up.delay).await;
    match (up.answer)() {
        Reply::Json(status, text) => {
            (status, [("content-type", "application/json")], text).into_response()
        }
        Reply::WithHeaders(status, headers, text) => {
            let mut response =
                (status, [("content-type", "application/json")], text).into_response();
            for (name, value) in headers {
                response
                    .headers_mut()
                    .insert(*name, HeaderValue::from_static(value));
            }
            response
        }
        Reply::Events(events) => {
            let events = futures::stream::iter(events).then(|(wait, data)| async move {
                tokio::time::sleep(wait).await;
                // The format's own spelling of the end is not JSON.
                let data = match data.as_str() {
                    Some("[DONE]") => "[DONE]".to_owned(),
                    _ => data.to_string(),
                };
                Ok::<_, std::convert::Infallible>(format!("data: {data}\n\n"))
            });
            (
                [("content-type", "text/event-stream")],
                Body::from_stream(events),
            )
                .into_response()
        }
    }
}

/// A fake Azure OpenAI endpoint on 127.0.0.1; the task ends with the test's runtime.
async fn fake_azure(answer: Answer, delay: Duration) -> (String, Upstream) {
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

/// The model Azure reports for the deployment `gpt-4o`.
const SERVED: &str = "gpt-4o-2024-08-06";

/// A chunk of a streamed answer saying `content`.
fn chunk(content: &str) -> Value {
    json!({
        "object": "chat.completion.chunk",
        "model": SERVED,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}],
        "usage": null,
    })
}

/// Wait before the first chunk with content, and between the chunks after it.
const FIRST_CHUNK_WAIT: Duration = Duration::from_millis(300);
const CHUNK_GAP: Duration = Duration::from_millis(100);

/// A streamed answer as Azure sends it: the prompt's filter results (no model), the role, then
/// "Hello!" in three chunks after [`FIRST_CHUNK_WAIT`], the usage when `usage`, and the end.
fn streamed(usage: bool) -> Reply {
    let mut events = vec![
        (
            Duration::ZERO,
            json!({
                "model": "",
                "choices": [],
                "prompt_filter_results": [{"prompt_index": 0}],
            }),
        ),
        (
            Duration::ZERO,
            json!({
                "model": SERVED,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
            }),
        ),
        (FIRST_CHUNK_WAIT, chunk("Hel")),
        (CHUNK_GAP, chunk("lo")),
        (CHUNK_GAP, chunk("!")),
    ];
    if usage {
        events.push((
            Duration::ZERO,
            json!({
                "model": SERVED,
                "choices": [],
                "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
            }),
        ));
    }
    events.push((Duration::ZERO, json!("[DONE]")));
    Reply::Events(events)
}

#[tokio::test]
async fn online_backend_streams_the_answer_and_times_its_first_chunk() {
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

#[tokio::test]
async fn an_api_version_before_2024_10_21_is_not_asked_for_usage() {
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

#[tokio::test]
async fn upstream_stream_false_asks_for_one_piece_and_records_no_first_chunk() {
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

#[tokio::test]
async fn an_upstream_429_is_passed_on_with_when_to_retry() {
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

#[tokio::test]
async fn upstream_errors_become_502_without_the_key() {
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

#[tokio::test]
async fn a_slow_upstream_becomes_504() {
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

#[tokio::test]
async fn metrics_observe_every_chat_request_with_the_genai_labels() {
    let b = start_backend(&[("AZURE_MODEL_NAME", "gpt-4o")]).await;
    let before = scrape(&b).await;
    // The success series are there, at zero, before the first request; offline the model that
    // answers is known from the start.
    let success = answered("gpt-4o", "gpt-4o");
    for name in [DURATION, FIRST_CHUNK] {
        assert_eq!(
            value(&before, &format!("{name}_count"), &success),
            Some(0.0),
            "{name}: {before:?}"
        );
    }
    assert_eq!(tokens(&before, "gpt-4o", "gpt-4o", "input"), (0.0, 0.0));
    // So are the failures it can answer with (FAULT_STATUS's default 500 among them): the first
    // failure of each kind must count in an increase().
    for error_type in ["429", "500", "502", "timeout"] {
        let failed = [
            ("gen_ai_operation_name", "chat"),
            ("gen_ai_provider_name", "azure.ai.openai"),
            ("gen_ai_request_model", "gpt-4o"),
            ("error_type", error_type),
        ];
        assert_eq!(
            value(&before, &format!("{DURATION}_count"), &failed),
            Some(0.0),
            "{error_type}: {before:?}"
        );
    }

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
    assert_eq!(successes(&samples, "gpt-4o", "gpt-4o"), 3.0, "{samples:?}");
    for name in [DURATION, FIRST_CHUNK] {
        let buckets: Vec<String> = samples
            .iter()
            .filter(|s| s.name == format!("{name}_bucket") && !s.labels.contains_key("error_type"))
            .map(|s| s.labels["le"].clone())
            .collect();
        assert_eq!(
            buckets,
            [
                "0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64", "1.28", "2.56", "5.12",
                "10.24", "20.48", "40.96", "81.92", "+Inf"
            ],
            "{name}"
        );
        let mut le = success.clone();
        le.push(("le", "+Inf"));
        assert_eq!(
            value(&samples, &format!("{name}_bucket"), &le),
            Some(3.0),
            "{name}"
        );
    }
    // The defaults keep an offline answer cheap: 20 ms to the first chunk, 1000 tokens/s.
    let (_, duration) = histogram(&samples, DURATION, &success);
    let (_, first_chunk) = histogram(&samples, FIRST_CHUNK, &success);
    assert!(first_chunk >= 0.06, "{first_chunk} s to the first chunks");
    assert!(
        duration - first_chunk >= reply_words / 1000.0,
        "{duration} s in all, {first_chunk} s to the first chunks, {reply_words} words"
    );
    assert!(duration < 3.0 * 0.1, "{duration} s for three answers");
    assert_eq!(tokens(&samples, "gpt-4o", "gpt-4o", "input"), (3.0, 9.0));
    assert_eq!(
        tokens(&samples, "gpt-4o", "gpt-4o", "output"),
        (3.0, reply_words)
    );
    let mut le = answered("gpt-4o", "gpt-4o");
    le.extend([("gen_ai_token_type", "input"), ("le", "4")]);
    assert_eq!(value(&samples, &format!("{TOKENS}_bucket"), &le), Some(3.0));

    // Successes carry no error_type, and no series carries labels the scrape adds itself.
    let allowed = [
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "gen_ai_token_type",
        "error_type",
        "le",
    ];
    for sample in &samples {
        assert!(
            [DURATION, FIRST_CHUNK, TOKENS]
                .iter()
                .any(|name| sample.name.starts_with(name)),
            "{sample:?}"
        );
        if sample.labels.contains_key("error_type") && sample.name.ends_with("_count") {
            assert_eq!(sample.value, 0.0, "nothing failed: {sample:?}");
        }
        assert!(
            sample.labels.keys().all(|k| allowed.contains(&k.as_str())),
            "{sample:?}"
        );
    }
}

#[tokio::test]
async fn offline_settings_shape_the_answer_time_and_name_the_model() {
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
    assert_eq!(failures(&samples, "gpt-4.1", "500"), 3.0);
    assert_eq!(successes(&samples, "gpt-4.1", "gpt-4.1"), 7.0);
    // Tokens and first chunks are counted for the answered requests only.
    assert_eq!(tokens(&samples, "gpt-4.1", "gpt-4.1", "input"), (7.0, 7.0));
    assert_eq!(total(&samples, &format!("{FIRST_CHUNK}_count")), 7.0);
}

#[tokio::test]
async fn fault_percent_30_fails_exactly_3_in_10_spread_evenly() {
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

#[tokio::test]
async fn fault_ttft_raises_the_time_to_first_chunk() {
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
    assert_eq!(failures(&samples, "gpt-4o", "429"), 2.0);
    assert_eq!(successes(&samples, "gpt-4o", "gpt-4o"), 0.0);
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

#[tokio::test]
async fn put_fault_switches_a_healthy_backend_to_failing_and_back() {
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

#[tokio::test]
async fn backend_refuses_fault_settings_that_mean_nothing() {
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

#[tokio::test]
async fn online_backend_refuses_offline_settings_and_has_no_fault_endpoint() {
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
