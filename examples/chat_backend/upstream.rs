//! The Azure OpenAI chat completions call: its URL and `api-version`, the request, an answer in
//! one piece (a streamed one is read by [`stream`]), and the upstream's failures as the backend
//! passes them on (a 429 with when to retry, 502, 504).

mod stream;

use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use self::stream::read_stream;
use crate::server::error;

/// Largest answer read from the model API, stream included: far above a chat reply, and a bound
/// on what a broken or hostile upstream can make the backend hold.
const MAX_UPSTREAM_BYTES: usize = 8 * 1024 * 1024;

/// Longest piece of an upstream error message passed on to the caller.
const MAX_UPSTREAM_MESSAGE: usize = 300;

pub(crate) const DEFAULT_API_VERSION: &str = "2024-10-21";

/// The first `api-version` whose chat completions request defines `stream_options`, as its
/// published specification shows; the GA version before (`2024-06-01`) does not.
const FIRST_VERSION_WITH_STREAM_USAGE: &str = "2024-10-21";

/// How to reach the model API.
pub(crate) struct Azure {
    pub(crate) client: reqwest::Client,
    pub(crate) url: reqwest::Url,
    pub(crate) key: String,
    pub(crate) timeout: Duration,
    /// Ask for a streamed answer (`UPSTREAM_STREAM`).
    pub(crate) stream: bool,
    /// Ask a stream to report its token usage; only API versions that define it accept it.
    pub(crate) stream_usage: bool,
}

/// Whether `api-version` defines `stream_options`. Azure's versions are dates, previews with a
/// suffix (`2025-01-01-preview`); a version that is not a date (`preview`, `latest`) is newer than
/// all of them.
pub(crate) fn reports_stream_usage(version: &str) -> bool {
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
pub(crate) fn completions_url(
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

/// Why the API did not give an answer.
pub(crate) enum Upstream {
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
    pub(crate) fn into_response(self, azure: &Azure) -> (Response, String) {
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
pub(crate) struct Answer {
    pub(crate) model: String,
    pub(crate) reply: String,
    /// From the start of the request to the first chunk with content; `None` when the answer
    /// came in one piece.
    pub(crate) first_chunk: Option<Duration>,
    pub(crate) input_tokens: Option<u64>,
    pub(crate) output_tokens: Option<u64>,
}

pub(crate) async fn ask_azure(
    azure: &Azure,
    message: &str,
    started: Instant,
) -> Result<Answer, Upstream> {
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
