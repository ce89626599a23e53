//! The Gateway API provider against a real Gateway API controller: the local istiod, which
//! programs Gateways of class `istio` and writes in each HTTPRoute's status whether it took it.

use std::collections::BTreeMap;
use std::time::Duration;

use canary_operator::api::gateway_api::HTTPRoute;
use canary_operator::api::istio::{DestinationRule, VirtualService};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::runtime::watcher;
use serde_json::json;

use crate::common::gateway_api::{
    PLATFORM, gateway, parent_conditions, platform_gateway, routed_by_gateway_api,
    wait_route_weights,
};
use crate::common::lab::{
    api, apply_release, condition, create_secret, patch_release, release, wait_condition,
    wait_event_noting, wait_gone, wait_ready, wait_weights,
};
use crate::common::operator::{Operator, start_operator};
use crate::common::{TestNs, setup};
use crate::{controlled_by, settle};

const NAME: &str = "azureopenaichat";

fn split(stable: i32, canary: i32) -> [(&'static str, i32); 2] {
    [
        ("azureopenaichat-v1", stable),
        ("azureopenaichat-v2", canary),
    ]
}

/// The operator, and the lab's release routed by an HTTPRoute on the platform's Gateway.
pub async fn routed_lab(ns: &TestNs) -> Operator {
    let operator = start_operator(ns).await;
    create_secret(ns).await;
    platform_gateway(ns).await;
    apply_release(ns, routed_by_gateway_api(ns, release(ns, NAME), PLATFORM))
        .await
        .expect("apply");
    operator
}

#[tokio::test]
async fn an_httproute_that_istiod_accepts_splits_between_the_versions_services() {
    let Some(ns) = setup("gateway-api").await else {
        return;
    };
    let _operator = routed_lab(&ns).await;
    let ready = wait_ready(&ns, NAME).await;
    let status = ready.status.as_ref().expect("status");
    assert_eq!(
        (status.stable_weight, status.canary_weight),
        (Some(75), Some(25))
    );

    // The route: the lab's 75/25 between the versions' Services, attached to the platform's
    // listener for the release's own host, and accepted by istiod.
    let route = wait_route_weights(&ns, NAME, &split(75, 25)).await;
    assert!(controlled_by(&route, &ready));
    assert_eq!(route.spec.hostnames, [ns.host(NAME)]);
    let parent = &route.spec.parent_refs[0];
    assert_eq!(
        (
            parent.namespace.as_deref(),
            parent.name.as_str(),
            parent.section_name.as_deref()
        ),
        (Some(PLATFORM.0), PLATFORM.1, Some("http"))
    );
    let conditions = parent_conditions(&route);
    for type_ in ["Accepted", "ResolvedRefs"] {
        assert!(
            conditions
                .iter()
                .any(
                    |(controller, t, status, _)| controller == "istio.io/gateway-controller"
                        && t == type_
                        && status == "True"
                ),
            "{type_}: {conditions:?}"
        );
    }

    // One Service per version over that version's pods, besides the release's own; no Istio
    // routing objects.
    let services = api::<Service>(&ns);
    for version in ["v1", "v2"] {
        let service = services
            .get(&format!("{NAME}-{version}"))
            .await
            .expect("the version's Service");
        assert!(controlled_by(&service, &ready));
        let selector = service.spec.and_then(|s| s.selector).unwrap_or_default();
        assert_eq!(selector.get("version").map(String::as_str), Some(version));
        assert_eq!(
            selector
                .get("app.kubernetes.io/instance")
                .map(String::as_str),
            Some(NAME)
        );
    }
    services.get(NAME).await.expect("the release's Service");
    assert!(
        api::<VirtualService>(&ns)
            .get_opt(NAME)
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        api::<DestinationRule>(&ns)
            .get_opt(NAME)
            .await
            .expect("get")
            .is_none()
    );

    // Weight edits reach the route, and the status reads them back from it.
    for weight in [60, 0, 100] {
        patch_release(&ns, NAME, json!({"spec": {"weight": weight}})).await;
        wait_route_weights(&ns, NAME, &split(100 - weight, weight)).await;
        let release = wait_ready(&ns, NAME).await;
        assert_eq!(release.status.and_then(|s| s.canary_weight), Some(weight));
    }
}

#[tokio::test]
async fn a_route_its_gateway_does_not_accept_makes_the_release_not_ready() {
    let Some(ns) = setup("gateway-api-refused").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    platform_gateway(&ns).await;
    // A Gateway whose listener takes routes from its own namespace only.
    let closed = ("gateway-same-namespace", "closed");
    gateway(&ns, closed.0, closed.1, "Same").await;
    apply_release(&ns, routed_by_gateway_api(&ns, release(&ns, NAME), closed))
        .await
        .expect("apply");
    let refused = wait_condition(&ns, NAME, "Ready", "False", "NotAllowedByListeners").await;
    let (_, _, message) = condition(&refused, "Ready").expect("Ready");
    assert!(
        message.contains("Gateway gateway-same-namespace/closed (listener http)")
            && message.contains("Accepted=False"),
        "{message}"
    );
    let degraded = condition(&refused, "Degraded").expect("Degraded");
    assert_eq!(
        (degraded.0.as_str(), degraded.1.as_str()),
        ("True", "NotAllowedByListeners")
    );
    wait_event_noting(
        &ns,
        "NotAllowedByListeners",
        "gateway-same-namespace/closed",
    )
    .await;

    // A Gateway that does not exist: no controller says anything about the route.
    let missing =
        json!({"spec": {"traffic": {"gatewayAPI": {"parentRefs": [{"name": "nowhere"}]}}}});
    patch_release(&ns, NAME, missing).await;
    let pending = wait_condition(&ns, NAME, "Ready", "False", "RoutePending").await;
    let (_, _, message) = condition(&pending, "Ready").expect("Ready");
    assert!(
        message.contains(&format!("Gateway {}/nowhere", ns.name)),
        "{message}"
    );

    // The platform's Gateway takes it.
    let platform = json!({"spec": {"traffic": {"gatewayAPI": {"parentRefs": [
        {"name": PLATFORM.1, "namespace": PLATFORM.0, "sectionName": "http"}
    ]}}}});
    patch_release(&ns, NAME, platform).await;
    wait_ready(&ns, NAME).await;
}

/// One watch event of a route: which kind, whether it exists afterwards, and the resourceVersion
/// that orders it among the events of both kinds.
#[derive(Debug)]
struct Seen {
    kind: &'static str,
    exists: bool,
    version: u64,
}

/// Follows the route objects of kind `K` named `name`, sending what it sees on `tx`.
fn follow<K>(
    ns: &TestNs,
    kind: &'static str,
    tx: tokio::sync::mpsc::UnboundedSender<Seen>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={NAME}"));
    let stream = watcher(api::<K>(ns), config);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let (object, exists) = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    let exists = o.meta().deletion_timestamp.is_none();
                    (o, exists)
                }
                Ok(watcher::Event::Delete(o)) => (o, false),
                _ => continue,
            };
            let version = object
                .resource_version()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if tx
                .send(Seen {
                    kind,
                    exists,
                    version,
                })
                .is_err()
            {
                return;
            }
        }
    })
}

