//! Offline answers: the simulated speed (`OFFLINE_*`) and the faults injected on purpose
//! (`FAULT_*`, `PUT /fault`).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{ConfigError, parsed, parsed_optional, var};
use crate::metrics::Outcome;
use crate::server::{error, json_response};

/// The speed of offline answers; see `OFFLINE_*` in the module documentation.
#[derive(Debug)]
pub(crate) struct Simulation {
    pub(crate) response_model: String,
    pub(crate) ttft: Duration,
    pub(crate) tokens_per_second: f64,
    /// `None`: the words of the reply.
    output_tokens: Option<u64>,
}

impl Simulation {
    pub(crate) fn from_env(model: &str) -> Result<Simulation, ConfigError> {
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
pub(crate) struct FaultSettings {
    /// Every `every`-th request fails; `None`, never.
    every: Option<u64>,
    /// That share of requests fails, spread evenly; `None`, none.
    percent: Option<u64>,
    pub(crate) status: u16,
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
    pub(crate) fn from_env() -> Result<FaultSettings, ConfigError> {
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
    pub(crate) fn check(&self) -> Result<(), (&'static str, &'static str, &'static str)> {
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
pub(crate) struct Faults {
    pub(crate) settings: FaultSettings,
    pub(crate) requests: u64,
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

async fn pause(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

/// An offline answer: its first chunk after the delays, the rest at the simulated token rate.
/// Only the waiting is simulated; the reply is sent whole, at the end, as online.
pub(crate) async fn answer_offline(
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
