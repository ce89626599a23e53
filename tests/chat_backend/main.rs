//! The example chat backend (`examples/chat_backend/`) as a process: offline answers, bad input,
//! the Azure path against a fake model API on 127.0.0.1 (a streamed answer, one in one piece, a
//! 429 passed on, errors, timeouts, and the key never leaking), its `/metrics` (the GenAI metric
//! contract), the simulated speed of offline answers and the faults it injects offline.
//!
//! The tests are declared here, at the crate's root, so that their names are the ones they had
//! when this was one file (`cargo test --test chat_backend NAME`); each one's body is in the module
//! of its concern: `offline`, `online` (the Azure path), `metrics` and `faults`. The helpers are
//! `client` (the requests), `exposition` (`/metrics` read back) and `fake_azure` (the fake model
//! API); the backend process itself is started by tests/backend.
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

#[path = "../backend/mod.rs"]
mod backend;
mod client;
mod exposition;
mod fake_azure;
mod faults;
#[path = "../common/host.rs"]
mod host;
mod metrics;
mod offline;
mod online;

#[tokio::test]
async fn offline_backend_answers_with_its_model_and_says_it_is_offline() {
    offline::offline_backend_answers_with_its_model_and_says_it_is_offline().await;
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_a_message() {
    offline::bad_input_gets_a_4xx_with_a_message().await;
}

#[tokio::test]
async fn backend_refuses_to_start_without_its_settings() {
    offline::backend_refuses_to_start_without_its_settings().await;
}

#[tokio::test]
async fn offline_settings_shape_the_answer_time_and_name_the_model() {
    offline::offline_settings_shape_the_answer_time_and_name_the_model().await;
}

#[tokio::test]
async fn online_backend_streams_the_answer_and_times_its_first_chunk() {
    online::online_backend_streams_the_answer_and_times_its_first_chunk().await;
}

#[tokio::test]
async fn an_api_version_before_2024_10_21_is_not_asked_for_usage() {
    online::an_api_version_before_2024_10_21_is_not_asked_for_usage().await;
}

#[tokio::test]
async fn upstream_stream_false_asks_for_one_piece_and_records_no_first_chunk() {
    online::upstream_stream_false_asks_for_one_piece_and_records_no_first_chunk().await;
}

#[tokio::test]
async fn an_upstream_429_is_passed_on_with_when_to_retry() {
    online::an_upstream_429_is_passed_on_with_when_to_retry().await;
}

#[tokio::test]
async fn upstream_errors_become_502_without_the_key() {
    online::upstream_errors_become_502_without_the_key().await;
}

#[tokio::test]
async fn a_slow_upstream_becomes_504() {
    online::a_slow_upstream_becomes_504().await;
}

#[tokio::test]
async fn metrics_observe_every_chat_request_with_the_genai_labels() {
    metrics::metrics_observe_every_chat_request_with_the_genai_labels().await;
}

#[tokio::test]
async fn fault_every_3_fails_exactly_requests_3_6_9() {
    faults::fault_every_3_fails_exactly_requests_3_6_9().await;
}

#[tokio::test]
async fn fault_percent_30_fails_exactly_3_in_10_spread_evenly() {
    faults::fault_percent_30_fails_exactly_3_in_10_spread_evenly().await;
}

#[tokio::test]
async fn fault_ttft_raises_the_time_to_first_chunk() {
    faults::fault_ttft_raises_the_time_to_first_chunk().await;
}

#[tokio::test]
async fn fault_status_429_says_when_to_retry() {
    faults::fault_status_429_says_when_to_retry().await;
}

#[tokio::test]
async fn fault_delay_slows_every_request() {
    faults::fault_delay_slows_every_request().await;
}

#[tokio::test]
async fn put_fault_switches_a_healthy_backend_to_failing_and_back() {
    faults::put_fault_switches_a_healthy_backend_to_failing_and_back().await;
}

#[tokio::test]
async fn backend_refuses_fault_settings_that_mean_nothing() {
    faults::backend_refuses_fault_settings_that_mean_nothing().await;
}

#[tokio::test]
async fn online_backend_refuses_offline_settings_and_has_no_fault_endpoint() {
    faults::online_backend_refuses_offline_settings_and_has_no_fault_endpoint().await;
}
