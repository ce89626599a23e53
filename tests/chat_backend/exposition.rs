//! The backend's `/metrics` read back: the text exposition parsed into samples, and the GenAI
//! series the tests look up in it.

use std::collections::BTreeMap;

use crate::backend;
use crate::client::client;

pub const DURATION: &str = "gen_ai_client_operation_duration_seconds";

pub const FIRST_CHUNK: &str = "gen_ai_client_operation_time_to_first_chunk_seconds";

pub const TOKENS: &str = "gen_ai_client_token_usage";

/// One line of the text exposition format: name, labels, value.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a text exposition; comments (`# HELP`, `# TYPE`) are left out.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("value {v:?} in {line:?}: {e}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => (name, parse_labels(rest, line)),
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

/// `k="v",k2="v2"}` as a map; `line` is for the panic message.
fn parse_labels(text: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || key == "}" {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label {key} in {line:?}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("unfinished escape in {line:?}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unfinished label value in {line:?}"),
            }
        }
        labels.insert(key, value);
        match chars.next() {
            Some(',') => {}
            Some('}') => break,
            other => panic!("{other:?} after label {labels:?} in {line:?}"),
        }
    }
    labels
}

/// The backend's `/metrics`, after checking it is the Prometheus text format and that the GenAI
/// series are histograms.
pub async fn scrape(b: &backend::Backend) -> Vec<Sample> {
    let response = client()
        .get(b.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(
        content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = response.text().await.expect("metrics text");
    // A family without series yet (online, before the first answer) has no TYPE line either.
    for name in [DURATION, FIRST_CHUNK, TOKENS] {
        assert!(
            !text.lines().any(|line| line.starts_with(name))
                || text.contains(&format!("# TYPE {name} histogram\n")),
            "no histogram {name}:\n{text}"
        );
    }
    parse_exposition(&text)
}

/// The value of the sample named `name` whose labels are exactly `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == wanted)
        .map(|s| s.value)
}

/// The labels every GenAI series of a backend calling `model` has, plus `extra`.
fn genai<'a>(model: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut labels = vec![
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_provider_name", "azure.ai.openai"),
        ("gen_ai_request_model", model),
    ];
    labels.extend_from_slice(extra);
    labels
}

/// The labels of the series of requests that `model` was asked and `response_model` answered.
pub fn answered<'a>(model: &'a str, response_model: &'a str) -> Vec<(&'a str, &'a str)> {
    genai(model, &[("gen_ai_response_model", response_model)])
}

/// Successful requests observed by the duration histogram.
pub fn successes(samples: &[Sample], model: &str, response_model: &str) -> f64 {
    let labels = answered(model, response_model);
    value(samples, &format!("{DURATION}_count"), &labels).unwrap_or(0.0)
}

/// Failed requests observed by the duration histogram with this `error_type`.
pub fn failures(samples: &[Sample], model: &str, error_type: &str) -> f64 {
    let labels = genai(model, &[("error_type", error_type)]);
    value(samples, &format!("{DURATION}_count"), &labels).unwrap_or(0.0)
}

/// Count and sum of a histogram's series of successful requests.
pub fn histogram(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> (f64, f64) {
    let count = value(samples, &format!("{name}_count"), labels).unwrap_or(0.0);
    let sum = value(samples, &format!("{name}_sum"), labels).unwrap_or(0.0);
    (count, sum)
}

/// Count and sum of the token histogram for `token_type` ("input" or "output").
pub fn tokens(
    samples: &[Sample],
    model: &str,
    response_model: &str,
    token_type: &str,
) -> (f64, f64) {
    let mut labels = answered(model, response_model);
    labels.push(("gen_ai_token_type", token_type));
    histogram(samples, TOKENS, &labels)
}

/// The sum of every sample named `name`, whatever its labels.
pub fn total(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}
