//! The HTTP client of the tests and the requests they send to a backend.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::backend;

pub const KEY: &str = "test-key-0123456789";

pub fn client() -> reqwest::Client {
    canary_operator::plugin::http::client(Duration::from_secs(30)).expect("HTTP client")
}

/// Status and JSON body of a POST to `url`.
pub async fn post_raw(url: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
    let response = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send");
    let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, value)
}

pub async fn chat(url: &str, body: Value) -> (StatusCode, Value) {
    post_raw(url, body.to_string()).await
}

/// Status, `Retry-After` header and JSON body of a `/chat` request saying `message`.
pub async fn chat_with_headers(
    b: &backend::Backend,
    message: &str,
) -> (u16, Option<String>, Value) {
    let response = client()
        .post(b.url("/chat"))
        .json(&json!({ "message": message }))
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.expect("JSON body");
    (status, retry_after, body)
}
