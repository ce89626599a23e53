//! `GET /metrics`: the GenAI client histograms in the Prometheus text exposition format.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

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

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// `/metrics`: the GenAI client histograms.
pub(crate) struct Metrics {
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
pub(crate) enum Outcome {
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
    pub(crate) fn new(model: &str, response_model: Option<&str>) -> Metrics {
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
    pub(crate) fn expect_failure(&self, error_type: &str) {
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
    pub(crate) fn record(&self, elapsed: Duration, outcome: Outcome) {
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

    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
