//! Bad automatic specs: refused at admission by the CRD's schema and CEL rules, or (what the
//! schema cannot judge) reported by the operator as InvalidSpec naming the field.

use kube::Resource;
use serde_json::{Value, json};

use crate::common::lab::{assert_refused, wait_condition};
use crate::common::operator::{install_crd, start_operator};
use crate::common::setup;
use crate::stage::{NAME, analysis, apply, automatic};

fn base(ns: &crate::common::TestNs) -> Value {
    automatic(
        ns,
        &[(10, "1m", false), (50, "1m", true), (100, "1m", false)],
        Some(analysis("http://prometheus.monitoring:9090")),
    )
}

/// Each case: what is wrong, the edit, and a fragment of the apiserver's message.
#[tokio::test]
async fn bad_automatic_specs_are_refused_at_admission() {
    let Some(ns) = setup("rollout-admission").await else {
        return;
    };
    install_crd(&ns).await;
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "empty steps",
            |r| r["spec"]["strategy"]["steps"] = json!([]),
            "spec.strategy.steps",
        ),
        (
            "decreasing weights",
            |r| r["spec"]["strategy"]["steps"][1]["weight"] = json!(5),
            "strictly increasing",
        ),
        (
            "repeated weight",
            |r| r["spec"]["strategy"]["steps"][1]["weight"] = json!(10),
            "strictly increasing",
        ),
        (
            "last weight not 100",
            |r| r["spec"]["strategy"]["steps"][2]["weight"] = json!(90),
            "the last step's weight must be 100",
        ),
        (
            "weight 0 in a step",
            |r| r["spec"]["strategy"]["steps"][0]["weight"] = json!(0),
            "spec.strategy.steps[0].weight",
        ),
        (
            "bad duration",
            |r| r["spec"]["strategy"]["steps"][0]["duration"] = json!("5 minutes"),
            "spec.strategy.steps[0].duration",
        ),
        (
            "duration as a number",
            |r| r["spec"]["strategy"]["steps"][0]["duration"] = json!(300),
            "spec.strategy.steps[0].duration",
        ),
        (
            "both weight and strategy",
            |r| r["spec"]["weight"] = json!(10),
            "set exactly one of weight",
        ),
        (
            "neither weight nor strategy",
            |r| {
                let spec = r["spec"].as_object_mut().expect("spec");
                spec.remove("strategy");
                spec.remove("analysis");
            },
            "set exactly one of weight",
        ),
        (
            "analysis without strategy",
            |r| {
                let spec = r["spec"].as_object_mut().expect("spec");
                spec.remove("strategy");
                spec.insert("weight".to_owned(), json!(5));
            },
            "analysis applies only to an automatic release",
        ),
        (
            "address not a URL",
            |r| r["spec"]["analysis"]["prometheus"]["address"] = json!("prometheus:9090"),
            "spec.analysis.prometheus.address",
        ),
        (
            "min above max",
            |r| r["spec"]["analysis"]["checks"][0]["min"] = json!(1.0),
            "min must not exceed max",
        ),
        (
            "a check without a bound",
            |r| {
                let check = r["spec"]["analysis"]["checks"][0]
                    .as_object_mut()
                    .expect("check");
                check.remove("max");
                check.remove("compareToStable");
            },
            "a check needs a bound",
        ),
        (
            "minRatio above maxRatio",
            |r| r["spec"]["analysis"]["checks"][0]["compareToStable"]["minRatio"] = json!(3.0),
            "minRatio must not exceed maxRatio",
        ),
        (
            "empty comparison",
            |r| r["spec"]["analysis"]["checks"][0]["compareToStable"] = json!({}),
            "set minRatio, maxRatio or maxIncrease",
        ),
        (
            "negative failureLimit",
            |r| r["spec"]["analysis"]["failureLimit"] = json!(-1),
            "spec.analysis.failureLimit",
        ),
        (
            "errorLimit 0",
            |r| r["spec"]["analysis"]["errorLimit"] = json!(0),
            "spec.analysis.errorLimit",
        ),
        (
            "duplicate check names",
            |r| {
                let check = r["spec"]["analysis"]["checks"][0].clone();
                r["spec"]["analysis"]["checks"]
                    .as_array_mut()
                    .expect("checks")
                    .push(check);
            },
            "check names must be unique",
        ),
        (
            "the same built-in check twice",
            |r| {
                r["spec"]["analysis"]["checks"] =
                    json!([{"builtin": "error-rate"}, {"builtin": "error-rate"}])
            },
            "check names must be unique",
        ),
        (
            "a built-in check with a query",
            |r| r["spec"]["analysis"]["checks"][0]["builtin"] = json!("error-rate"),
            "set query (a check of your own) or builtin, not both",
        ),
        (
            "an own check without a name",
            |r| {
                let check = r["spec"]["analysis"]["checks"][0]
                    .as_object_mut()
                    .expect("check");
                check.remove("name");
            },
            "a check of your own needs a name",
        ),
        (
            "an unknown built-in check",
            |r| r["spec"]["analysis"]["checks"] = json!([{"builtin": "error-ratio"}]),
            "spec.analysis.checks[0].builtin",
        ),
        (
            "an unknown action",
            |r| r["spec"]["analysis"]["checks"][0]["action"] = json!("Panic"),
            "spec.analysis.checks[0].action",
        ),
        (
            "minSamples on an own check",
            |r| r["spec"]["analysis"]["checks"][0]["minSamples"] = json!(10),
            "minSamples applies to built-in checks",
        ),
        (
            "negative pricing",
            |r| {
                r["spec"]["canary"]["pricing"] =
                    json!({"inputPerMillionTokens": -1, "outputPerMillionTokens": 1})
            },
            "spec.canary.pricing.inputPerMillionTokens",
        ),
        (
            "check name not a DNS label",
            |r| r["spec"]["analysis"]["checks"][0]["name"] = json!("Error Rate"),
            "spec.analysis.checks[0].name",
        ),
        (
            "unknown field",
            |r| r["spec"]["strategy"]["stepz"] = json!([]),
            "stepz",
        ),
    ];
    assert!(cases.len() >= 12);
    for (i, (what, edit, fragment)) in cases.into_iter().enumerate() {
        let mut release = base(&ns);
        release["metadata"]["name"] = json!(format!("bad-{i}"));
        edit(&mut release);
        assert_refused(&ns, &release, what, fragment).await;
    }
    // The base itself is accepted: each refusal above is the edit's.
    let mut good = base(&ns);
    good["metadata"]["name"] = json!("good");
    crate::common::lab::apply_release(&ns, good)
        .await
        .expect("the base release is accepted");
}

