//! Requests through the stand-in and what they came back with: the backends of v1 and v2, the
//! answers counted by model, a browser's conversation with its sticky cookie, and the `applied`
//! lines the stand-in prints.

use std::collections::BTreeMap;
use std::sync::Once;
use std::time::Duration;

use serde_json::{Value, json};

use crate::backend::{Backend, start_backend};

/// Longest wait for the stand-in to follow a change of the VirtualService (through istiod).
pub const FOLLOW: Duration = Duration::from_secs(30);

/// Requests per check: a multiple of every split's cycle (the weights sum to 100), so nginx's
/// weighted round robin gives each subset exactly its weight in requests.
pub const REQUESTS: u32 = 100;

pub fn http_client() -> reqwest::Client {
    // reqwest is built without a TLS provider of its own (see Cargo.toml); building a client wants
    // one installed, and ring is the one kube's client links. Err: one is installed already.
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client")
}

/// `n` chat requests one after another through `url`; how many answers each model gave (or, for
/// a failed request, its status).
pub async fn answers(url: &str, n: u32) -> BTreeMap<String, u32> {
    let client = http_client();
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let response = client
            .post(url)
            .json(&json!({"message": "hi"}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let key = if response.status().is_success() {
            let body: Value = response.json().await.expect("a JSON answer");
            body["model"]
                .as_str()
                .expect("a model in the answer")
                .to_owned()
        } else {
            format!("status {}", response.status().as_u16())
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

pub fn counts(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
}

/// Which version a model's answers come from: v1's backend answers as m1, v2's as m2.
pub fn version_of(model: &str) -> &'static str {
    match model {
        "m1" => "v1",
        "m2" => "v2",
        other => panic!("an answer from {other}, which no version serves"),
    }
}

/// The backends of v1 and v2, answering at once (no simulated time to first token: hundreds of
/// requests go through the gateway here).
pub async fn versions() -> (Backend, Backend) {
    let v1 = start_backend(&[("AZURE_MODEL_NAME", "m1"), ("OFFLINE_TTFT_MS", "0")]).await;
    let v2 = start_backend(&[("AZURE_MODEL_NAME", "m2"), ("OFFLINE_TTFT_MS", "0")]).await;
    (v1, v2)
}

/// What one chat request through the gateway came back with.
#[derive(Debug)]
pub struct Answer {
    /// The model that answered, or `status N` for a failed request.
    pub model: String,
    pub set_cookie: Vec<String>,
    /// The `x-canary-model` response header, which the header variant's routes add.
    pub canary_header: Vec<String>,
}

pub async fn ask(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = client.post(url).json(&json!({"message": "hi"}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let all = |name: &str| -> Vec<String> {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("an ASCII header").to_owned())
            .collect()
    };
    let (set_cookie, canary_header) = (all("set-cookie"), all("x-canary-model"));
    let model = if response.status().is_success() {
        let body: Value = response.json().await.expect("a JSON answer");
        body["model"].as_str().expect("a model").to_owned()
    } else {
        format!("status {}", response.status().as_u16())
    };
    Answer {
        model,
        set_cookie,
        canary_header,
    }
}

/// The sticky cookie the operator's split route sets on an answer of `version`.
pub fn sticky_cookie(version: &str) -> String {
    format!("canary-model={version}; Path=/; Max-Age=86400")
}

/// A browser's conversation: it sends back the cookie the last Set-Cookie gave it, among cookies
/// of its own (before the sticky one in some conversations, after it in others, as browsers
/// order cookies by age).
pub struct Conversation {
    pub session: usize,
    pub cookie: Option<String>,
    /// The model of its first answer.
    pub model: String,
    pub sent: usize,
}

impl Conversation {
    pub async fn send(&mut self, client: &reqwest::Client, url: &str) -> Answer {
        let header = self.cookie.as_ref().map(|sticky| {
            if self.session.is_multiple_of(2) {
                format!("session={}; {sticky}", self.session)
            } else {
                format!("{sticky}; session={}", self.session)
            }
        });
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("cookie", h.as_str())).collect();
        let answer = ask(client, url, &headers).await;
        self.sent += 1;
        if let Some(set) = answer.set_cookie.last() {
            let pair = set.split(';').next().unwrap_or_default().trim();
            self.cookie = Some(pair.to_owned());
        }
        answer
    }
}

/// The stand-in's first `applied` line that routes something (`next` gives each line): it may read
/// istiod's routes before istiod has the test's objects, and then first applies nothing.
pub fn first_routing(mut next: impl FnMut() -> String) -> String {
    let mut line = next();
    // A line is printed only when the routes change, so nothing comes but a few times at most.
    for _ in 0..3 {
        if line != "applied v1=0 v2=0" {
            break;
        }
        line = next();
    }
    line
}

/// Requests per conversation.
pub const CONVERSATION: usize = 50;

/// Conversations kept going per version.
pub const KEPT: usize = 3;
