//! The lab's chat backend, in Rust: the service a CanaryRelease runs in two versions, each pinned
//! to its own model, so that every answer says which version served it.
//!
//! `POST /chat` with `{"message": "..."}` asks the Azure OpenAI chat completions API and answers
//! `{"model": <the model the API reported>, "reply": <its answer>}`; `GET /healthz` answers
//! `{"status": "ok", ...}`. Without `AZURE_API_URL` it runs offline: it answers with its configured
//! model name (or `OFFLINE_RESPONSE_MODEL`) and a reply that says it is offline, at a simulated
//! speed, so demos and tests work without an API key.
//!
//! Environment (the lab's ConfigMap and Secret keys):
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `AZURE_MODEL_NAME` | deployment (model) to call; required | |
//! | `AZURE_API_URL` | endpoint, e.g. `https://NAME.openai.azure.com/`, or a full chat completions URL | offline mode |
//! | `AZURE_API_KEY` | API key; required with `AZURE_API_URL` | |
//! | `AZURE_API_VERSION` | `api-version` query parameter; see streaming below | `2024-10-21` |
//! | `UPSTREAM_TIMEOUT_SECONDS` | longest wait for the API's whole answer, stream included | `30` |
//! | `UPSTREAM_STREAM` | `false` asks for the answer in one piece, for an API that cannot stream | `true` |
//! | `PORT` | port to listen on | `5000` |
//! | `HOST` | address to listen on; `0.0.0.0` in a pod | `127.0.0.1` |
//! | `OFFLINE_RESPONSE_MODEL` | offline only: the model the answers name | `AZURE_MODEL_NAME` |
//! | `OFFLINE_TTFT_MS` | offline only: milliseconds to the first chunk of an answer | `20` |
//! | `OFFLINE_TOKENS_PER_SECOND` | offline only: output tokens a second after the first chunk; > 0 | `1000` |
//! | `OFFLINE_OUTPUT_TOKENS` | offline only: output tokens of every answer | the reply's words |
//! | `FAULT_EVERY` | offline only: every k-th `/chat` request (k, 2k, 3k, ... counting from 1) fails; k ≥ 1 | none fails |
//! | `FAULT_PERCENT` | offline only: p percent of the `/chat` requests fail, 0 to 100, spread evenly: request i fails when ⌊i·p/100⌋ > ⌊(i−1)·p/100⌋; not with `FAULT_EVERY` | none fails |
//! | `FAULT_STATUS` | offline only: the status those requests fail with, 400 to 599; 429 and 503 also send `Retry-After: 1` | `500` |
//! | `FAULT_DELAY_MS` | offline only: milliseconds added to every `/chat` request, failing or not | `0` |
//! | `FAULT_TTFT_MS` | offline only: milliseconds added to the time to first chunk of every answer | `0` |
//!
//! Online, the backend asks for a streamed answer (`"stream": true`) and reads its server-sent
//! events until `data: [DONE]`: the reply is the chunks' `choices[0].delta.content` put together,
//! the model the first non-empty `model` of a chunk, and the time to first chunk runs until the
//! first chunk with content. The caller still gets one JSON document, at the end. With an
//! `api-version` of `2024-10-21` or later (or one that is not a date, such as `preview`) it also
//! sends `"stream_options": {"include_usage": true}`, and the API reports the token usage in a last
//! chunk. Earlier versions do not define `stream_options` (`2024-06-01`, the GA version before
//! it, does not), so it is not sent to them and no token usage is recorded for their streamed
//! answers: a tokens-per-second check then has no data. `UPSTREAM_STREAM=false` asks for the
//! whole answer at once, which reports its usage; there is no first chunk then, so no time to
//! first chunk is recorded, and output tokens over the duration undercounts the generation speed
//! (it includes the wait for the first token).
//!
//! Upstream failures: a 429 is passed on as 429 with the API's `Retry-After` (or its
//! `retry-after-ms`, rounded up to whole seconds), so callers back off as the API asked; a
//! timeout becomes 504; anything else (a 5xx, another 4xx, an answer that cannot be read) 502.
//!
//! Offline, an answered request waits `FAULT_DELAY_MS` + `OFFLINE_TTFT_MS` + `FAULT_TTFT_MS`, which
//! is its time to first chunk, then `OFFLINE_OUTPUT_TOKENS` / `OFFLINE_TOKENS_PER_SECOND` seconds
//! more, and answers. A failing request waits `FAULT_DELAY_MS` only. With the defaults an answer
//! to "hi" (a reply of 12 words) takes about 32 ms, and no CPU while it waits. The `FAULT_*`
//! variables let a test or a demo make one version of a release fail or slow down on purpose, so
//! that a canary analysis has something to catch; the `OFFLINE_*` ones give each version (each
//! process) a speed of its own. A backend that calls the model API refuses to start with any of
//! them set: failing real requests on purpose is never what a deployment wants.
//!
//! `GET /metrics` serves the Prometheus text exposition format (version 0.0.4), named after the
//! OpenTelemetry GenAI semantic conventions as Prometheus spells them:
//!
//! - `gen_ai_client_operation_duration_seconds`, a histogram with one observation per `/chat`
//!   request, labelled `gen_ai_operation_name="chat"`, `gen_ai_provider_name="azure.ai.openai"`,
//!   `gen_ai_request_model` (`AZURE_MODEL_NAME`); on successes `gen_ai_response_model` (the model
//!   the API reported; offline `OFFLINE_RESPONSE_MODEL`); on failures only `error_type`: `"429"`
//!   when the API (or a fault) answered 429, `"timeout"` when the API did not answer in time,
//!   otherwise the status the backend answered with (`"500"`, `"502"`, `"503"`, ...). Successes
//!   carry no `error_type`, so `error_type=""` selects them and `error_type!=""` the failures.
//! - `gen_ai_client_operation_time_to_first_chunk_seconds`, a histogram with the same buckets and
//!   the labels of the successes, with one observation per successful streamed request (offline:
//!   per success). It runs from the same start as the duration, so over successes the duration
//!   minus the time to first chunk is the generation time.
//! - `gen_ai_client_token_usage`, a histogram of tokens per successful request, with the labels of
//!   the successes and `gen_ai_token_type` `"input"` or `"output"`. Online the counts are the
//!   API's `usage.prompt_tokens` and `usage.completion_tokens` (left out when the API does not
//!   report them); offline the words of the message and `OFFLINE_OUTPUT_TOKENS` or the words of
//!   the reply.
//!
//! The provider label is the same offline, so one query covers both modes. There are no namespace
//! or version labels: the scrape configuration adds them as target labels. Offline the success
//! series exist, at zero, from the start; online the model that answers is known only from the
//! first answer, so each series appears with its first observation.
//!
//! Offline, `GET /fault` answers the fault settings as `{"every": k or null, "percent": p or null,
//! "status": 500, "delayMs": 0, "ttftMs": 0}`, and `PUT /fault` with such a document replaces them
//! all (a field left out takes its default, not its previous value) and answers the new settings;
//! the request count restarts, so after `{"every": 2}` the second request from then on fails.
//! Online both answer 404.
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
use axum::http::{HeaderValue, StatusCode, header};
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

