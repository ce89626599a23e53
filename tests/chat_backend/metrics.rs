//! `/metrics`: the GenAI metric contract (names, labels, buckets, the series there from the
//! start), as an offline backend's answers and a malformed request are observed.

use axum::http::StatusCode;
use serde_json::json;

use crate::backend::start_backend;
use crate::client::{chat, post_raw};
use crate::exposition::{
    DURATION, FIRST_CHUNK, TOKENS, answered, histogram, scrape, successes, tokens, value,
};

pub async fn metrics_observe_every_chat_request_with_the_genai_labels() {
    let b = start_backend(&[("AZURE_MODEL_NAME", "gpt-4o")]).await;
    let before = scrape(&b).await;
    // The success series are there, at zero, before the first request; offline the model that
    // answers is known from the start.
    let success = answered("gpt-4o", "gpt-4o");
    for name in [DURATION, FIRST_CHUNK] {
        assert_eq!(
            value(&before, &format!("{name}_count"), &success),
            Some(0.0),
            "{name}: {before:?}"
        );
    }
    assert_eq!(tokens(&before, "gpt-4o", "gpt-4o", "input"), (0.0, 0.0));
    // So are the failures it can answer with (FAULT_STATUS's default 500 among them): the first
    // failure of each kind must count in an increase().
    for error_type in ["429", "500", "502", "timeout"] {
        let failed = [
            ("gen_ai_operation_name", "chat"),
            ("gen_ai_provider_name", "azure.ai.openai"),
            ("gen_ai_request_model", "gpt-4o"),
            ("error_type", error_type),
        ];
        assert_eq!(
            value(&before, &format!("{DURATION}_count"), &failed),
            Some(0.0),
            "{error_type}: {before:?}"
        );
    }

    let mut reply_words = 0.0;
    for _ in 0..3 {
        let (status, answer) = chat(&b.url("/chat"), json!({"message": "one two three"})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let reply = answer["reply"].as_str().expect("reply");
        reply_words += reply.split_whitespace().count() as f64;
    }
    // A malformed request is the caller's mistake: documented as not observed.
    let (status, _) = post_raw(&b.url("/chat"), "not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let samples = scrape(&b).await;
    assert_eq!(successes(&samples, "gpt-4o", "gpt-4o"), 3.0, "{samples:?}");
    for name in [DURATION, FIRST_CHUNK] {
        let buckets: Vec<String> = samples
            .iter()
            .filter(|s| s.name == format!("{name}_bucket") && !s.labels.contains_key("error_type"))
            .map(|s| s.labels["le"].clone())
            .collect();
        assert_eq!(
            buckets,
            [
                "0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64", "1.28", "2.56", "5.12",
                "10.24", "20.48", "40.96", "81.92", "+Inf"
            ],
            "{name}"
        );
        let mut le = success.clone();
        le.push(("le", "+Inf"));
        assert_eq!(
            value(&samples, &format!("{name}_bucket"), &le),
            Some(3.0),
            "{name}"
        );
    }
    // The defaults keep an offline answer cheap: 20 ms to the first chunk, 1000 tokens/s.
    let (_, duration) = histogram(&samples, DURATION, &success);
    let (_, first_chunk) = histogram(&samples, FIRST_CHUNK, &success);
    assert!(first_chunk >= 0.06, "{first_chunk} s to the first chunks");
    assert!(
        duration - first_chunk >= reply_words / 1000.0,
        "{duration} s in all, {first_chunk} s to the first chunks, {reply_words} words"
    );
    assert!(duration < 3.0 * 0.1, "{duration} s for three answers");
    assert_eq!(tokens(&samples, "gpt-4o", "gpt-4o", "input"), (3.0, 9.0));
    assert_eq!(
        tokens(&samples, "gpt-4o", "gpt-4o", "output"),
        (3.0, reply_words)
    );
    let mut le = answered("gpt-4o", "gpt-4o");
    le.extend([("gen_ai_token_type", "input"), ("le", "4")]);
    assert_eq!(value(&samples, &format!("{TOKENS}_bucket"), &le), Some(3.0));

    // Successes carry no error_type, and no series carries labels the scrape adds itself.
    let allowed = [
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "gen_ai_token_type",
        "error_type",
        "le",
    ];
    for sample in &samples {
        assert!(
            [DURATION, FIRST_CHUNK, TOKENS]
                .iter()
                .any(|name| sample.name.starts_with(name)),
            "{sample:?}"
        );
        if sample.labels.contains_key("error_type") && sample.name.ends_with("_count") {
            assert_eq!(sample.value, 0.0, "nothing failed: {sample:?}");
        }
        assert!(
            sample.labels.keys().all(|k| allowed.contains(&k.as_str())),
            "{sample:?}"
        );
    }
}
