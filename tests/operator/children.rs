//! The release's children: what the lab's release creates, and how they follow the release
//! when its config, autoscaling or versions change or it is deleted.

use canary_operator::api::CanaryRelease;
use canary_operator::api::istio::{DestinationRule, Gateway, VirtualService};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{DeleteParams, ListParams};
use serde_json::json;

use crate::common::lab::{
    api, apply_release, condition, create_secret, lab, patch_release, wait_event_noting,
    wait_ready, wait_weights,
};
use crate::common::operator::start_operator;
use crate::common::{WAIT, setup, wait_for};
use crate::controlled_by;

#[tokio::test]
async fn lab_example_creates_every_object_of_the_lab() {
    let Some(ns) = setup("lab-example").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    apply_release(&ns, lab()).await.expect("apply lab example");
    let release = wait_ready(&ns, "azureopenaichat").await;

    let status = release.status.clone().expect("status");
    assert_eq!(
        (status.stable_weight, status.canary_weight),
        (Some(75), Some(25))
    );
    let stable = status.stable.expect("stable status");
    let canary = status.canary.expect("canary status");
    assert_eq!(
        (stable.name.as_str(), stable.model.as_str()),
        ("v1", "gpt-4.1")
    );
    assert_eq!(
        (canary.name.as_str(), canary.model.as_str()),
        ("v2", "gpt-4o")
    );
    assert_eq!((canary.desired_replicas, canary.ready_replicas), (1, 1));
    let (_, _, message) = condition(&release, "Ready").expect("Ready");
    assert!(
        message.contains("75% to v1 (gpt-4.1), 25% to v2 (gpt-4o)"),
        "{message}"
    );
    assert_eq!(
        condition(&release, "Degraded").map(|c| c.0),
        Some("False".to_owned())
    );
    assert_eq!(
        condition(&release, "Progressing").map(|c| c.1),
        Some("RolloutComplete".to_owned())
    );

    for (version, model) in [("v1", "gpt-4.1"), ("v2", "gpt-4o")] {
        let name = format!("azureopenaichat-{version}");
        let cm = api::<ConfigMap>(&ns).get(&name).await.expect("ConfigMap");
        assert!(controlled_by(&cm, &release));
        let data = cm.data.clone().expect("data");
        assert_eq!(
            data.get("AZURE_MODEL_NAME").map(String::as_str),
            Some(model)
        );
        assert_eq!(
            data.get("AZURE_API_URL").map(String::as_str),
            Some("https://example.openai.azure.com/")
        );
        assert!(
            !data.contains_key("AZURE_API_KEY"),
            "the key stays in the Secret"
        );

        let deployment = api::<Deployment>(&ns).get(&name).await.expect("Deployment");
        assert!(controlled_by(&deployment, &release));
        let labels = deployment
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .expect("pod labels");
        assert_eq!(
            labels.get("app").map(String::as_str),
            Some("azureopenaichat")
        );
        assert_eq!(labels.get("version").map(String::as_str), Some(version));
        let container = &deployment
            .spec
            .template
            .spec
            .as_ref()
            .expect("pod spec")
            .containers[0];
        let env_from = serde_json::to_value(&container.env_from).expect("json");
        assert_eq!(
            env_from,
            json!([{"configMapRef": {"name": name}}, {"secretRef": {"name": "azure-openai"}}])
        );
        // The HPA owns the replica count: our field manager must not.
        let owns_replicas = deployment
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| {
                m.manager.as_deref() == Some("canary-operator")
                    && m.fields_v1
                        .as_ref()
                        .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
            });
        assert!(
            !owns_replicas,
            "{name}: canary-operator must not own spec.replicas when autoscaling"
        );

        let hpa = api::<HorizontalPodAutoscaler>(&ns)
            .get(&name)
            .await
            .expect("HPA");
        assert!(controlled_by(&hpa, &release));
        assert_eq!(
            (hpa.spec.min_replicas, hpa.spec.max_replicas),
            (Some(1), 10)
        );
        assert_eq!(hpa.spec.scale_target_ref.name, name);
    }

    let service = api::<Service>(&ns)
        .get("azureopenaichat")
        .await
        .expect("Service");
    assert!(controlled_by(&service, &release));
    let spec = service.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(
        spec.selector.expect("selector"),
        [
            ("app.kubernetes.io/instance", "azureopenaichat"),
            ("app.kubernetes.io/managed-by", "canary-operator"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        "only the release's own pods"
    );

    let host = format!("azureopenaichat.{}.svc.cluster.local", ns.name);
    let rule = api::<DestinationRule>(&ns)
        .get("azureopenaichat")
        .await
        .expect("DestinationRule");
    assert!(controlled_by(&rule, &release));
    assert_eq!(rule.spec.host, host);
    let subsets: Vec<_> = rule
        .spec
        .subsets
        .iter()
        .map(|s| (s.name.as_str(), s.labels["version"].as_str()))
        .collect();
    assert_eq!(subsets, [("v1", "v1"), ("v2", "v2")]);

    let vs = api::<VirtualService>(&ns)
        .get("azureopenaichat")
        .await
        .expect("VirtualService");
    assert!(controlled_by(&vs, &release));
    assert_eq!(vs.spec.gateways, ["azureopenaichat"]);
    assert_eq!(vs.spec.hosts, [ns.host("azureopenaichat")]);
    assert_eq!(vs.weights(), [("v1".to_owned(), 75), ("v2".to_owned(), 25)]);
    assert!(
        vs.spec.http[0]
            .route
            .iter()
            .all(|r| r.destination.host == host),
        "one FQDN host everywhere"
    );

    let gateway = api::<Gateway>(&ns)
        .get("azureopenaichat")
        .await
        .expect("Gateway");
    assert!(controlled_by(&gateway, &release));
    assert_eq!(
        gateway.spec.selector.get("istio").map(String::as_str),
        Some("aks-istio-ingressgateway-external")
    );
    assert_eq!(gateway.spec.servers[0].port.number, 80);
}

#[tokio::test]
async fn a_config_change_updates_the_configmap_and_rolls_the_pods() {
    let Some(ns) = setup("config-rolls").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    apply_release(&ns, lab()).await.expect("apply");
    wait_ready(&ns, "azureopenaichat").await;
    let hash = async || {
        let d = api::<Deployment>(&ns)
            .get("azureopenaichat-v2")
            .await
            .expect("deployment");
        d.spec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|a| a.get("canary.dev/config-hash").cloned())
    };
    let before = hash().await.expect("config hash");

    patch_release(
        &ns,
        "azureopenaichat",
        json!({"spec": {"config": {"AZURE_API_URL": "https://other.openai.azure.com/"}}}),
    )
    .await;
    wait_for("ConfigMap updated", WAIT, async || {
        let cm = api::<ConfigMap>(&ns).get("azureopenaichat-v2").await.ok()?;
        (cm.data?.get("AZURE_API_URL")? == "https://other.openai.azure.com/").then_some(())
    })
    .await;
    // The Deployment is applied after the ConfigMap, so it may lag it by a moment.
    let after = wait_for(
        "the pod template's config hash to change",
        WAIT,
        async || hash().await.filter(|h| *h != before),
    )
    .await;
    assert_ne!(before, after, "the pod template changed");
    wait_for("a second ReplicaSet for the canary", WAIT, async || {
        let list = api::<ReplicaSet>(&ns)
            .list(&ListParams::default().labels("version=v2"))
            .await
            .ok()?;
        (list.items.len() >= 2).then_some(())
    })
    .await;
    wait_ready(&ns, "azureopenaichat").await;
}