/// Largest answer read from the model API, stream included: far above a chat reply, and a bound
/// on what a broken or hostile upstream can make the backend hold.
const MAX_UPSTREAM_BYTES: usize = 8 * 1024 * 1024;

/// Longest piece of an upstream error message passed on to the caller.
const MAX_UPSTREAM_MESSAGE: usize = 300;

const DEFAULT_API_VERSION: &str = "2024-10-21";

/// The first `api-version` whose chat completions request defines `stream_options`, as its
/// published specification shows; the GA version before (`2024-06-01`) does not.
const FIRST_VERSION_WITH_STREAM_USAGE: &str = "2024-10-21";

/// `gen_ai_provider_name` of every observation, offline included, so that one query selects both
/// modes.
const PROVIDER: &str = "azure.ai.openai";

/// The GenAI semantic conventions' advice for `gen_ai.client.operation.duration`: doubling from
/// 10 ms, so both a cached answer and a long generation land in a bucket of their own. The time
/// to first chunk uses them too, so that the two can be read side by side.
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
    /// No API configured: answer locally, saying so, at a simulated speed, and fail on purpose
    /// when told to.
    Offline {
        simulation: Simulation,
        faults: Mutex<Faults>,
    },
    Azure(Azure),
}

/// How to reach the model API.
struct Azure {
    client: reqwest::Client,
    url: reqwest::Url,
    key: String,
    timeout: Duration,
    /// Ask for a streamed answer (`UPSTREAM_STREAM`).
    stream: bool,
    /// Ask a stream to report its token usage; only API versions that define it accept it.
    stream_usage: bool,
}

