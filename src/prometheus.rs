//! Instant queries to Prometheus's HTTP API (`GET /api/v1/query`), for the metric analysis of
//! automatic rollouts. Every way a query can fail is an error here, kept apart from an empty
//! result: the rollout pauses on the first and calls the second inconclusive.

use std::time::Duration;

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("Prometheus at {address} cannot be reached: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("no answer from Prometheus within {0:?}")]
    Timeout(Duration),
    #[error("Prometheus answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error(
        "the query returned {0} series; it must return one number (add sum(...) or a tighter selector)"
    )]
    Ambiguous(usize),
    #[error("cannot read Prometheus's answer: {0}")]
    Malformed(String),
    #[error(
        "Prometheus's answer is larger than {} ({seen}); a query for one number answers in far less",
        mib(MAX_ANSWER)
    )]
    TooLarge { seen: String },
}

/// The largest answer read. An instant query for one number answers in a few hundred bytes; a
/// query that selects thousands of series answers in megabytes, every one of them held in memory
/// (and parsed) for nothing, since such an answer is an error anyway.
pub const MAX_ANSWER: usize = 1024 * 1024;

fn mib(bytes: usize) -> String {
    // Sizes for a person: two decimals of a MiB are plenty.
    #[allow(clippy::cast_precision_loss)]
    let mib = bytes as f64 / (1024.0 * 1024.0);
    format!("{mib:.2} MiB")
}

/// A shared HTTP client: connections to one Prometheus are reused across releases and intervals.
#[derive(Clone, Debug)]
pub struct Prometheus {
    http: reqwest::Client,
}

impl Prometheus {
    pub fn new() -> Result<Prometheus, reqwest::Error> {
        // The crate's reqwest has no TLS provider of its own; kube's ring is used (installing it
        // twice is harmless).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Prometheus {
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(90))
                .build()?,
        })
    }

    /// The query's one number; `Ok(None)` when it selects no series (no data yet).
    pub async fn query(
        &self,
        address: &str,
        query: &str,
        timeout: Duration,
    ) -> Result<Option<f64>, QueryError> {
        let base = format!("{}/api/v1/query", address.trim_end_matches('/'));
        let server_timeout = format!("{}ms", timeout.as_millis());
        let url = reqwest::Url::parse_with_params(
            &base,
            [("query", query), ("timeout", server_timeout.as_str())],
        )
        .map_err(|e| QueryError::Unreachable {
            address: address.to_owned(),
            reason: format!("not a URL: {e}"),
        })?;
        let sent = self.http.get(url).timeout(timeout).send().await;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return Err(QueryError::Timeout(timeout)),
            Err(e) => {
                return Err(QueryError::Unreachable {
                    address: address.to_owned(),
                    reason: innermost(&e),
                });
            }
        };
        let status = response.status();
        let body = read_bounded(response, timeout).await?;
        parse(status.as_u16(), &String::from_utf8_lossy(&body))
    }
}

/// The answer's body, up to [`MAX_ANSWER`]: one announced as larger is not read at all, and one
/// that grows past it is dropped as soon as it does.
async fn read_bounded(
    mut response: reqwest::Response,
    timeout: Duration,
) -> Result<Vec<u8>, QueryError> {
    if let Some(announced) = response.content_length()
        && usize::try_from(announced).map_or(true, |n| n > MAX_ANSWER)
    {
        return Err(QueryError::TooLarge {
            seen: format!(
                "{} announced",
                mib(usize::try_from(announced).unwrap_or(usize::MAX))
            ),
        });
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > MAX_ANSWER => {
                return Err(QueryError::TooLarge {
                    seen: format!("{} read, and more coming", mib(body.len() + chunk.len())),
                });
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => return Err(QueryError::Timeout(timeout)),
            Err(e) => return Err(QueryError::Malformed(innermost(&e))),
        }
    }
}

/// Reads an answer of the query API.
pub fn parse(status: u16, body: &str) -> Result<Option<f64>, QueryError> {
    let json: serde_json::Value = match serde_json::from_str(body) {
        Ok(json) => json,
        Err(_) if status >= 400 => {
            return Err(QueryError::Refused {
                status,
                message: body.chars().take(200).collect(),
            });
        }
        Err(e) => return Err(QueryError::Malformed(e.to_string())),
    };
    if status >= 400 || json["status"] != "success" {
        let message = json["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.chars().take(200).collect());
        return Err(QueryError::Refused { status, message });
    }
    let data = &json["data"];
    let number = |pair: &serde_json::Value| -> Result<f64, QueryError> {
        let text = pair[1]
            .as_str()
            .ok_or_else(|| QueryError::Malformed(format!("no value in {pair}")))?;
        // Prometheus writes NaN and ±Inf as text, which Rust reads too.
        text.parse::<f64>()
            .map_err(|e| QueryError::Malformed(format!("{text:?}: {e}")))
    };
    match data["resultType"].as_str() {
        Some("scalar") => number(&data["result"]).map(Some),
        Some("vector") => {
            let series = data["result"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            match series {
                [] => Ok(None),
                [one] => number(&one["value"]).map(Some),
                many => Err(QueryError::Ambiguous(many.len())),
            }
        }
        other => Err(QueryError::Malformed(format!(
            "result type {other:?}; use an instant vector or scalar query"
        ))),
    }
}

fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each case: HTTP status, body, and the value read or the start of the error.
    #[test]
    fn answers_are_read() {
        let ok = |v: Option<f64>| Ok::<_, String>(v);
        type Case<'a> = (u16, &'a str, Result<Option<f64>, String>);
        let cases: Vec<Case> = vec![
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.25"]}]}}"#,
                ok(Some(0.25)),
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                ok(None),
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#,
                ok(Some(3.0)),
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"+Inf"]}]}}"#,
                ok(Some(f64::INFINITY)),
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}"#,
                Err("the query returned 2 series".into()),
            ),
            (
                400,
                r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#,
                Err("Prometheus answered 400: parse error at char 5".into()),
            ),
            (
                503,
                "Service Unavailable",
                Err("Prometheus answered 503: Service Unavailable".into()),
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                Err("cannot read Prometheus's answer: result type".into()),
            ),
            (200, "not json", Err("cannot read".into())),
        ];
        for (status, body, expected) in cases {
            match (parse(status, body), expected) {
                (Ok(v), Ok(e)) => assert_eq!(v, e, "{body}"),
                (Err(e), Err(start)) => assert!(e.to_string().starts_with(&start), "{body}: {e}"),
                (got, expected) => panic!("{body}: got {got:?}, expected {expected:?}"),
            }
        }
        let nan = parse(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"NaN"]}]}}"#,
        );
        assert!(matches!(nan, Ok(Some(v)) if v.is_nan()));
    }
}