/// What only the operator can judge: reported as InvalidSpec with the field, nothing created.
#[tokio::test]
async fn what_the_schema_cannot_judge_is_reported_with_its_field() {
    let Some(ns) = setup("rollout-invalid").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "unknown placeholder",
            |r| r["spec"]["analysis"]["checks"][0]["query"] = json!("up{pod=\"{{pod}}\"}"),
            "spec.analysis.checks[0].query: unknown placeholder {{pod}}",
        ),
        (
            "timeout longer than the interval",
            |r| r["spec"]["analysis"]["prometheus"]["timeout"] = json!("5s"),
            "spec.analysis.prometheus.timeout",
        ),
        (
            "cost-per-request without the versions' prices",
            |r| r["spec"]["analysis"]["checks"] = json!([{"builtin": "cost-per-request"}]),
            "spec.canary.pricing: cost-per-request needs each version's pricing (model gpt-4o)",
        ),
        (
            "a floor on a share of requests",
            |r| r["spec"]["analysis"]["checks"] = json!([{"builtin": "rate-limited", "min": 0.01}]),
            "min and minRatio do not apply",
        ),
        (
            "interval below the operator's minimum (1s here)",
            |r| r["spec"]["analysis"]["interval"] = json!("500ms"),
            "spec.analysis.interval: 500ms is shorter than the operator's minimum of 1s",
        ),
    ];
    for (what, edit, fragment) in cases {
        let mut release = base(&ns);
        edit(&mut release);
        apply(&ns, release).await;
        let invalid = wait_condition(&ns, NAME, "Degraded", "True", "InvalidSpec").await;
        let message = invalid
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Degraded"))
            .map(|c| c.message.clone())
            .unwrap_or_default();
        assert!(
            message.contains(fragment),
            "{what}: {message:?} lacks {fragment:?}"
        );
        assert!(
            invalid
                .status
                .as_ref()
                .and_then(|s| s.rollout.as_ref())
                .is_none(),
            "{what}: no rollout started"
        );
        let _ = invalid.meta();
    }
}