struct Backend {
    model: String,
    mode: Mode,
    metrics: Metrics,
}

/// The speed of offline answers; see `OFFLINE_*` in the module documentation.
#[derive(Debug)]
struct Simulation {
    response_model: String,
    ttft: Duration,
    tokens_per_second: f64,
    /// `None`: the words of the reply.
    output_tokens: Option<u64>,
}

impl Simulation {
    fn from_env(model: &str) -> Result<Simulation, ConfigError> {
        let tokens_per_second = parsed("OFFLINE_TOKENS_PER_SECOND", 1000.0_f64)?;
        if !(tokens_per_second.is_finite() && tokens_per_second > 0.0) {
            return Err(ConfigError::Invalid {
                name: "OFFLINE_TOKENS_PER_SECOND",
                value: var("OFFLINE_TOKENS_PER_SECOND").unwrap_or_default(),
                reason: "must be a number above 0".to_owned(),
            });
        }
        Ok(Simulation {
            response_model: var("OFFLINE_RESPONSE_MODEL").unwrap_or_else(|| model.to_owned()),
            ttft: Duration::from_millis(parsed("OFFLINE_TTFT_MS", 20_u64)?),
            tokens_per_second,
            output_tokens: parsed_optional("OFFLINE_OUTPUT_TOKENS")?,
        })
    }

    /// How long generating `tokens` takes after the first chunk.
    fn generation(&self, tokens: u64) -> Duration {
        // Token counts are far below 2^53, where f64 stops being exact. A rate so low that the
        // time overflows is the operator's choice: the request then waits as good as forever.
        Duration::try_from_secs_f64(tokens as f64 / self.tokens_per_second).unwrap_or(Duration::MAX)
    }
}

/// Failures injected offline; see `FAULT_*` in the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct FaultSettings {
    /// Every `every`-th request fails; `None`, never.
    every: Option<u64>,
    /// That share of requests fails, spread evenly; `None`, none.
    percent: Option<u64>,
    status: u16,
    delay_ms: u64,
    ttft_ms: u64,
}

impl Default for FaultSettings {
    fn default() -> Self {
        FaultSettings {
            every: None,
            percent: None,
            status: 500,
            delay_ms: 0,
            ttft_ms: 0,
        }
    }
}

