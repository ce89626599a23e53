//! The environment: what the backend reads at startup (see the table in main.rs), how a value is
//! parsed and checked, and why the process refuses to start.

use std::sync::Mutex;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::offline::{FaultSettings, Faults, Simulation};
use crate::upstream::{Azure, DEFAULT_API_VERSION, completions_url, reports_stream_usage};
use crate::{Backend, Mode};

/// A configuration problem found at startup; the process exits with it instead of serving
/// requests that could only fail.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
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
pub(crate) fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

pub(crate) fn parsed<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    Ok(parsed_optional(name)?.unwrap_or(default))
}

pub(crate) fn parsed_optional<T: std::str::FromStr>(
    name: &'static str,
) -> Result<Option<T>, ConfigError>
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
    pub(crate) fn from_env() -> Result<Backend, ConfigError> {
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