#[tokio::test]
async fn turning_autoscaling_off_and_on_removes_and_restores_the_hpas() {
    let Some(ns) = setup("autoscaling-toggle").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    apply_release(&ns, lab()).await.expect("apply");
    wait_ready(&ns, "azureopenaichat").await;
    let hpas = api::<HorizontalPodAutoscaler>(&ns);
    assert_eq!(
        hpas.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        2
    );

    let mut release = lab();
    release["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("autoscaling");
    release["spec"]["stable"]["replicas"] = json!(2);
    apply_release(&ns, release)
        .await
        .expect("apply without autoscaling");
    wait_for("HPAs deleted", WAIT, async || {
        hpas.list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    wait_event_noting(&ns, "Pruned", "HorizontalPodAutoscaler azureopenaichat-v1").await;
    let release = wait_ready(&ns, "azureopenaichat").await;
    assert_eq!(
        release
            .status
            .and_then(|s| s.stable)
            .map(|s| s.ready_replicas),
        Some(2)
    );
    let stable = api::<Deployment>(&ns)
        .get("azureopenaichat-v1")
        .await
        .expect("deployment");
    assert_eq!(stable.spec.replicas, Some(2));

    apply_release(&ns, lab())
        .await
        .expect("apply with autoscaling");
    wait_for("HPAs back", WAIT, async || {
        (hpas.list(&ListParams::default()).await.ok()?.items.len() == 2).then_some(())
    })
    .await;
    wait_ready(&ns, "azureopenaichat").await;
}

#[tokio::test]
async fn renaming_a_version_replaces_its_objects() {
    let Some(ns) = setup("version-rename").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    apply_release(&ns, lab()).await.expect("apply");
    wait_ready(&ns, "azureopenaichat").await;

    patch_release(
        &ns,
        "azureopenaichat",
        json!({"spec": {"canary": {"name": "v3", "model": "gpt-5"}}}),
    )
    .await;
    wait_weights(&ns, "azureopenaichat", &[("v1", 75), ("v3", 25)]).await;
    wait_for("v2 objects removed", WAIT, async || {
        let cm = api::<ConfigMap>(&ns)
            .get_opt("azureopenaichat-v2")
            .await
            .ok()?;
        let deploy = api::<Deployment>(&ns)
            .get_opt("azureopenaichat-v2")
            .await
            .ok()?;
        let hpa = api::<HorizontalPodAutoscaler>(&ns)
            .get_opt("azureopenaichat-v2")
            .await
            .ok()?;
        (cm.is_none() && deploy.is_none() && hpa.is_none()).then_some(())
    })
    .await;
    let rule = api::<DestinationRule>(&ns)
        .get("azureopenaichat")
        .await
        .expect("rule");
    assert_eq!(
        rule.spec
            .subsets
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["v1", "v3"]
    );
    let release = wait_ready(&ns, "azureopenaichat").await;
    assert_eq!(
        release.status.and_then(|s| s.canary).map(|c| c.model),
        Some("gpt-5".to_owned())
    );
}

#[tokio::test]
async fn deleting_the_release_lets_the_garbage_collector_remove_every_child() {
    let Some(ns) = setup("delete-gc").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    apply_release(&ns, lab()).await.expect("apply");
    wait_ready(&ns, "azureopenaichat").await;

    api::<CanaryRelease>(&ns)
        .delete("azureopenaichat", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("every child garbage-collected", WAIT, async || {
        let selector = ListParams::default().labels("app.kubernetes.io/instance=azureopenaichat");
        let counts = [
            api::<ConfigMap>(&ns)
                .list(&selector)
                .await
                .ok()?
                .items
                .len(),
            api::<Deployment>(&ns)
                .list(&selector)
                .await
                .ok()?
                .items
                .len(),
            api::<HorizontalPodAutoscaler>(&ns)
                .list(&selector)
                .await
                .ok()?
                .items
                .len(),
            api::<Service>(&ns).list(&selector).await.ok()?.items.len(),
            api::<DestinationRule>(&ns)
                .list(&selector)
                .await
                .ok()?
                .items
                .len(),
            api::<VirtualService>(&ns)
                .list(&selector)
                .await
                .ok()?
                .items
                .len(),
            api::<Gateway>(&ns).list(&selector).await.ok()?.items.len(),
        ];
        (counts == [0; 7]).then_some(())
    })
    .await;
    // The Secret is the user's: it is referenced, never owned, so it stays.
    assert!(
        api::<Secret>(&ns)
            .get_opt("azure-openai")
            .await
            .expect("get")
            .is_some()
    );
}
