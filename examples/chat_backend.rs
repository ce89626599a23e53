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
//! | `FAULT_EVERY` | offline only: every k-th `/chat` request (k, 2k, 3k, ... counting from 1) fails; k ≥ 1 | none fails |
//! | `FAULT_STATUS` | offline only: the status those requests fail with, 400 to 599; 429 and 503 also send `Retry-After: 1` | `500` |
//! | `FAULT_DELAY_MS` | offline only: milliseconds added to every `/chat` request, failing or not | `0` |
//!
//! The `FAULT_*` variables let a test or a demo make one version of a release fail on purpose, so
//! that a canary analysis has something to catch. A backend that calls the model API refuses to
//! start with any of them set: failing real requests on purpose is never what a deployment wants.
//!
//! `GET /metrics` serves the Prometheus text exposition format (version 0.0.4), named after the
//! OpenTelemetry GenAI semantic conventions as Prometheus spells them:
//!
//! - `gen_ai_client_operation_duration_seconds`, a histogram with one observation per `/chat`
//!   request, labelled `gen_ai_operation_name="chat"`, `gen_ai_provider_name="azure.ai.openai"`,
//!   `gen_ai_request_model` (`AZURE_MODEL_NAME`) and, on failures only, `error_type`: the status
//!   the backend answered with (`"500"`, `"429"`, `"502"`), or `"timeout"` when the model API did
//!   not answer in time. Successes carry no `error_type`, so `error_type!=""` selects failures.
//! - `gen_ai_client_token_usage`, a histogram of tokens per successful request, with the same
//!   operation, provider and model labels and `gen_ai_token_type` `"input"` or `"output"`. Online
//!   the counts are the API's `usage.prompt_tokens` and `usage.completion_tokens` (left out when
//!   the API does not report them); offline they are the words of the message and of the reply.
//!
//! The provider label is the same offline, so one query covers both modes. There are no namespace
//! or version labels: the scrape configuration adds them as target labels.
//!
//! Offline, `GET /fault` answers the fault settings as `{"every": k or null, "status": 500,
//! "delayMs": 0}`, and `PUT /fault` with such a document replaces them all (a field left out takes
//! its default, not its previous value) and answers the new settings; the request count restarts,
//! so after `{"every": 2}` the second request from then on fails. Online both answer 404.
//!
//! Run it: `AZURE_MODEL_NAME=gpt-4o cargo run --example chat_backend`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Largest request body accepted. A chat message is a few hundred bytes; anything near this size
/// is a mistake or an attack, and is refused before it is read into memory.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest piece of an upstream error message passed on to the caller.
const MAX_UPSTREAM_MESSAGE: usize = 300;

const DEFAULT_API_VERSION: &str = "2024-10-21";

/// `gen_ai_provider_name` of every observation, offline included, so that one query selects both
/// modes.
const PROVIDER: &str = "azure.ai.openai";

/// The GenAI semantic conventions' advice for `gen_ai.client.operation.duration`: doubling from
/// 10 ms, so both a cached answer and a long generation land in a bucket of their own.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// The GenAI semantic conventions' advice for `gen_ai.client.token.usage`: powers of 4 from a
/// one-word prompt to a long context.
const TOKEN_BUCKETS: [f64; 9] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0,
];

/// How the backend answers.
enum Mode {
    /// No API configured: answer locally, saying so, and fail on purpose when told to.
    Offline(Mutex<Faults>),
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
    metrics: Metrics,
}

/// Failures injected offline; see `FAULT_*` in the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct FaultSettings {
    /// Every `every`-th request fails; `None`, never.
    every: Option<u64>,
    status: u16,
    delay_ms: u64,
}

impl Default for FaultSettings {
    fn default() -> Self {
        FaultSettings {
            every: None,
            status: 500,
            delay_ms: 0,
        }
    }
}

impl FaultSettings {
    fn from_env() -> Result<FaultSettings, ConfigError> {
        let defaults = FaultSettings::default();
        let settings = FaultSettings {
            every: parsed_optional("FAULT_EVERY")?,
            status: parsed("FAULT_STATUS", defaults.status)?,
            delay_ms: parsed("FAULT_DELAY_MS", defaults.delay_ms)?,
        };
        settings
            .check()
            .map_err(|(name, _, reason)| ConfigError::Invalid {
                name,
                value: var(name).unwrap_or_default(),
                reason: reason.to_owned(),
            })?;
        Ok(settings)
    }

    /// Refuses what parses but cannot mean anything: a zero period (no request is the 0th) or a
    /// "failure" status that is not one (a canary analysis counts 4xx and 5xx only). The error
    /// names the setting as the environment and as `PUT /fault` spell it.
    fn check(&self) -> Result<(), (&'static str, &'static str, &'static str)> {
        if self.every == Some(0) {
            return Err((
                "FAULT_EVERY",
                "every",
                "must be 1 or more (every k-th request fails)",
            ));
        }
        if !(400..=599).contains(&self.status) {
            return Err((
                "FAULT_STATUS",
                "status",
                "must be an HTTP error status, 400 to 599",
            ));
        }
        Ok(())
    }
}

