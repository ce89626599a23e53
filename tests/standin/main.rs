//! The test kit's stand-ins for what a cluster with Istio and Prometheus would run: the ingress
//! gateway stand-in (`tools/ingress_standin/`) moving real requests as the routes istiod
//! pushes for a VirtualService or an HTTPRoute on the real control plane change (weighted splits,
//! and the sticky routes that keep a conversation on its version by cookie or header), and the
//! Prometheus harness (tests/common/prometheus.rs) scraping, losing and regaining its data.
//!
//! The tests are declared here, at the crate's root, so that their names are the ones they had
//! when this was one file (`cargo test --test standin NAME`); each one's body is in the module of
//! its concern: `weighted` (a VirtualService's split), `scraping` (the Prometheus harness),
//! `sticky` (hand-written sticky routes), `httproute` (the Gateway API) and `operator_sticky` (the
//! operator's own sticky routes). The helpers are `traffic` (requests through the stand-in and
//! their answers) and `objects` (what the tests apply around the routes).
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

#[path = "../backend/mod.rs"]
mod backend;
#[path = "../common/mod.rs"]
mod common;
mod httproute;
mod objects;
mod operator_sticky;
mod scraping;
mod sticky;
mod traffic;
mod weighted;

// tests/backend reads `crate::host`.
use common::host;

#[tokio::test]
async fn standin_gateway_follows_the_route_istiod_pushes() {
    weighted::standin_gateway_follows_the_route_istiod_pushes().await;
}

#[tokio::test]
async fn prometheus_scrapes_labelled_targets_and_comes_back_after_an_outage() {
    scraping::prometheus_scrapes_labelled_targets_and_comes_back_after_an_outage().await;
}

#[tokio::test]
async fn standin_gateway_keeps_a_conversation_on_its_version_by_cookie() {
    sticky::standin_gateway_keeps_a_conversation_on_its_version_by_cookie().await;
}

#[tokio::test]
async fn standin_gateway_routes_an_api_client_by_the_version_header() {
    sticky::standin_gateway_routes_an_api_client_by_the_version_header().await;
}

#[tokio::test]
async fn standin_gateway_follows_an_httproute_to_a_service_per_version() {
    httproute::standin_gateway_follows_an_httproute_to_a_service_per_version().await;
}

#[tokio::test]
async fn the_operators_sticky_routes_keep_each_conversation_on_its_version() {
    operator_sticky::the_operators_sticky_routes_keep_each_conversation_on_its_version().await;
}
