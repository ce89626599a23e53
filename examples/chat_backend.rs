//! The lab's chat backend, in Rust: the service a CanaryRelease runs in two versions, each pinned
//! to its own model, so that every answer says which version served it.
//!
//! `POST /chat` with `{"message": "..."}` asks the Azure OpenAI chat completions API and answers
//! `{"model": <the model the API reported>, "reply": <its answer>}`; `GET /healthz` answers
//! `{"status": "ok", ...}`. Without `AZURE_API_URL` it runs offline: it answers with its configured
//! model name and a reply that says it is offline, so demos and tests work without an API key.
//!
//! Environment (the lab's ConfigMap and Secret keys):
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `AZURE_MODEL_NAME` | deployment (model) to call; required | |
//! | `AZURE_API_URL` | endpoint, e.g. `https://NAME.openai.azure.com/`, or a full chat completions URL | offline mode |
//! | `AZURE_API_KEY` | API key; required with `AZURE_API_URL` | |
//! | `AZURE_API_VERSION` | `api-version` query parameter | `2024-10-21` |
//! | `UPSTREAM_TIMEOUT_SECONDS` | longest wait for the API | `30` |
//! | `PORT` | port to listen on | `5000` |
//! | `HOST` | address to listen on; `0.0.0.0` in a pod | `127.0.0.1` |
//!
//! Run it: `AZURE_MODEL_NAME=gpt-4o cargo run --example chat_backend`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

/// Largest request body accepted. A chat message is a few hundred bytes; anything near this size
/// is a mistake or an attack, and is refused before it is read into memory.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest piece of an upstream error message passed on to the caller.
const MAX_UPSTREAM_MESSAGE: usize = 300;

const DEFAULT_API_VERSION: &str = "2024-10-21";

/// How the backend answers.
enum Mode {
    /// No API configured: answer locally, saying so.
    Offline,
    Azure {
        client: reqwest::Client,
        url: reqwest::Url,
        key: String,
        timeout: Duration,
    },
}

struct Backend {
    model: String,
    mode: Mode,
}

/// A configuration problem found at startup; the process exits with it instead of serving
/// requests that could only fail.
#[derive(Debug, thiserror::Error)]
enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is {value:?}: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// Reads a variable, treating an empty value as unset (a ConfigMap key left blank).
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parsed<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
                value,
            }),
    }
}

impl Backend {
    fn from_env() -> Result<Backend, ConfigError> {
        let model = var("AZURE_MODEL_NAME").ok_or(ConfigError::Missing("AZURE_MODEL_NAME"))?;
        let Some(endpoint) = var("AZURE_API_URL") else {
            return Ok(Backend {
                model,
                mode: Mode::Offline,
            });
        };
        let key = var("AZURE_API_KEY").ok_or(ConfigError::Missing("AZURE_API_KEY"))?;
        let version = var("AZURE_API_VERSION").unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
        let url = completions_url(&endpoint, &model, &version).map_err(|reason| {
            ConfigError::Invalid {
                name: "AZURE_API_URL",
                value: endpoint.clone(),
                reason,
            }
        })?;
        let timeout = Duration::from_secs(parsed("UPSTREAM_TIMEOUT_SECONDS", 30_u64)?);
        // reqwest is built without a TLS provider of its own; use ring, as the rest of the crate.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()?;
        Ok(Backend {
            model,
            mode: Mode::Azure {
                client,
                url,
                key,
                timeout,
            },
        })
    }
}

/// The chat completions URL of a deployment. `AZURE_API_URL` is usually the resource's endpoint
/// (as the Azure portal shows it); a URL that already names `/chat/completions` is used as given.
fn completions_url(
    endpoint: &str,
    deployment: &str,
    version: &str,
) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(endpoint).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("not an http(s) URL".into());
    }
    if !url.path().contains("/chat/completions") {
        let mut segments = url
            .path_segments_mut()
            .map_err(|()| "cannot have a path".to_owned())?;
        segments.pop_if_empty().extend([
            "openai",
            "deployments",
            deployment,
            "chat",
            "completions",
        ]);
    }
    if !url.query_pairs().any(|(k, _)| k == "api-version") {
        url.query_pairs_mut().append_pair("api-version", version);
    }
    Ok(url)
}

/// A JSON response; every answer of this server is JSON, errors included, so that clients such
/// as the lab's script can always read it.
fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, json!({ "error": message.into() }))
}

#[derive(Deserialize)]
struct ChatRequest {
    message: String,
}

async fn chat(
    State(backend): State<Arc<Backend>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {} KiB",
                    MAX_BODY_BYTES / 1024
                ),
            );
        }
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {}", rejection.body_text()),
            );
        }
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the request body is not JSON ({e}); send {{\"message\": \"...\"}}"),
            );
        }
    };
    let request: ChatRequest = match serde_json::from_value(value) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("expected {{\"message\": \"...\"}}: {e}"),
            );
        }
    };
    if request.message.trim().is_empty() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "message must not be empty",
        );
    }
    match &backend.mode {
        Mode::Offline => json_response(
            StatusCode::OK,
            json!({
                "model": backend.model,
                "reply": format!(
                    "[offline: AZURE_API_URL is not set, no model was called] {} received: {}",
                    backend.model, request.message
                ),
                "offline": true,
            }),
        ),
        Mode::Azure {
            client,
            url,
            key,
            timeout,
        } => match ask_azure(client, url, key, &request.message).await {
            Ok((model, reply)) => {
                json_response(StatusCode::OK, json!({ "model": model, "reply": reply }))
            }
            Err(failure) => {
                let (status, message) = failure.into_response_parts(*timeout);
                // The key never reaches a log line or a response, whatever the upstream echoed.
                let message = redact(&message, key);
                eprintln!("chat: {status}: {message}");
                error(status, message)
            }
        },
    }
}

