//! Invalid specs: refused at admission by the schema, or reported as conditions and Events by the
//! operator; a child the apiserver refuses is reported, not retried.

use std::time::Duration;

use canary_operator::api::CanaryRelease;
use canary_operator::api::istio::VirtualService;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use serde_json::{Value, json};

use crate::common::lab::{
    api, apply_release, assert_refused, condition, create_secret, lab, wait_condition,
    wait_event_noting, wait_ready,
};
use crate::common::operator::{install_crd, start_operator};
use crate::common::setup;
use crate::settle;

/// Each case: a change to the lab example, and a fragment of the apiserver's rejection message.
#[tokio::test]
async fn invalid_specs_are_rejected_at_admission() {
    let Some(ns) = setup("admission").await else {
        return;
    };
    install_crd(&ns).await;
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "weight above 100",
            |r| r["spec"]["weight"] = json!(101),
            "spec.weight",
        ),
        (
            "negative weight",
            |r| r["spec"]["weight"] = json!(-1),
            "spec.weight",
        ),
        (
            "weight as a string",
            |r| r["spec"]["weight"] = json!("25"),
            "spec.weight",
        ),
        (
            "same version names",
            |r| r["spec"]["canary"]["name"] = json!("v1"),
            "stable.name and canary.name must differ",
        ),
        (
            "version name not a DNS label",
            |r| r["spec"]["canary"]["name"] = json!("V2_new"),
            "spec.canary.name",
        ),
        (
            "min above max",
            |r| r["spec"]["autoscaling"]["minReplicas"] = json!(11),
            "minReplicas must not exceed maxReplicas",
        ),
        ("port 0", |r| r["spec"]["port"] = json!(0), "spec.port"),
        (
            "port above 65535",
            |r| r["spec"]["port"] = json!(70000),
            "spec.port",
        ),
        (
            "empty image",
            |r| r["spec"]["image"] = json!(""),
            "spec.image",
        ),
        (
            "empty model",
            |r| r["spec"]["stable"]["model"] = json!(""),
            "spec.stable.model",
        ),
        (
            "no model",
            |r| {
                r["spec"]["canary"]
                    .as_object_mut()
                    .expect("canary")
                    .remove("model");
            },
            "spec.canary.model",
        ),
        (
            "gateway both created and existing",
            |r| r["spec"]["gateway"]["existing"] = json!(["gw"]),
            "set exactly one of gateway.selector",
        ),
        (
            "gateway neither",
            |r| {
                r["spec"]["gateway"]
                    .as_object_mut()
                    .expect("gw")
                    .remove("selector");
                r["spec"]["gateway"]
                    .as_object_mut()
                    .expect("gw")
                    .remove("port");
            },
            "set exactly one of gateway.selector",
        ),
        (
            "replicas with autoscaling",
            |r| r["spec"]["stable"]["replicas"] = json!(3),
            "must be unset when autoscaling is set",
        ),
        (
            "model variable not a name",
            |r| r["spec"]["modelEnv"] = json!("1-MODEL"),
            "spec.modelEnv",
        ),
        (
            "gateway port on an existing gateway",
            |r| {
                r["spec"]["gateway"]
                    .as_object_mut()
                    .expect("gw")
                    .remove("selector");
                r["spec"]["gateway"]["existing"] = json!(["gw"]);
            },
            "gateway.port applies only",
        ),
        (
            "unknown field",
            |r| r["spec"]["wieght"] = json!(30),
            "wieght",
        ),
        (
            "unknown traffic provider",
            |r| r["spec"]["traffic"] = json!({"provider": "linkerd"}),
            "spec.traffic.provider",
        ),
        (
            "no gateway and no mesh",
            |r| {
                r["spec"].as_object_mut().expect("spec").remove("gateway");
            },
            "traffic.mesh: true (calls inside the mesh only)",
        ),
        (
            "gatewayAPI without its settings",
            |r| {
                r["spec"].as_object_mut().expect("spec").remove("gateway");
                r["spec"]["traffic"] = json!({"provider": "gatewayAPI"});
            },
            "traffic.gatewayAPI is set with provider gatewayAPI, and only then",
        ),
        (
            "gatewayAPI settings with istio",
            |r| r["spec"]["traffic"] = json!({"gatewayAPI": {"parentRefs": [{"name": "gw"}]}}),
            "traffic.gatewayAPI is set with provider gatewayAPI, and only then",
        ),
        (
            "an Istio gateway with gatewayAPI",
            |r| {
                r["spec"]["traffic"] = json!({"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}})
            },
            "gateway is for the istio provider",
        ),
        (
            "mesh with gatewayAPI",
            |r| {
                r["spec"].as_object_mut().expect("spec").remove("gateway");
                r["spec"]["traffic"] = json!({"provider": "gatewayAPI", "mesh": true, "gatewayAPI": {"parentRefs": [{"name": "gw"}]}});
            },
            "traffic.mesh applies to the istio provider",
        ),
        (
            "no parentRefs",
            |r| {
                r["spec"].as_object_mut().expect("spec").remove("gateway");
                r["spec"]["traffic"] =
                    json!({"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": []}});
            },
            "spec.traffic.gatewayAPI.parentRefs",
        ),
        (
            "a parentRef port out of range",
            |r| {
                r["spec"].as_object_mut().expect("spec").remove("gateway");
                r["spec"]["traffic"] = json!({"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw", "port": 0}]}});
            },
            "spec.traffic.gatewayAPI.parentRefs[0].port",
        ),
        (
            "seventeen hostnames",
            |r| {
                r["spec"].as_object_mut().expect("spec").remove("gateway");
                let hosts: Vec<String> = (0..17).map(|i| format!("h{i}.example.com")).collect();
                r["spec"]["traffic"] = json!({"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}], "hostnames": hosts}});
            },
            "spec.traffic.gatewayAPI.hostnames",
        ),
        (
            "mesh as a string",
            |r| r["spec"]["traffic"] = json!({"mesh": "yes"}),
            "spec.traffic.mesh",
        ),
        (
            "stickiness by cookie and header",
            |r| {
                r["spec"]["traffic"] =
                    json!({"stickiness": {"cookie": {"name": "c"}, "header": {"name": "x-c"}}})
            },
            "set exactly one of stickiness.cookie",
        ),
        (
            "stickiness by neither",
            |r| r["spec"]["traffic"] = json!({"stickiness": {}}),
            "set exactly one of stickiness.cookie",
        ),
        (
            "a cookie name with a semicolon",
            |r| r["spec"]["traffic"] = json!({"stickiness": {"cookie": {"name": "a;b"}}}),
            "spec.traffic.stickiness.cookie.name",
        ),
        (
            "an uppercase header name",
            |r| r["spec"]["traffic"] = json!({"stickiness": {"header": {"name": "X-Canary"}}}),
            "spec.traffic.stickiness.header.name",
        ),
    ];
    for (i, (what, edit, fragment)) in cases.into_iter().enumerate() {
        let mut release = lab();
        release["metadata"]["name"] = json!(format!("bad-{i}"));
        release["metadata"]["namespace"] = json!(ns.name);
        edit(&mut release);
        assert_refused(&ns, &release, what, fragment).await;
    }
    let releases = api::<CanaryRelease>(&ns);
    assert!(
        releases
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

/// Specs the schema accepts but the operator cannot act on: a condition and an Event, and no child.
#[tokio::test]
async fn specs_the_schema_cannot_judge_are_reported_as_conditions() {
    let Some(ns) = setup("invalid-spec").await else {
        return;
    };
    let operator = start_operator(&ns).await;
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "API key in config",
            |r| r["spec"]["config"]["AZURE_API_KEY"] = json!("sk-123"),
            "spec.config.AZURE_API_KEY: AZURE_API_KEY looks like a credential",
        ),
        (
            "a bearer token under a harmless name",
            |r| r["spec"]["config"]["AUTH_HEADER"] = json!("Bearer sk-proj-abc123"),
            "spec.config.AUTH_HEADER: the value of AUTH_HEADER looks like a credential (an Authorization header value",
        ),
        (
            "model variable in config",
            |r| r["spec"]["config"]["AZURE_MODEL_NAME"] = json!("x"),
            "AZURE_MODEL_NAME is set from stable.model and canary.model",
        ),
        (
            "bad variable name",
            |r| r["spec"]["canary"]["config"] = json!({"MY VAR": "1"}),
            "spec.canary.config.MY VAR",
        ),
        (
            "URL as a host",
            |r| r["spec"]["gateway"]["hosts"] = json!(["https://chat.example.com"]),
            "is not a host name",
        ),
        (
            "three-part gateway reference",
            |r| {
                r["spec"]["gateway"] = json!({"existing": ["a/b/c"]});
            },
            "is not a gateway reference",
        ),
        (
            "name unusable for a Service",
            |r| r["metadata"]["name"] = json!("chat.v1"),
            "cannot name the release's Service",
        ),
        (
            "the mesh named as a gateway",
            |r| r["spec"]["gateway"] = json!({"existing": ["mesh"]}),
            "\"mesh\" is not a gateway: set traffic.mesh: true",
        ),
        (
            "a sticky header that carries something else",
            |r| r["spec"]["traffic"] = json!({"stickiness": {"header": {"name": "cookie"}}}),
            "spec.traffic.stickiness.header.name: \"cookie\" carries something else",
        ),
        (
            "the same Gateway twice",
            |r| {
                r["spec"].as_object_mut().expect("spec").remove("gateway");
                r["spec"]["traffic"] = json!({"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}, {"name": "gw"}]}});
            },
            "spec.traffic.gatewayAPI.parentRefs[1]: names the same Gateway",
        ),
        (
            "a version's Service name too long",
            |r| {
                r["spec"].as_object_mut().expect("spec").remove("gateway");
                r["spec"]["traffic"] = json!({"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}});
                r["spec"]["canary"]["name"] = json!(format!("v{}", "2".repeat(55)));
            },
            "is not a valid Service name (at most 63 characters)",
        ),
    ];
    let mut names = Vec::new();
    for (i, (what, edit, fragment)) in cases.iter().enumerate() {
        let mut release = lab();
        release["metadata"]["name"] = json!(format!("invalid-{i}"));
        edit(&mut release);
        let name = release["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        apply_release(&ns, release)
            .await
            .unwrap_or_else(|e| panic!("{what}: the schema should accept it: {e}"));
        names.push((name, *what, *fragment));
    }
    for (name, what, fragment) in &names {
        let release = wait_condition(&ns, name, "Ready", "False", "InvalidSpec").await;
        let (_, _, message) = condition(&release, "Degraded").expect("Degraded");
        assert!(
            message.contains(fragment),
            "{what}: {message:?} lacks {fragment:?}"
        );
        assert!(
            !message.contains("sk-proj"),
            "{what}: a credential is never repeated in status: {message:?}"
        );
        wait_event_noting(&ns, "InvalidSpec", fragment).await;
    }
    settle().await;
    let children = api::<ConfigMap>(&ns)
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=canary-operator"))
        .await
        .expect("list");
    assert!(
        children.items.is_empty(),
        "no child of an invalid release is created"
    );
    assert!(
        api::<VirtualService>(&ns)
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );

    // Invalid specs wait for a change instead of retrying: no further writes while nothing changes.
    let writes = operator.writes();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        operator.writes(),
        writes,
        "an invalid spec must not be retried in a loop"
    );

    // Fixing the spec is enough to converge.
    let mut fixed = lab();
    fixed["metadata"]["name"] = json!("invalid-0");
    create_secret(&ns).await;
    apply_release(&ns, fixed).await.expect("fix");
    wait_ready(&ns, "invalid-0").await;
}

#[tokio::test]
async fn a_child_the_apiserver_refuses_is_reported_not_retried() {
    let Some(ns) = setup("rejected-child").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    let mut release = lab();
    release["spec"]["canary"]["resources"] =
        json!({"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}});
    apply_release(&ns, release).await.expect("apply");
    let release = wait_condition(&ns, "azureopenaichat", "Ready", "False", "Rejected").await;
    let (_, _, message) = condition(&release, "Degraded").expect("Degraded");
    assert!(message.contains("azureopenaichat-v2"), "{message}");
    assert!(
        message.contains("must be less than or equal to memory limit"),
        "{message}"
    );
}