/// A release moved from Istio to the Gateway API and back: the new provider's route is created
/// before the old one is deleted, so at no moment does neither exist. Both kinds are watched, and
/// their events put in one order by resourceVersion (one etcd revision counter for all kinds).
#[tokio::test]
async fn switching_provider_leaves_no_moment_without_a_route() {
    let Some(ns) = setup("gateway-api-switch").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    platform_gateway(&ns).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watches = [
        follow::<VirtualService>(&ns, "VirtualService", tx.clone()),
        follow::<HTTPRoute>(&ns, "HTTPRoute", tx),
    ];
    let istio = release(&ns, NAME);
    apply_release(&ns, istio.clone()).await.expect("apply");
    wait_ready(&ns, NAME).await;
    wait_weights(&ns, NAME, &[("v1", 75), ("v2", 25)]).await;

    apply_release(&ns, routed_by_gateway_api(&ns, istio.clone(), PLATFORM))
        .await
        .expect("switch to the Gateway API");
    wait_gone::<VirtualService>(&ns, NAME).await;
    wait_gone::<DestinationRule>(&ns, NAME).await;
    wait_route_weights(&ns, NAME, &split(75, 25)).await;
    wait_ready(&ns, NAME).await;

    apply_release(&ns, istio)
        .await
        .expect("switch back to Istio");
    wait_gone::<HTTPRoute>(&ns, NAME).await;
    wait_gone::<Service>(&ns, &format!("{NAME}-v1")).await;
    wait_gone::<Service>(&ns, &format!("{NAME}-v2")).await;
    let ready = wait_ready(&ns, NAME).await;
    assert_eq!(ready.status.and_then(|s| s.canary_weight), Some(25));
    // The watches' last events may trail the waits above by a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for watch in watches {
        watch.abort();
    }

    let mut seen = Vec::new();
    while let Ok(event) = rx.try_recv() {
        seen.push(event);
    }
    seen.sort_by_key(|s| s.version);
    let mut exists: BTreeMap<&str, bool> = BTreeMap::new();
    let mut routed_once = false;
    let mut creations = BTreeMap::<&str, usize>::new();
    for event in &seen {
        let before = exists.insert(event.kind, event.exists);
        if event.exists && before != Some(true) {
            *creations.entry(event.kind).or_default() += 1;
        }
        let any = exists.values().any(|e| *e);
        routed_once |= any;
        assert!(
            any || !routed_once,
            "no route at all at resourceVersion {}: {seen:?}",
            event.version
        );
    }
    assert_eq!(
        creations,
        BTreeMap::from([("HTTPRoute", 1), ("VirtualService", 2)]),
        "each switch created the other route: {seen:?}"
    );
}