/// Why the API did not give an answer.
enum Upstream {
    Timeout,
    Unreachable(String),
    Status(StatusCode, Option<String>),
    Malformed(&'static str),
}

impl Upstream {
    fn into_response_parts(self, timeout: Duration) -> (StatusCode, String) {
        match self {
            Upstream::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                format!("the model API did not answer within {}s", timeout.as_secs()),
            ),
            Upstream::Unreachable(cause) => (
                StatusCode::BAD_GATEWAY,
                format!("cannot reach the model API: {cause}"),
            ),
            Upstream::Status(status, detail) => (
                StatusCode::BAD_GATEWAY,
                match detail {
                    Some(detail) => format!("the model API answered {status}: {detail}"),
                    None => format!("the model API answered {status}"),
                },
            ),
            Upstream::Malformed(what) => (
                StatusCode::BAD_GATEWAY,
                format!("the model API's answer {what}"),
            ),
        }
    }
}

async fn ask_azure(
    client: &reqwest::Client,
    url: &reqwest::Url,
    key: &str,
    message: &str,
) -> Result<(String, String), Upstream> {
    let sent = client
        .post(url.clone())
        .header("api-key", key)
        .json(&json!({ "messages": [{ "role": "user", "content": message }] }))
        .send()
        .await;
    let response = sent.map_err(|e| {
        if e.is_timeout() {
            Upstream::Timeout
        } else {
            Upstream::Unreachable(innermost(&e))
        }
    })?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| {
        if e.is_timeout() {
            Upstream::Timeout
        } else {
            Upstream::Unreachable(innermost(&e))
        }
    })?;
    let answer: Option<Value> = serde_json::from_slice(&body).ok();
    if !status.is_success() {
        // Azure explains failures in error.message (a missing deployment, a quota); pass it on.
        let detail = answer
            .as_ref()
            .and_then(|a| a.pointer("/error/message"))
            .and_then(Value::as_str)
            .map(|m| m.chars().take(MAX_UPSTREAM_MESSAGE).collect());
        return Err(Upstream::Status(status, detail));
    }
    let answer = answer.ok_or(Upstream::Malformed("is not JSON"))?;
    let model = answer
        .get("model")
        .and_then(Value::as_str)
        .ok_or(Upstream::Malformed("has no model"))?;
    let reply = answer
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .ok_or(Upstream::Malformed("has no choices[0].message.content"))?;
    Ok((model.to_owned(), reply.to_owned()))
}

/// The innermost cause of a client error ("Connection refused"), without reqwest's wrapping,
/// which repeats the URL on every line.
fn innermost(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

fn redact(text: &str, key: &str) -> String {
    if key.is_empty() {
        text.to_owned()
    } else {
        text.replace(key, "[redacted]")
    }
}

async fn healthz(State(backend): State<Arc<Backend>>) -> Response {
    let mode = match backend.mode {
        Mode::Offline => "offline",
        Mode::Azure { .. } => "azure",
    };
    json_response(
        StatusCode::OK,
        json!({ "status": "ok", "model": backend.model, "mode": mode }),
    )
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint: use POST /chat or GET /healthz",
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed: use POST /chat or GET /healthz",
    )
}

fn router(backend: Arc<Backend>) -> Router {
    Router::new()
        .route("/chat", post(chat))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(backend)
}

/// Resolves on SIGTERM (how Kubernetes stops a pod) or Ctrl-C, so requests in flight finish.
async fn shutdown() {
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

async fn run() -> Result<(), ConfigError> {
    let backend = Backend::from_env()?;
    let host = var("HOST").unwrap_or_else(|| "127.0.0.1".to_owned());
    let port: u16 = parsed("PORT", 5000)?;
    let addr = format!("{host}:{port}");
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ConfigError::Listen {
            addr: addr.clone(),
            source,
        })?;
    let local: SocketAddr = listener
        .local_addr()
        .map_err(|source| ConfigError::Listen { addr, source })?;
    let mode = match backend.mode {
        Mode::Offline => "offline: AZURE_API_URL is not set".to_owned(),
        Mode::Azure { ref url, .. } => format!("calling {}", url.origin().ascii_serialization()),
    };
    // Tests and scripts read the address from this line (PORT=0 picks a free port).
    println!(
        "chat backend listening on http://{local} (model {}, {mode})",
        backend.model
    );
    let served = axum::serve(listener, router(Arc::new(backend)))
        .with_graceful_shutdown(shutdown())
        .await;
    served.map_err(|source| ConfigError::Listen {
        addr: local.to_string(),
        source,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat backend: {e}");
            ExitCode::from(2)
        }
    }
}