/// The fault settings and the requests counted since they were set.
struct Faults {
    settings: FaultSettings,
    requests: u64,
}

impl Faults {
    /// Counts one request and says how long it waits and whether it then fails with that status.
    fn next(&mut self) -> (Duration, Option<StatusCode>) {
        self.requests += 1;
        let settings = self.settings;
        let fails = settings
            .every
            .is_some_and(|every| self.requests.is_multiple_of(every));
        // check() keeps status within 400..=599, which from_u16 always accepts.
        let status =
            StatusCode::from_u16(settings.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            Duration::from_millis(settings.delay_ms),
            fails.then_some(status),
        )
    }
}

/// `/metrics`: the GenAI client histograms.
struct Metrics {
    registry: Registry,
    model: String,
    duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    tokens: Family<TokenLabels, Histogram, fn() -> Histogram>,
}

/// The labels of `gen_ai_client_operation_duration_seconds`. Operation and provider are the same
/// for every series, so they are written out rather than stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct OperationLabels {
    model: String,
    /// `None` on success, and then no label at all: an absent label is what `error_type=""`
    /// matches in PromQL, and there is no empty value for a scrape to misread.
    error_type: Option<String>,
}

impl EncodeLabelSet for OperationLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        common_labels(encoder, &self.model)?;
        if let Some(error_type) = &self.error_type {
            ("error_type", error_type.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TokenLabels {
    model: String,
    token_type: &'static str,
}

impl EncodeLabelSet for TokenLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        common_labels(encoder, &self.model)?;
        ("gen_ai_token_type", self.token_type).encode(encoder.encode_label())
    }
}

fn common_labels(encoder: &mut LabelSetEncoder, model: &str) -> Result<(), std::fmt::Error> {
    ("gen_ai_operation_name", "chat").encode(encoder.encode_label())?;
    ("gen_ai_provider_name", PROVIDER).encode(encoder.encode_label())?;
    ("gen_ai_request_model", model).encode(encoder.encode_label())
}

/// How a `/chat` request ended, as the metrics record it.
enum Outcome {
    /// Answered; the token counts when known.
    Answered {
        input: Option<u64>,
        output: Option<u64>,
    },
    /// Failed; the `error_type` label.
    Failed(String),
}

impl Metrics {
    fn new(model: &str) -> Metrics {
        let mut registry = Registry::default();
        let duration: Family<OperationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register_with_unit(
            "gen_ai_client_operation_duration",
            "Duration of GenAI chat operations: one observation per /chat request, failures \
             included (labelled error_type); requests refused as malformed are not counted",
            Unit::Seconds,
            duration.clone(),
        );
        let tokens: Family<TokenLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(TOKEN_BUCKETS));
        // No unit suffix: the semantic conventions' unit is the annotation `{token}`, which
        // Prometheus names leave out.
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens used by successful /chat requests, by gen_ai_token_type (input or output)",
            tokens.clone(),
        );
        let metrics = Metrics {
            registry,
            model: model.to_owned(),
            duration,
            tokens,
        };
        // The success series exist, at zero, from the first scrape on: a series that appears with
        // its first request makes rate() miss that request.
        let _ = metrics.duration.get_or_create(&metrics.operation(None));
        for token_type in ["input", "output"] {
            let _ = metrics.tokens.get_or_create(&metrics.token(token_type));
        }
        metrics
    }

    fn operation(&self, error_type: Option<String>) -> OperationLabels {
        OperationLabels {
            model: self.model.clone(),
            error_type,
        }
    }

    fn token(&self, token_type: &'static str) -> TokenLabels {
        TokenLabels {
            model: self.model.clone(),
            token_type,
        }
    }

    fn record(&self, elapsed: Duration, outcome: Outcome) {
        match outcome {
            Outcome::Answered { input, output } => {
                self.duration
                    .get_or_create(&self.operation(None))
                    .observe(elapsed.as_secs_f64());
                for (token_type, count) in [("input", input), ("output", output)] {
                    if let Some(count) = count {
                        // Token counts are far below 2^53, where f64 stops being exact.
                        self.tokens
                            .get_or_create(&self.token(token_type))
                            .observe(count as f64);
                    }
                }
            }
            Outcome::Failed(error_type) => self
                .duration
                .get_or_create(&self.operation(Some(error_type)))
                .observe(elapsed.as_secs_f64()),
        }
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
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
    #[error(
        "{0} is set, but AZURE_API_URL is too: faults are injected only offline, never into \
         requests to the model API"
    )]
    OfflineOnly(&'static str),
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
    Ok(parsed_optional(name)?.unwrap_or(default))
}

