//! Sending `verify`'s requests and sorting the answers, the way the lab's test script does:
//! `POST /chat` with `{"message": "hi"}`, then the `model` field of the JSON answer, grouped by
//! model family so that a dated model name (`gpt-4o-2024-08-06`) counts for its family (`gpt-4o`).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures::StreamExt;
use reqwest::Url;
use serde::Serialize;
use tokio::time::Instant;

use super::{Error, duration, http};

/// The lab's request body.
const MESSAGE: &str = "hi";

/// Longest answer read; a chat answer is a few kilobytes, and a misdirected URL that streams a
/// large file must not fill memory.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Which version an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Stable,
    Canary,
    Other,
}

/// The two models to tell apart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Models {
    pub stable: String,
    pub canary: String,
}

impl Models {
    /// The family an answer's model belongs to: a model counts for a version when it starts with
    /// that version's model, ignoring ASCII case (the API reports `gpt-4o-2024-08-06` for a
    /// deployment of `gpt-4o`). When both match (`gpt-4` and `gpt-4o`), the longer, more
    /// specific one wins.
    pub fn classify(&self, model: &str) -> Family {
        let matches = |family: &str| {
            model.len() >= family.len()
                && model.as_bytes()[..family.len()].eq_ignore_ascii_case(family.as_bytes())
        };
        match (matches(&self.stable), matches(&self.canary)) {
            (true, true) if self.canary.len() > self.stable.len() => Family::Canary,
            (true, _) => Family::Stable,
            (false, true) => Family::Canary,
            (false, false) => Family::Other,
        }
    }
}

/// How to sample.
#[derive(Clone, Debug)]
pub struct Plan {
    pub url: Url,
    pub requests: u32,
    pub concurrency: u32,
    pub request_timeout: Duration,
    /// Sampling stops here, answered or not.
    pub total_timeout: Duration,
    /// Requests that may fail or be answered by another model before the measurement is void.
    /// Sampling stops as soon as more have, since nothing that follows can rescue it.
    pub failure_budget: u32,
}

/// Why sampling ended before every request was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Stop {
    /// `--timeout` passed.
    Deadline,
    /// More requests failed than the budget allows.
    TooManyFailures,
}

