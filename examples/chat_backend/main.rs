//! The lab's chat backend, in Rust: the service a CanaryRelease runs in two versions, each pinned
//! to its own model, so that every answer says which version served it.
//!
//! `POST /chat` with `{"message": "..."}` asks the Azure OpenAI chat completions API and answers
//! `{"model": <the model the API reported>, "reply": <its answer>}`; `GET /healthz` answers
//! `{"status": "ok", ...}`. Without `AZURE_API_URL` it runs offline: it answers with its configured
//! model name (or `OFFLINE_RESPONSE_MODEL`) and a reply that says it is offline, at a simulated
//! speed, so demos and tests work without an API key.
//!
//! It is the lab's example backend, and the tests' too: they run it as a process, and its
//! `FAULT_*` and `OFFLINE_*` settings are how they inject faults and give each version a speed.
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
//! The parts, one module each: `config` reads and checks the environment; `offline` answers
//! without a model API, at the simulated speed, with the faults; `upstream` calls the Azure OpenAI
//! API and maps its failures (its `stream` module reads a streamed answer); `metrics` is the
//! Prometheus exposition; `server` has the routes and their handlers. This file holds what they
//! share and starts the server.
//!
//! Run it: `AZURE_MODEL_NAME=gpt-4o cargo run --example chat_backend`.

mod config;
mod metrics;
mod offline;
mod server;
mod upstream;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::json;

use crate::config::{ConfigError, parsed, var};
use crate::metrics::Metrics;
use crate::offline::{FaultSettings, Faults, Simulation};
use crate::server::{router, shutdown};
use crate::upstream::Azure;

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

struct Backend {
    model: String,
    mode: Mode,
    metrics: Metrics,
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