fn parsed_optional<T: std::str::FromStr>(name: &'static str) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(None),
        Some(value) => value
            .trim()
            .parse()
            .map(Some)
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
        let metrics = Metrics::new(&model);
        let Some(endpoint) = var("AZURE_API_URL") else {
            let faults = Faults {
                settings: FaultSettings::from_env()?,
                requests: 0,
            };
            return Ok(Backend {
                model,
                mode: Mode::Offline(Mutex::new(faults)),
                metrics,
            });
        };
        if let Some(name) = FAULT_VARIABLES.into_iter().find(|name| var(name).is_some()) {
            return Err(ConfigError::OfflineOnly(name));
        }
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
            metrics,
        })
    }
}

const FAULT_VARIABLES: [&str; 3] = ["FAULT_EVERY", "FAULT_STATUS", "FAULT_DELAY_MS"];

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
        Mode::Offline(faults) => answer_offline(&backend.model, faults, &request.message).await,
        Mode::Azure {
            client,
            url,
            key,
            timeout,
        } => match ask_azure(client, url, key, &request.message).await {
            Ok(answer) => (
                json_response(
                    StatusCode::OK,
                    json!({ "model": answer.model, "reply": answer.reply }),
                ),
                Outcome::Answered {
                    input: answer.input_tokens,
                    output: answer.output_tokens,
                },
            ),
            Err(failure) => {
                let timed_out = matches!(failure, Upstream::Timeout);
                let (status, message) = failure.into_response_parts(*timeout);
                // The key never reaches a log line or a response, whatever the upstream echoed.
                let message = redact(&message, key);
                eprintln!("chat: {status}: {message}");
                let error_type = if timed_out {
                    "timeout".to_owned()
                } else {
                    status.as_str().to_owned()
                };
                (error(status, message), Outcome::Failed(error_type))
            }
        },
    };
    backend.metrics.record(started.elapsed(), outcome);
    response
}

async fn answer_offline(model: &str, faults: &Mutex<Faults>, message: &str) -> (Response, Outcome) {
    // The lock guards plain numbers that every write leaves whole, so a poisoned one is still
    // right; it is never held across the wait.
    let (delay, failure) = faults.lock().unwrap_or_else(PoisonError::into_inner).next();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = failure {
        let mut response = error(
            status,
            format!("injected fault: this request fails with {status} (FAULT_EVERY, PUT /fault)"),
        );
        // What a throttled or overloaded service tells its clients: try again shortly.
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        return (response, Outcome::Failed(status.as_str().to_owned()));
    }
    let reply = format!(
        "[offline: AZURE_API_URL is not set, no model was called] {model} received: {message}"
    );
    let outcome = Outcome::Answered {
        input: Some(words(message)),
        output: Some(words(&reply)),
    };
    let response = json_response(
        StatusCode::OK,
        json!({ "model": model, "reply": reply, "offline": true }),
    );
    (response, outcome)
}

/// Offline stand-in for a token count: there is no tokenizer, and words are close enough to show
/// a version whose answers grow.
fn words(text: &str) -> u64 {
    u64::try_from(text.split_whitespace().count()).unwrap_or(u64::MAX)
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

/// A successful answer of the model API.
struct Answer {
    model: String,
    reply: String,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

async fn ask_azure(
    client: &reqwest::Client,
    url: &reqwest::Url,
    key: &str,
    message: &str,
) -> Result<Answer, Upstream> {
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
    let tokens = |field: &str| {
        answer
            .get("usage")
            .and_then(|usage| usage.get(field))
            .and_then(Value::as_u64)
    };
    Ok(Answer {
        model: model.to_owned(),
        reply: reply.to_owned(),
        input_tokens: tokens("prompt_tokens"),
        output_tokens: tokens("completion_tokens"),
    })
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
        Mode::Offline(_) => "offline",
        Mode::Azure { .. } => "azure",
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
        Mode::Offline(faults) => Some(faults),
        Mode::Azure { .. } => None,
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
    let settings: FaultSettings = match json_body(
        body,
        r#"{"every": k or null, "status": 400 to 599, "delayMs": 0}"#,
    ) {
        Ok(settings) => settings,
        Err((status, message)) => return error(status, message),
    };
    if let Err((_, field, reason)) = settings.check() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field} {reason}"),
        );
    }
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

fn router(backend: Arc<Backend>) -> Router {
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
    let mode = match &backend.mode {
        Mode::Offline(faults) => {
            let settings = faults
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .settings;
            if settings == FaultSettings::default() {
                "offline: AZURE_API_URL is not set".to_owned()
            } else {
                format!(
                    "offline: AZURE_API_URL is not set; faults {}",
                    json!(settings)
                )
            }
        }
        Mode::Azure { url, .. } => format!("calling {}", url.origin().ascii_serialization()),
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
