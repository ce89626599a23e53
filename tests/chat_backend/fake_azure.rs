//! A fake Azure OpenAI chat completions endpoint on 127.0.0.1, the answers it gives (a streamed
//! one as Azure sends it, JSON documents, statuses with headers), and a backend that calls it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::backend::{self, start_backend};
use crate::client::KEY;

/// One request as the fake model API saw it: path, query, api-key header, JSON body.
pub type Seen = (String, Option<String>, Option<String>, Value);

/// How the fake model API answers.
pub enum Reply {
    /// One JSON document with this status.
    Json(StatusCode, String),
    /// This status, these headers and a JSON body.
    WithHeaders(StatusCode, &'static [(&'static str, &'static str)], String),
    /// 200 with server-sent events: each event's data, sent after its wait. Without a `[DONE]`
    /// among them, the stream just ends.
    Events(Vec<(Duration, Value)>),
}

/// Makes the fake model API's answer to each request.
pub type Answer = fn() -> Reply;

/// What the fake model API saw, and how it answers.
#[derive(Clone)]
pub struct Upstream {
    pub seen: Arc<Mutex<Vec<Seen>>>,
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
pub async fn fake_azure(answer: Answer, delay: Duration) -> (String, Upstream) {
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

pub async fn online_backend(api_url: &str, extra: &[(&str, &str)]) -> backend::Backend {
    let mut env = vec![
        ("AZURE_MODEL_NAME", "gpt-4o"),
        ("AZURE_API_URL", api_url),
        ("AZURE_API_KEY", KEY),
    ];
    env.extend_from_slice(extra);
    start_backend(&env).await
}

/// The model Azure reports for the deployment `gpt-4o`.
pub const SERVED: &str = "gpt-4o-2024-08-06";

/// A chunk of a streamed answer saying `content`.
pub fn chunk(content: &str) -> Value {
    json!({
        "object": "chat.completion.chunk",
        "model": SERVED,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}],
        "usage": null,
    })
}

/// Wait before the first chunk with content, and between the chunks after it.
pub const FIRST_CHUNK_WAIT: Duration = Duration::from_millis(300);
pub const CHUNK_GAP: Duration = Duration::from_millis(100);

/// A streamed answer as Azure sends it: the prompt's filter results (no model), the role, then
/// "Hello!" in three chunks after [`FIRST_CHUNK_WAIT`], the usage when `usage`, and the end.
pub fn streamed(usage: bool) -> Reply {
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
