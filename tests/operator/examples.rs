//! Every release under examples/ applies and becomes ready.

use canary_operator::api::istio::{Gateway, VirtualService};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;

use crate::common::examples::example;
use crate::common::lab::{api, apply_release, create_secret, wait_ready};
use crate::common::operator::start_operator;
use crate::common::setup;

#[tokio::test]
async fn every_example_applies_and_becomes_ready() {
    let Some(ns) = setup("examples").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    let mut names = Vec::new();
    for file in [
        "lab.yaml",
        "existing-gateway.yaml",
        "no-autoscaling.yaml",
        "image-override.yaml",
        "chat-backend.yaml",
    ] {
        let release = example(file);
        names.push(
            release["metadata"]["name"]
                .as_str()
                .expect("name")
                .to_owned(),
        );
        apply_release(&ns, release)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    for name in &names {
        wait_ready(&ns, name).await;
    }
    let shared = api::<VirtualService>(&ns)
        .get("chat-shared-gateway")
        .await
        .expect("vs");
    assert_eq!(shared.spec.gateways, ["istio-ingress/public"]);
    assert!(
        api::<Gateway>(&ns)
            .get_opt("chat-shared-gateway")
            .await
            .expect("get")
            .is_none()
    );
    let canary = api::<Deployment>(&ns)
        .get("chat-new-build-v2")
        .await
        .expect("deployment");
    let container = &canary.spec.template.spec.expect("pod").containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("myregistry.azurecr.io/canarydeploymentapplication:1.5.0-rc1")
    );
    let fixed = api::<Deployment>(&ns)
        .get("chat-fixed-stable")
        .await
        .expect("deployment");
    assert_eq!(fixed.spec.replicas, Some(3));
    let cm = api::<ConfigMap>(&ns)
        .get("chat-new-build-v2")
        .await
        .expect("cm");
    assert_eq!(
        cm.data.expect("data").get("LOG_LEVEL").map(String::as_str),
        Some("debug")
    );
}