/// What came back.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    /// Requests that got an answer or failed; less than planned when sampling stopped early.
    pub completed: u32,
    pub stable: u64,
    pub canary: u64,
    /// Answers from a model that is neither version's, by model name.
    pub other: BTreeMap<String, u64>,
    /// Every model name seen, as reported, with its count.
    pub models: BTreeMap<String, u64>,
    /// Failed requests by cause.
    pub failures: BTreeMap<String, u64>,
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
    pub stopped: Option<Stop>,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Tally {
    pub fn record(&mut self, answer: Result<String, Failure>, models: &Models) {
        self.completed += 1;
        match answer {
            Ok(model) => {
                match models.classify(&model) {
                    Family::Stable => self.stable += 1,
                    Family::Canary => self.canary += 1,
                    Family::Other => *self.other.entry(model.clone()).or_default() += 1,
                }
                *self.models.entry(model).or_default() += 1;
            }
            Err(failure) => *self.failures.entry(failure.to_string()).or_default() += 1,
        }
    }

    /// Answers that tell the versions apart.
    pub fn measured(&self) -> u64 {
        self.stable + self.canary
    }

    /// Requests that completed without telling the versions apart.
    pub fn unusable(&self) -> u64 {
        self.other.values().sum::<u64>() + self.failed()
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// Why one request did not yield a model name. The text is the key answers are grouped by, so
/// it names the cause without per-request details such as ports or timings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within the request timeout")]
    Timeout,
    #[error("request failed: {0}")]
    Transport(String),
    #[error("HTTP {0}")]
    Status(String),
    #[error("answer is not JSON")]
    NotJson,
    #[error("answer has no string field \"model\"")]
    NoModel,
    #[error("answer larger than 1 MiB")]
    TooLarge,
}

/// Sends the plan's requests and tallies the answers. Bounded by `plan.requests` and by
/// `plan.total_timeout`; requests still in flight at the deadline are dropped (and so cancelled).
pub async fn sample(plan: &Plan, models: &Models, progress: bool) -> Result<Tally, Error> {
    let client = http::client(plan.request_timeout).map_err(Error::HttpClient)?;
    let started = Instant::now();
    let deadline = started + plan.total_timeout;
    let mut bar = Progress::new(progress && std::io::stderr().is_terminal(), plan.requests);
    let mut tally = Tally::default();
    let concurrency = usize::try_from(plan.concurrency.max(1)).unwrap_or(1);
    let mut answers = futures::stream::iter(0..plan.requests)
        .map(|_| ask(&client, &plan.url))
        .buffer_unordered(concurrency);
    loop {
        match tokio::time::timeout_at(deadline, answers.next()).await {
            Err(_) => {
                tally.stopped = Some(Stop::Deadline);
                break;
            }
            Ok(None) => break,
            Ok(Some(answer)) => {
                tally.record(answer, models);
                bar.update(&tally, started.elapsed());
                if tally.unusable() > u64::from(plan.failure_budget) {
                    tally.stopped = Some(Stop::TooManyFailures);
                    break;
                }
            }
        }
    }
    bar.finish();
    tally.elapsed = started.elapsed();
    Ok(tally)
}

/// One request, as the lab's script sends it.
async fn ask(client: &reqwest::Client, url: &Url) -> Result<String, Failure> {
    let mut response = client
        .post(url.clone())
        .json(&serde_json::json!({ "message": MESSAGE }))
        .send()
        .await
        .map_err(failure)?;
    let status = response.status();
    if !status.is_success() {
        return Err(Failure::Status(status.to_string()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failure)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(Failure::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|_| Failure::NotJson)?;
    match answer.get("model").and_then(serde_json::Value::as_str) {
        Some(model) => Ok(model.to_owned()),
        None => Err(Failure::NoModel),
    }
}

fn failure(error: reqwest::Error) -> Failure {
    if error.is_timeout() {
        return Failure::Timeout;
    }
    // reqwest's own message names the URL; the innermost cause ("Connection refused") is what
    // tells one failure from another.
    let mut cause: &dyn std::error::Error = &error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if error.is_connect() {
        Failure::Connect(cause.to_string())
    } else {
        Failure::Transport(cause.to_string())
    }
}

/// A one-line progress bar on stderr, redrawn in place; only on a terminal, so logs and pipes
/// get no control characters.
struct Progress {
    enabled: bool,
    total: u32,
    last_draw: Option<Instant>,
}

impl Progress {
    const WIDTH: u32 = 30;
    const REDRAW: Duration = Duration::from_millis(100);

    fn new(enabled: bool, total: u32) -> Self {
        Progress {
            enabled,
            total,
            last_draw: None,
        }
    }

    fn update(&mut self, tally: &Tally, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let done = tally.completed >= self.total;
        if !done && self.last_draw.is_some_and(|t| now - t < Self::REDRAW) {
            return;
        }
        self.last_draw = Some(now);
        let filled = (u64::from(tally.completed) * u64::from(Self::WIDTH))
            .checked_div(u64::from(self.total))
            .unwrap_or(0);
        let filled = usize::try_from(filled).unwrap_or(0);
        let bar: String = (0..Self::WIDTH as usize)
            .map(|i| if i < filled { '#' } else { '.' })
            .collect();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K[{bar}] {}/{}  {} failed  {}",
            tally.completed,
            self.total,
            tally.unusable(),
            duration::display(elapsed)
        );
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.enabled && self.last_draw.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> Models {
        Models {
            stable: "gpt-4.1".into(),
            canary: "gpt-4o".into(),
        }
    }

    #[test]
    fn classifies_by_family_like_the_lab_script() {
        let cases = [
            ("gpt-4.1", Family::Stable),
            ("gpt-4.1-2025-04-14", Family::Stable),
            ("gpt-4o", Family::Canary),
            ("gpt-4o-2024-08-06", Family::Canary),
            ("GPT-4o-2024-08-06", Family::Canary),
            ("gpt-4", Family::Other),
            ("gpt-35-turbo", Family::Other),
            ("", Family::Other),
        ];
        for (model, family) in cases {
            assert_eq!(lab().classify(model), family, "{model:?}");
        }
    }

    #[test]
    fn the_more_specific_family_wins_when_one_prefixes_the_other() {
        let models = Models {
            stable: "gpt-4".into(),
            canary: "gpt-4o".into(),
        };
        assert_eq!(models.classify("gpt-4o-2024-08-06"), Family::Canary);
        assert_eq!(models.classify("gpt-4-0613"), Family::Stable);
        let reversed = Models {
            stable: "gpt-4o".into(),
            canary: "gpt-4".into(),
        };
        assert_eq!(reversed.classify("gpt-4o-mini"), Family::Stable);
        assert_eq!(reversed.classify("gpt-4-turbo"), Family::Canary);
    }

    #[test]
    fn tally_counts_versions_others_and_failures_apart() {
        let mut tally = Tally::default();
        let answers = [
            Ok("gpt-4.1-2025-04-14".to_owned()),
            Ok("gpt-4o".to_owned()),
            Ok("gpt-4o".to_owned()),
            Ok("llama".to_owned()),
            Err(Failure::Status("502 Bad Gateway".into())),
            Err(Failure::Status("502 Bad Gateway".into())),
            Err(Failure::NotJson),
        ];
        for answer in answers {
            tally.record(answer, &lab());
        }
        assert_eq!(tally.completed, 7);
        assert_eq!((tally.stable, tally.canary), (1, 2));
        assert_eq!(tally.measured(), 3);
        assert_eq!(tally.unusable(), 4);
        assert_eq!(tally.other.get("llama"), Some(&1));
        assert_eq!(tally.failures.get("HTTP 502 Bad Gateway"), Some(&2));
        assert_eq!(tally.failures.get("answer is not JSON"), Some(&1));
        assert_eq!(tally.models.get("gpt-4o"), Some(&2));
    }
}
