//! The releases under `examples/`, as a user applies them.
//!
//! Imports nothing from the rest of the test kit, so that the bench can include it with
//! `#[path = "../../tests/common/examples.rs"]` too.
// Each includer uses a different part of it.
#![allow(dead_code)]

use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

/// `examples/<file>`, as written.
pub fn example(file: &str) -> Value {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// The lab's release (`examples/lab.yaml`, named `azureopenaichat`), as written.
pub fn lab() -> Value {
    example("lab.yaml")
}

/// The Secret the examples reference (`azure-openai`), with a key that is not a real one.
pub fn secret() -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": "azure-openai"},
        "stringData": {"AZURE_API_KEY": "not-a-real-key"},
    }))
    .unwrap_or_else(|e| panic!("the examples' Secret: {e}"))
}
