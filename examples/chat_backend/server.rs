//! The HTTP server: the routes, their handlers, the JSON answers (errors included) and the
//! graceful shutdown.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::metrics::Outcome;
use crate::offline::{FaultSettings, Faults, answer_offline};
use crate::upstream::ask_azure;
use crate::{Backend, Mode};

/// Largest request body accepted. A chat message is a few hundred bytes; anything near this size
/// is a mistake or an attack, and is refused before it is read into memory.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON response; every answer of this server is JSON, errors included, so that clients such
/// as the lab's script can always read it.
pub(crate) fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, json!({ "error": message.into() }))
}

#[derive(Deserialize)]
struct ChatRequest {
    message: String,
}

/// The JSON document of a request body, or the 4xx status and message that say what is wrong
/// with it: 400 when it is not JSON at all, 422 when it is JSON of the wrong shape.
fn json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    shape: &str,
) -> Result<T, (StatusCode, String)> {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {} KiB",
                    MAX_BODY_BYTES / 1024
                ),
            ));
        }
        Err(rejection) => {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {}", rejection.body_text()),
            ));
        }
    };
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("the request body is not JSON ({e}); send {shape}"),
        )
    })?;
    serde_json::from_value(value).map_err(|e| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("expected {shape}: {e}"),
        )
    })
}

/// Answers a chat request. Requests refused as malformed (4xx for the body) are the caller's
/// mistake, not the version's, so they are left out of the metrics and of the fault count;
/// every request past that check is observed, whichever way it ends.
async fn chat(
    State(backend): State<Arc<Backend>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let request: ChatRequest = match json_body(body, r#"{"message": "..."}"#) {
        Ok(request) => request,
        Err((status, message)) => return error(status, message),
    };
    if request.message.trim().is_empty() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "message must not be empty",
        );
    }
    let (response, outcome) = match &backend.mode {
        Mode::Offline { simulation, faults } => {
            answer_offline(
                &backend.model,
                simulation,
                faults,
                &request.message,
                started,
            )
            .await
        }
        Mode::Azure(azure) => match ask_azure(azure, &request.message, started).await {
            Ok(answer) => (
                json_response(
                    StatusCode::OK,
                    json!({ "model": answer.model, "reply": answer.reply }),
                ),
                Outcome::Answered {
                    response_model: answer.model,
                    first_chunk: answer.first_chunk,
                    input: answer.input_tokens,
                    output: answer.output_tokens,
                },
            ),
            Err(failure) => {
                let (response, error_type) = failure.into_response(azure);
                (response, Outcome::Failed(error_type))
            }
        },
    };
    backend.metrics.record(started.elapsed(), outcome);
    response
}

async fn healthz(State(backend): State<Arc<Backend>>) -> Response {
    let mode = match backend.mode {
        Mode::Offline { .. } => "offline",
        Mode::Azure(_) => "azure",
    };
    json_response(
        StatusCode::OK,
        json!({ "status": "ok", "model": backend.model, "mode": mode }),
    )
}

async fn metrics(State(backend): State<Arc<Backend>>) -> Response {
    match backend.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}"),
        ),
    }
}

/// The fault settings of an offline backend; `None` online, where `/fault` does not exist.
fn faults(backend: &Backend) -> Option<&Mutex<Faults>> {
    match &backend.mode {
        Mode::Offline { faults, .. } => Some(faults),
        Mode::Azure(_) => None,
    }
}

fn settings_response(settings: FaultSettings) -> Response {
    json_response(StatusCode::OK, json!(settings))
}

async fn get_fault(State(backend): State<Arc<Backend>>) -> Response {
    match faults(&backend) {
        Some(faults) => settings_response(
            faults
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .settings,
        ),
        None => not_found().await,
    }
}

async fn put_fault(
    State(backend): State<Arc<Backend>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(faults) = faults(&backend) else {
        return not_found().await;
    };
    let shape = concat!(
        r#"{"every": k or null, "percent": 0 to 100 or null, "status": 400 to 599, "#,
        r#""delayMs": 0, "ttftMs": 0}"#
    );
    let settings: FaultSettings = match json_body(body, shape) {
        Ok(settings) => settings,
        Err((status, message)) => return error(status, message),
    };
    if let Err((_, field, reason)) = settings.check() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field} {reason}"),
        );
    }
    backend.metrics.expect_failure(&settings.status.to_string());
    *faults.lock().unwrap_or_else(PoisonError::into_inner) = Faults {
        settings,
        requests: 0,
    };
    eprintln!("fault settings replaced: {}", json!(settings));
    settings_response(settings)
}

const ENDPOINTS: &str = "use POST /chat, GET /healthz or GET /metrics";

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {ENDPOINTS}"),
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed: {ENDPOINTS}"),
    )
}

pub(crate) fn router(backend: Arc<Backend>) -> Router {
    let mut router = Router::new()
        .route("/chat", post(chat))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics));
    if faults(&backend).is_some() {
        router = router.route("/fault", get(get_fault).put(put_fault));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(backend)
}

/// Resolves on SIGTERM (how Kubernetes stops a pod) or Ctrl-C, so requests in flight finish.
pub(crate) async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
