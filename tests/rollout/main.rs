//! Automatic rollouts against real parts: the local control plane, the operator, Prometheus built
//! from its Go module scraping two chat backend processes (one per version), and nginx as the
//! ingress gateway's stand-in, following the weights of the VirtualService the operator writes,
//! with a load generator sending requests through it. Faults are real: a backend told to fail,
//! Prometheus killed, the operator killed.
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

mod admission;
mod analysis;
#[path = "../backend/mod.rs"]
mod backend;
#[path = "../common/mod.rs"]
mod common;
mod edges;
mod llm;
mod stage;
mod steering;
mod templates;

use common::host;
