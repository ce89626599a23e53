//! Drift and ownership: edits and deletions by hand are put back; an object the operator did not
//! create is never overwritten or adopted.

use canary_operator::api::istio::{DestinationRule, VirtualService};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::lab::{
    api, apply_release, condition, create_secret, lab, wait_condition, wait_event_noting,
    wait_ready, wait_weights,
};
use crate::common::operator::start_operator;
use crate::common::{WAIT, setup, wait_for};
use crate::settle;

#[tokio::test]
async fn manual_edits_and_deletions_are_put_back_with_an_event() {
    let Some(ns) = setup("drift").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    apply_release(&ns, lab()).await.expect("apply");
    wait_ready(&ns, "azureopenaichat").await;

    // Someone edits the split by hand, as `kubectl edit` would (an update by another manager).
    let services = api::<VirtualService>(&ns);
    let mut vs = services.get("azureopenaichat").await.expect("vs");
    vs.spec.http[0].route[0].weight = 10;
    vs.spec.http[0].route[1].weight = 90;
    services
        .replace("azureopenaichat", &PostParams::default(), &vs)
        .await
        .expect("manual edit");
    wait_weights(&ns, "azureopenaichat", &[("v1", 75), ("v2", 25)]).await;
    wait_event_noting(
        &ns,
        "DriftCorrected",
        "VirtualService azureopenaichat was changed outside the operator",
    )
    .await;

    api::<DestinationRule>(&ns)
        .delete("azureopenaichat", &DeleteParams::default())
        .await
        .expect("delete rule");
    wait_for("DestinationRule recreated", WAIT, async || {
        api::<DestinationRule>(&ns)
            .get_opt("azureopenaichat")
            .await
            .ok()
            .flatten()
    })
    .await;
    wait_event_noting(
        &ns,
        "DriftCorrected",
        "DestinationRule azureopenaichat was deleted; recreated it",
    )
    .await;

    // Without the managed-by label the Service is no longer one of the operator's in its cache,
    // only a name with an owner reference: still the release's, so it is relabelled, not left alone.
    let managed_by = "app.kubernetes.io/managed-by";
    api::<Service>(&ns)
        .patch(
            "azureopenaichat",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {managed_by: null}}})),
        )
        .await
        .expect("remove the label");
    wait_for("Service relabelled", WAIT, async || {
        let service = api::<Service>(&ns).get("azureopenaichat").await.ok()?;
        (service.labels().get(managed_by).map(String::as_str) == Some("canary-operator"))
            .then_some(())
    })
    .await;
    wait_event_noting(
        &ns,
        "DriftCorrected",
        "Service azureopenaichat was changed outside the operator",
    )
    .await;
}

#[tokio::test]
async fn an_object_we_did_not_create_is_never_overwritten_or_adopted() {
    let Some(ns) = setup("conflict").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    let theirs: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "azureopenaichat-v1", "labels": {"team": "someone-else"}},
        "data": {"AZURE_MODEL_NAME": "their-model"},
    }))
    .expect("cm");
    let configmaps = api::<ConfigMap>(&ns);
    configmaps
        .create(&PostParams::default(), &theirs)
        .await
        .expect("create theirs");
    create_secret(&ns).await;
    apply_release(&ns, lab()).await.expect("apply");

    let release = wait_condition(
        &ns,
        "azureopenaichat",
        "Ready",
        "False",
        "OwnershipConflict",
    )
    .await;
    let (_, _, message) = condition(&release, "Ready").expect("Ready");
    assert!(
        message.contains(&format!(
            "ConfigMap {}/azureopenaichat-v1 already exists",
            ns.name
        )),
        "{message}"
    );
    assert_eq!(
        condition(&release, "Degraded").map(|c| c.0),
        Some("True".to_owned())
    );
    wait_event_noting(&ns, "OwnershipConflict", "azureopenaichat-v1").await;
    settle().await;

    let after = configmaps.get("azureopenaichat-v1").await.expect("theirs");
    assert_eq!(after.data, theirs.data, "their data is untouched");
    assert!(after.metadata.owner_references.is_none(), "not adopted");
    assert_eq!(after.labels().get("app.kubernetes.io/managed-by"), None);
    assert!(
        configmaps
            .get_opt("azureopenaichat-v2")
            .await
            .expect("get")
            .is_none(),
        "nothing else was created"
    );
    assert!(
        api::<VirtualService>(&ns)
            .get_opt("azureopenaichat")
            .await
            .expect("get")
            .is_none()
    );

    // Once their object is gone, the release converges.
    configmaps
        .delete("azureopenaichat-v1", &DeleteParams::default())
        .await
        .expect("delete theirs");
    wait_ready(&ns, "azureopenaichat").await;
}
