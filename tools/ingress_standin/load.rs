//! The load generator (`--load-rps`): requests through the gateway, counted by the model that
//! answered, so that a shift can be watched as it happens.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// How often the load generator reports.
const REPORT: Duration = Duration::from_secs(5);

/// Longest one generated request may take; the chat backend answers offline in milliseconds.
pub(crate) const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `rps` requests a second to `url` and prints every [`REPORT`] how the answers of that
/// window were spread over models. Requests that have not come back are not waited for, but at
/// most a few seconds' worth are in flight: a stalled gateway is reported, not piled onto.
pub(crate) async fn generate_load(client: reqwest::Client, url: String, body: String, rps: u32) {
    let counts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let limit = usize::try_from(rps.saturating_mul(5)).unwrap_or(usize::MAX);
    let mut send = tokio::time::interval(Duration::from_secs(1) / rps);
    send.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = tokio::time::interval_at(tokio::time::Instant::now() + REPORT, REPORT);
    let mut sent = 0_u64;
    loop {
        tokio::select! {
            _ = send.tick() => {
                if in_flight.load(Ordering::Relaxed) >= limit {
                    count(&counts, "skipped".to_owned());
                    continue;
                }
                sent += 1;
                in_flight.fetch_add(1, Ordering::Relaxed);
                let (client, url, body) = (client.clone(), url.clone(), body.clone());
                let (counts, in_flight) = (counts.clone(), in_flight.clone());
                tokio::spawn(async move {
                    let outcome = ask(&client, url, body).await;
                    count(&counts, outcome);
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                });
            }
            _ = report.tick() => {
                let window = counts.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default();
                let answers: Vec<String> = window.iter().map(|(k, n)| format!("{k}={n}")).collect();
                println!("load {}s: sent={sent} {}", REPORT.as_secs(), answers.join(" "));
                sent = 0;
            }
        }
    }
}

/// One more outcome (an answer, or a request not sent) in the window being counted.
fn count(counts: &Mutex<BTreeMap<String, u64>>, key: String) {
    if let Ok(mut counts) = counts.lock() {
        *counts.entry(key).or_default() += 1;
    }
}

/// One request; its outcome is the model that answered, or why none did.
async fn ask(client: &reqwest::Client, url: String, body: String) -> String {
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) if e.is_timeout() => return "timeout".to_owned(),
        Err(_) => return "error".to_owned(),
    };
    let status = response.status();
    if !status.is_success() {
        return format!("status_{}", status.as_u16());
    }
    match response.json::<Value>().await {
        Ok(answer) => match answer.get("model").and_then(Value::as_str) {
            Some(model) => model.to_owned(),
            None => "no_model".to_owned(),
        },
        Err(_) => "not_json".to_owned(),
    }
}