/// The Gateway API's objects are the operator's like the others: a hand edit of the HTTPRoute and
/// a deleted version Service are put back with an Event, and a Service of someone else's that has
/// a version Service's name is neither overwritten nor adopted.
#[tokio::test]
async fn the_routes_objects_are_kept_and_never_taken_from_others() {
    let Some(ns) = setup("gateway-api-drift").await else {
        return;
    };
    let _operator = routed_lab(&ns).await;
    wait_ready(&ns, NAME).await;

    let routes = api::<HTTPRoute>(&ns);
    let mut route = routes.get(NAME).await.expect("HTTPRoute");
    route.spec.rules[0].backend_refs[0].weight = Some(10);
    route.spec.rules[0].backend_refs[1].weight = Some(90);
    routes
        .replace(NAME, &Default::default(), &route)
        .await
        .expect("manual edit");
    wait_route_weights(&ns, NAME, &split(75, 25)).await;
    wait_event_noting(
        &ns,
        "DriftCorrected",
        &format!("HTTPRoute {NAME} was changed outside the operator"),
    )
    .await;

    let canary_service = format!("{NAME}-v2");
    api::<Service>(&ns)
        .delete(&canary_service, &Default::default())
        .await
        .expect("delete the canary's Service");
    wait_event_noting(
        &ns,
        "DriftCorrected",
        &format!("Service {canary_service} was deleted; recreated it"),
    )
    .await;
    wait_ready(&ns, NAME).await;

    // Another release whose stable's Service name is taken by someone else's Service.
    let theirs: Service = serde_json::from_value(json!({
        "metadata": {"name": "other-v1", "labels": {"team": "someone-else"}},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "theirs"}},
    }))
    .expect("their Service");
    api::<Service>(&ns)
        .create(&Default::default(), &theirs)
        .await
        .expect("create theirs");
    apply_release(
        &ns,
        routed_by_gateway_api(&ns, release(&ns, "other"), PLATFORM),
    )
    .await
    .expect("apply the other release");
    let refused = wait_condition(&ns, "other", "Ready", "False", "OwnershipConflict").await;
    let (_, _, message) = condition(&refused, "Ready").expect("Ready");
    assert!(
        message.contains(&format!("Service {}/other-v1 already exists", ns.name)),
        "{message}"
    );
    settle().await;
    let after = api::<Service>(&ns).get("other-v1").await.expect("theirs");
    assert!(after.metadata.owner_references.is_none(), "not adopted");
    assert_eq!(
        after.spec.and_then(|s| s.selector),
        Some(BTreeMap::from([("app".to_owned(), "theirs".to_owned())])),
        "not overwritten"
    );
    assert!(
        routes.get_opt("other").await.expect("get").is_none(),
        "nothing of the other release written"
    );
}