impl FaultSettings {
    fn from_env() -> Result<FaultSettings, ConfigError> {
        let defaults = FaultSettings::default();
        let settings = FaultSettings {
            every: parsed_optional("FAULT_EVERY")?,
            percent: parsed_optional("FAULT_PERCENT")?,
            status: parsed("FAULT_STATUS", defaults.status)?,
            delay_ms: parsed("FAULT_DELAY_MS", defaults.delay_ms)?,
            ttft_ms: parsed("FAULT_TTFT_MS", defaults.ttft_ms)?,
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

    /// Refuses what parses but cannot mean anything: a zero period (no request is the 0th), a
    /// share above the whole, two ways of choosing the failing requests at once, or a "failure"
    /// status that is not one (a canary analysis counts 4xx and 5xx only). The error names the
    /// setting as the environment and as `PUT /fault` spell it.
    fn check(&self) -> Result<(), (&'static str, &'static str, &'static str)> {
        if self.every == Some(0) {
            return Err((
                "FAULT_EVERY",
                "every",
                "must be 1 or more (every k-th request fails)",
            ));
        }
        if self.percent.is_some_and(|p| p > 100) {
            return Err(("FAULT_PERCENT", "percent", "must be 0 to 100"));
        }
        if self.every.is_some() && self.percent.is_some() {
            return Err((
                "FAULT_PERCENT",
                "percent",
                "excludes every (FAULT_EVERY): requests fail by share or by period, not both",
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

/// What the faults do to one request.
struct Planned {
    /// Wait before anything else (`FAULT_DELAY_MS`).
    delay: Duration,
    /// Added to the time to first chunk of an answer (`FAULT_TTFT_MS`).
    ttft: Duration,
    /// Fail with this status after the delay.
    failure: Option<StatusCode>,
}

impl Faults {
    /// Counts one request and plans it.
    fn next(&mut self) -> Planned {
        self.requests += 1;
        let settings = self.settings;
        let i = u128::from(self.requests);
        let fails = settings
            .every
            .is_some_and(|every| self.requests.is_multiple_of(every))
            || settings.percent.is_some_and(|p| {
                // Request i fails when it carries the running count of failures up by one: an
                // exact share of every prefix, spread as evenly as whole requests allow.
                let p = u128::from(p);
                i * p / 100 > (i - 1) * p / 100
            });
        // check() keeps status within 400..=599, which from_u16 always accepts.
        let status =
            StatusCode::from_u16(settings.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Planned {
            delay: Duration::from_millis(settings.delay_ms),
            ttft: Duration::from_millis(settings.ttft_ms),
            failure: fails.then_some(status),
        }
    }
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// `/metrics`: the GenAI client histograms.
struct Metrics {
    registry: Registry,
    model: String,
    duration: Histograms<OperationLabels>,
    first_chunk: Histograms<OperationLabels>,
    tokens: Histograms<TokenLabels>,
}

/// The labels of `gen_ai_client_operation_duration_seconds` and of the time to first chunk.
/// Operation and provider are the same for every series, so they are written out rather than
/// stored. An absent label is what `error_type=""` matches in PromQL, and there is no empty value
/// for a scrape to misread, so what a request did not have is left out rather than empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct OperationLabels {
    request_model: String,
    /// `Some` on success only: a failed request has no answer to name a model.
    response_model: Option<String>,
    /// `Some` on failure only.
    error_type: Option<String>,
}

impl EncodeLabelSet for OperationLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        common_labels(encoder, &self.request_model)?;
        if let Some(response_model) = &self.response_model {
            ("gen_ai_response_model", response_model.as_str()).encode(encoder.encode_label())?;
        }
        if let Some(error_type) = &self.error_type {
            ("error_type", error_type.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TokenLabels {
    request_model: String,
    response_model: String,
    token_type: &'static str,
}

impl EncodeLabelSet for TokenLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        common_labels(encoder, &self.request_model)?;
        ("gen_ai_response_model", self.response_model.as_str()).encode(encoder.encode_label())?;
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
    /// Answered by `response_model`; the time to its first chunk when it was streamed, and the
    /// token counts when known.
    Answered {
        response_model: String,
        first_chunk: Option<Duration>,
        input: Option<u64>,
        output: Option<u64>,
    },
    /// Failed; the `error_type` label.
    Failed(String),
}

/// The failures every backend can answer with, whatever its settings: the upstream's 429 passed
/// through, its other failures as 502, and a timeout.
const EXPECTED_ERRORS: [&str; 3] = ["429", "502", "timeout"];

impl Metrics {
    /// `response_model` is the model the answers will name when it is known beforehand (offline),
    /// so that the success series exist from the start.
    fn new(model: &str, response_model: Option<&str>) -> Metrics {
        let mut registry = Registry::default();
        let duration: Histograms<OperationLabels> =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register_with_unit(
            "gen_ai_client_operation_duration",
            "Duration of GenAI chat operations: one observation per /chat request, failures \
             included (labelled error_type); requests refused as malformed are not counted",
            Unit::Seconds,
            duration.clone(),
        );
        let first_chunk: Histograms<OperationLabels> =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register_with_unit(
            "gen_ai_client_operation_time_to_first_chunk",
            "Time from the start of a successful streamed /chat request to the first chunk of \
             its answer with content, on the same clock as its duration",
            Unit::Seconds,
            first_chunk.clone(),
        );
        let tokens: Histograms<TokenLabels> =
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
            first_chunk,
            tokens,
        };
        // The success series exist, at zero, from the first scrape on: a series that appears with
        // its first request makes rate() miss that request. Online the response model is known
        // only from the first answer.
        if let Some(response_model) = response_model {
            let labels = metrics.answered(response_model);
            let _ = metrics.duration.get_or_create(&labels);
            let _ = metrics.first_chunk.get_or_create(&labels);
            for token_type in ["input", "output"] {
                let _ = metrics
                    .tokens
                    .get_or_create(&metrics.token(response_model, token_type));
            }
        }
        // Likewise the failures this backend answers with, so that the first failure of each
        // kind is counted: without it, one error in ten requests reads as none.
        for error_type in EXPECTED_ERRORS {
            metrics.expect_failure(error_type);
        }
        metrics
    }

    /// Creates the failure series of `error_type` at zero, if it does not exist yet.
    fn expect_failure(&self, error_type: &str) {
        let _ = self.duration.get_or_create(&OperationLabels {
            request_model: self.model.clone(),
            response_model: None,
            error_type: Some(error_type.to_owned()),
        });
    }

    fn answered(&self, response_model: &str) -> OperationLabels {
        OperationLabels {
            request_model: self.model.clone(),
            response_model: Some(response_model.to_owned()),
            error_type: None,
        }
    }

    fn token(&self, response_model: &str, token_type: &'static str) -> TokenLabels {
        TokenLabels {
            request_model: self.model.clone(),
            response_model: response_model.to_owned(),
            token_type,
        }
    }

    /// Records one request. The time to first chunk and the tokens are recorded for successes
    /// only, like the duration series without `error_type`, so that sums over the three cover the
    /// same requests.
    fn record(&self, elapsed: Duration, outcome: Outcome) {
        match outcome {
            Outcome::Answered {
                response_model,
                first_chunk,
                input,
                output,
            } => {
                let labels = self.answered(&response_model);
                self.duration
                    .get_or_create(&labels)
                    .observe(elapsed.as_secs_f64());
                if let Some(first_chunk) = first_chunk {
                    self.first_chunk
                        .get_or_create(&labels)
                        .observe(first_chunk.as_secs_f64());
                }
                for (token_type, count) in [("input", input), ("output", output)] {
                    if let Some(count) = count {
                        // Token counts are far below 2^53, where f64 stops being exact.
                        self.tokens
                            .get_or_create(&self.token(&response_model, token_type))
                            .observe(count as f64);
                    }
                }
            }
            Outcome::Failed(error_type) => self
                .duration
                .get_or_create(&OperationLabels {
                    request_model: self.model.clone(),
                    response_model: None,
                    error_type: Some(error_type),
                })
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
        "{0} is set, but AZURE_API_URL is too: the FAULT_* and OFFLINE_* settings shape offline \
         answers only, and faults are never injected into requests to the model API"
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
        let Some(endpoint) = var("AZURE_API_URL") else {
            let simulation = Simulation::from_env(&model)?;
            let faults = Faults {
                settings: FaultSettings::from_env()?,
                requests: 0,
            };
            let metrics = Metrics::new(&model, Some(&simulation.response_model));
            metrics.expect_failure(&faults.settings.status.to_string());
            return Ok(Backend {
                model,
                mode: Mode::Offline {
                    simulation,
                    faults: Mutex::new(faults),
                },
                metrics,
            });
        };
        if let Some(name) = OFFLINE_VARIABLES
            .into_iter()
            .find(|name| var(name).is_some())
        {
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
        let stream = parsed("UPSTREAM_STREAM", true)?;
        // A full URL may name its own api-version; that is the one the API sees.
        let stream_usage = url
            .query_pairs()
            .find(|(k, _)| k == "api-version")
            .is_none_or(|(_, v)| reports_stream_usage(&v));
        // reqwest is built without a TLS provider of its own; use ring, as the rest of the crate.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()?;
        Ok(Backend {
            model: model.clone(),
            mode: Mode::Azure(Azure {
                client,
                url,
                key,
                timeout,
                stream,
                stream_usage,
            }),
            metrics: Metrics::new(&model, None),
        })
    }
}

/// The settings that only an offline backend reads; an online one refuses to start with any.
const OFFLINE_VARIABLES: [&str; 9] = [
    "FAULT_EVERY",
    "FAULT_PERCENT",
    "FAULT_STATUS",
    "FAULT_DELAY_MS",
    "FAULT_TTFT_MS",
    "OFFLINE_RESPONSE_MODEL",
    "OFFLINE_TTFT_MS",
    "OFFLINE_TOKENS_PER_SECOND",
    "OFFLINE_OUTPUT_TOKENS",
];

/// Whether `api-version` defines `stream_options`. Azure's versions are dates, previews with a
/// suffix (`2025-01-01-preview`); a version that is not a date (`preview`, `latest`) is newer than
/// all of them.
fn reports_stream_usage(version: &str) -> bool {
    let date = version.get(..10).unwrap_or_default();
    let is_date = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    // Same-width dates compare as strings.
    !is_date || date >= FIRST_VERSION_WITH_STREAM_USAGE
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

async fn pause(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

/// An offline answer: its first chunk after the delays, the rest at the simulated token rate.
/// Only the waiting is simulated; the reply is sent whole, at the end, as online.
async fn answer_offline(
    model: &str,
    simulation: &Simulation,
    faults: &Mutex<Faults>,
    message: &str,
    started: Instant,
) -> (Response, Outcome) {
    // The lock guards plain numbers that every write leaves whole, so a poisoned one is still
    // right; it is never held across a wait.
    let planned = faults.lock().unwrap_or_else(PoisonError::into_inner).next();
    if let Some(status) = planned.failure {
        pause(planned.delay).await;
        let mut response = error(
            status,
            format!(
                "injected fault: this request fails with {status} (FAULT_EVERY, FAULT_PERCENT, \
                 PUT /fault)"
            ),
        );
        // What a throttled or overloaded service tells its clients: try again shortly.
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        return (response, Outcome::Failed(status.as_str().to_owned()));
    }
    pause(
        planned
            .delay
            .saturating_add(simulation.ttft)
            .saturating_add(planned.ttft),
    )
    .await;
    let first_chunk = started.elapsed();
    let reply = format!(
        "[offline: AZURE_API_URL is not set, no model was called] {model} received: {message}"
    );
    let output = simulation.output_tokens.unwrap_or_else(|| words(&reply));
    pause(simulation.generation(output)).await;
    let response = json_response(
        StatusCode::OK,
        json!({ "model": simulation.response_model, "reply": reply, "offline": true }),
    );
    let outcome = Outcome::Answered {
        response_model: simulation.response_model.clone(),
        first_chunk: Some(first_chunk),
        input: Some(words(message)),
        output: Some(output),
    };
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
    /// The answer broke off while it was read, or the stream reported an error.
    Broken(String),
    /// 429: the API throttles this client, and may say when to come back.
    Throttled {
        retry_after: Option<HeaderValue>,
        detail: Option<String>,
    },
    Status(StatusCode, Option<String>),
    Malformed(&'static str),
}

impl Upstream {
    /// A client error while sending or reading.
    fn transport(error: &reqwest::Error, broken: bool) -> Upstream {
        if error.is_timeout() {
            Upstream::Timeout
        } else if broken {
            Upstream::Broken(innermost(error))
        } else {
            Upstream::Unreachable(innermost(error))
        }
    }

    /// The backend's answer to the caller, logged, and its `error_type`.
    fn into_response(self, azure: &Azure) -> (Response, String) {
        let with_detail = |what: String, detail: Option<String>| match detail {
            Some(detail) => format!("{what}: {detail}"),
            None => what,
        };
        let mut retry = None;
        let (status, message) = match self {
            Upstream::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the model API did not answer within {}s",
                    azure.timeout.as_secs()
                ),
            ),
            Upstream::Unreachable(cause) => (
                StatusCode::BAD_GATEWAY,
                format!("cannot reach the model API: {cause}"),
            ),
            Upstream::Broken(cause) => (
                StatusCode::BAD_GATEWAY,
                format!("the model API's answer broke off: {cause}"),
            ),
            Upstream::Throttled {
                retry_after,
                detail,
            } => {
                retry = retry_after;
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    with_detail(
                        "the model API answered 429 Too Many Requests".to_owned(),
                        detail,
                    ),
                )
            }
            Upstream::Status(status, detail) => (
                StatusCode::BAD_GATEWAY,
                with_detail(format!("the model API answered {status}"), detail),
            ),
            Upstream::Malformed(what) => (
                StatusCode::BAD_GATEWAY,
                format!("the model API's answer {what}"),
            ),
        };
        let error_type = if status == StatusCode::GATEWAY_TIMEOUT {
            "timeout".to_owned()
        } else {
            status.as_str().to_owned()
        };
        // The key never reaches a log line or a response, whatever the upstream echoed.
        let message = redact(&message, &azure.key);
        eprintln!("chat: {status}: {message}");
        let mut response = error(status, message);
        if let Some(retry) = retry {
            response.headers_mut().insert(header::RETRY_AFTER, retry);
        }
        (response, error_type)
    }
}

/// When a throttled client may try again, as `Retry-After`: the API's own `Retry-After` (seconds
/// or a date) as it is, else its `retry-after-ms` in whole seconds, rounded up so that a caller
/// never comes back too early.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<HeaderValue> {
    if let Some(value) = headers.get(header::RETRY_AFTER) {
        return Some(value.clone());
    }
    let ms: f64 = headers
        .get("retry-after-ms")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if !(ms.is_finite() && ms >= 0.0) {
        return None;
    }
    // Far below u64::MAX for any delay an API would ask for; `as` saturates beyond.
    Some(HeaderValue::from((ms / 1000.0).ceil() as u64))
}

/// A successful answer of the model API.
struct Answer {
    model: String,
    reply: String,
    /// From the start of the request to the first chunk with content; `None` when the answer
    /// came in one piece.
    first_chunk: Option<Duration>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

async fn ask_azure(azure: &Azure, message: &str, started: Instant) -> Result<Answer, Upstream> {
    let mut body = json!({ "messages": [{ "role": "user", "content": message }] });
    if azure.stream {
        body["stream"] = json!(true);
        if azure.stream_usage {
            body["stream_options"] = json!({ "include_usage": true });
        }
    }
    let mut response = azure
        .client
        .post(azure.url.clone())
        .header("api-key", &azure.key)
        .json(&body)
        .send()
        .await
        .map_err(|e| Upstream::transport(&e, false))?;
    let status = response.status();
    if !status.is_success() {
        let retry_after = retry_after(response.headers());
        // The status says what happened; an explanation that cannot be read is only a pity.
        let body = read_all(&mut response).await.unwrap_or_default();
        // Azure explains failures in error.message (a missing deployment, a quota); pass it on.
        let detail = serde_json::from_slice::<Value>(&body)
            .ok()
            .as_ref()
            .and_then(|a| a.pointer("/error/message"))
            .and_then(Value::as_str)
            .map(|m| m.chars().take(MAX_UPSTREAM_MESSAGE).collect());
        return Err(if status == StatusCode::TOO_MANY_REQUESTS {
            Upstream::Throttled {
                retry_after,
                detail,
            }
        } else {
            Upstream::Status(status, detail)
        });
    }
    // An upstream (or a proxy) that answers a stream request with one JSON document is read as
    // such, without a first chunk.
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if azure.stream && !is_json {
        read_stream(response, started).await
    } else {
        whole_answer(&read_all(&mut response).await?)
    }
}

/// The body of a response, up to [`MAX_UPSTREAM_BYTES`].
async fn read_all(response: &mut reqwest::Response) -> Result<Vec<u8>, Upstream> {
    let mut body = Vec::new();
    while let Some(bytes) = response
        .chunk()
        .await
        .map_err(|e| Upstream::transport(&e, true))?
    {
        if body.len() + bytes.len() > MAX_UPSTREAM_BYTES {
            return Err(Upstream::Malformed("is larger than 8 MiB"));
        }
        body.extend_from_slice(&bytes);
    }
    Ok(body)
}

/// A chat completion in one piece (`UPSTREAM_STREAM=false`).
fn whole_answer(body: &[u8]) -> Result<Answer, Upstream> {
    let answer: Value =
        serde_json::from_slice(body).map_err(|_| Upstream::Malformed("is not JSON"))?;
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
        first_chunk: None,
        input_tokens: tokens("prompt_tokens"),
        output_tokens: tokens("completion_tokens"),
    })
}

/// Reads a streamed chat completion: server-sent events whose data are chunks, ended by
/// `data: [DONE]`.
async fn read_stream(
    mut response: reqwest::Response,
    started: Instant,
) -> Result<Answer, Upstream> {
    let mut stream = Stream::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut read = 0;
    while !stream.done {
        let Some(bytes) = response
            .chunk()
            .await
            .map_err(|e| Upstream::transport(&e, true))?
        else {
            // The end: a last line without its newline still counts, then the event it ends.
            if !pending.is_empty() {
                stream.line(&std::mem::take(&mut pending), started)?;
            }
            stream.line(b"", started)?;
            break;
        };
        read += bytes.len();
        if read > MAX_UPSTREAM_BYTES {
            return Err(Upstream::Malformed("is larger than 8 MiB"));
        }
        pending.extend_from_slice(&bytes);
        // Lines are split on bytes, so a character cut in two by the network is whole again by
        // the time its line is decoded.
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            stream.line(&line, started)?;
            if stream.done {
                break;
            }
        }
    }
    if !stream.done {
        return Err(Upstream::Broken(
            "the stream ended before data: [DONE]".to_owned(),
        ));
    }
    stream.answer(started)
}

/// What a streamed answer has said so far.
#[derive(Default)]
struct Stream {
    /// The `data` of the event being read, its lines joined by newlines as the format says.
    data: String,
    model: Option<String>,
    reply: String,
    first_chunk: Option<Duration>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    /// `data: [DONE]` was read.
    done: bool,
}

impl Stream {
    fn line(&mut self, line: &[u8], started: Instant) -> Result<(), Upstream> {
        let line = std::str::from_utf8(line).map_err(|_| Upstream::Malformed("is not UTF-8"))?;
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            return self.event(started);
        }
        // The other fields (`event:`, `id:`, `retry:`) and comments (`:`) say nothing the answer
        // needs.
        if let Some(data) = line.strip_prefix("data:") {
            if !self.data.is_empty() {
                self.data.push('\n');
            }
            self.data.push_str(data.strip_prefix(' ').unwrap_or(data));
        }
        Ok(())
    }

    /// Takes in the event just ended by a blank line.
    fn event(&mut self, started: Instant) -> Result<(), Upstream> {
        let data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return Ok(());
        }
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: Value = serde_json::from_str(&data)
            .map_err(|_| Upstream::Malformed("has a chunk that is not JSON"))?;
        if let Some(message) = chunk.pointer("/error/message").and_then(Value::as_str) {
            return Err(Upstream::Broken(
                message.chars().take(MAX_UPSTREAM_MESSAGE).collect(),
            ));
        }
        // Azure's first chunk, with the prompt's content filter results, names no model.
        if self.model.is_none() {
            self.model = chunk
                .get("model")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(str::to_owned);
        }
        let content = chunk
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !content.is_empty() {
            self.first_chunk.get_or_insert_with(|| started.elapsed());
            self.reply.push_str(content);
        }
        // Only the last chunk has usage (with `include_usage`); the others have null.
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.input_tokens = usage.get("prompt_tokens").and_then(Value::as_u64);
            self.output_tokens = usage.get("completion_tokens").and_then(Value::as_u64);
        }
        Ok(())
    }

    fn answer(self, started: Instant) -> Result<Answer, Upstream> {
        let model = self.model.ok_or(Upstream::Malformed("has no model"))?;
        Ok(Answer {
            model,
            reply: self.reply,
            // An answer without content (an empty reply) had its first chunk when it ended:
            // nothing was generated after it.
            first_chunk: Some(self.first_chunk.unwrap_or_else(|| started.elapsed())),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
        })
    }
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
        Mode::Offline { simulation, faults } => {
            let settings = faults
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .settings;
            let mut mode = format!(
                "offline: AZURE_API_URL is not set; answering as {}, first chunk after {} ms, \
                 {} tokens/s",
                simulation.response_model,
                simulation.ttft.as_millis(),
                simulation.tokens_per_second
            );
            if settings != FaultSettings::default() {
                mode.push_str(&format!("; faults {}", json!(settings)));
            }
            mode
        }
        Mode::Azure(azure) => format!(
            "calling {}, {}",
            azure.url.origin().ascii_serialization(),
            match (azure.stream, azure.stream_usage) {
                (false, _) => "not streaming",
                (true, true) => "streaming with usage",
                (true, false) => "streaming without usage (api-version before 2024-10-21)",
            }
        ),
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
