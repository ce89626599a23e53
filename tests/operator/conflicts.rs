//! Two releases (or a release and someone else's route) that claim one host on one gateway: the
//! older keeps it, the younger is `HostConflict` and withholds its route, and istiod keeps
//! sending the gateway the older one's split. When the claim in the way goes, the younger routes
//! again by itself.

use std::time::{Duration, Instant};

use canary_operator::api::CanaryRelease;
use canary_operator::api::gateway_api::HTTPRoute;
use canary_operator::api::istio::{DestinationRule, Gateway, VirtualService};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::common::gateway_api::{
    PLATFORM, parent_conditions, platform_gateway, proxy_workload, routed_by_gateway_api,
    wait_route_weights,
};
use crate::common::istio::{RouteWatch, analyze_with};
use crate::common::lab::{
    api, condition, create_secret, release, wait_condition, wait_event_noting, wait_gone,
    wait_ready,
};
use crate::common::operator::start_operator;
use crate::common::{TestNs, WAIT, istiod, setup, wait_for};

/// Longest wait for istiod to push a changed route: its debounce is 100 ms.
const PUSH: Duration = Duration::from_secs(30);

/// The lab's release `name` claiming `hosts` on the lab's gateway workload, at `port`.
fn claiming(ns: &TestNs, name: &str, hosts: &[String], port: Option<i32>) -> Value {
    let mut release = release(ns, name);
    release["spec"]["gateway"]["hosts"] = json!(hosts);
    if let Some(port) = port {
        release["spec"]["gateway"]["port"] = json!(port);
    }
    release
}

/// Server-side apply of `object` as written: no host of its own (the test kit's
/// `apply_release` would give it one).
async fn apply_as_is<K>(ns: &TestNs, object: Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if let Err(e) = api::<K>(ns)
        .patch(
            &name,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&object),
        )
        .await
    {
        panic!("apply {} {name}: {e}", K::kind(&()));
    }
}

/// Waits until `name` is HostConflict naming `holder` (`Kind namespace/name`) and `host`, with
/// Ready and Progressing False and a Warning Event saying the same.
async fn wait_host_conflict(ns: &TestNs, name: &str, holder: &str, host: &str) -> CanaryRelease {
    let withheld = wait_condition(ns, name, "Degraded", "True", "HostConflict").await;
    for type_ in ["Ready", "Progressing"] {
        let (status, reason, _) = condition(&withheld, type_).expect(type_);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "HostConflict"),
            "{type_}"
        );
    }
    let (_, _, message) = condition(&withheld, "Degraded").expect("Degraded");
    assert!(message.contains(holder), "names {holder}: {message}");
    assert!(
        message.contains(&format!("{host:?}")),
        "names {host}: {message}"
    );
    let event = wait_event_noting(ns, "HostConflict", holder).await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    withheld
}

/// Whether an object of kind `K` named `name` exists in the test's namespace.
async fn exists<K>(ns: &TestNs, name: &str) -> bool
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    api::<K>(ns).get_opt(name).await.ok().flatten().is_some()
}

/// Asserts that the withheld release `name` has no route of its own (Gateway, VirtualService,
/// HTTPRoute) and that its versions and subsets stay.
async fn assert_withheld(ns: &TestNs, name: &str) {
    for (kind, present) in [
        ("Gateway", exists::<Gateway>(ns, name).await),
        ("VirtualService", exists::<VirtualService>(ns, name).await),
        ("HTTPRoute", exists::<HTTPRoute>(ns, name).await),
    ] {
        assert!(!present, "the withheld {name} has a {kind}");
    }
    for version in ["v1", "v2"] {
        let deployment = format!("{name}-{version}");
        assert!(
            exists::<Deployment>(ns, &deployment).await,
            "the withheld release keeps its Deployment {deployment}"
        );
    }
}

/// A gateway workload of the test's own (`istio: gw-<namespace>`), in the test's namespace. A
/// release that claims every host on the shared workload would meet whatever else claims `*`
/// there (a `make demo` left running): this test's `*` is its own. Returns the label's value.
async fn own_gateway_workload(ns: &TestNs) -> String {
    let label = format!("gw-{}", ns.name);
    let labels = json!({"app": "gw", "istio": label});
    proxy_workload(ns, &ns.name, "gw", labels).await;
    label
}

#[tokio::test]
async fn the_later_of_two_releases_claiming_every_host_on_one_gateway_is_withheld() {
    let test = "host conflict";
    let Some(ns) = setup(test).await else {
        return;
    };
    let Some(_) = istiod(test) else {
        return;
    };
    let label = own_gateway_workload(&ns).await;
    let mut routes = RouteWatch::gateway(&ns.name, &format!("istio={label}")).expect("xdsroutes");
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    let all = ["*".to_owned()];
    let on_own_gateway = |name: &str| {
        let mut release = claiming(&ns, name, &all, None);
        release["spec"]["gateway"]["selector"] = json!({"istio": label});
        release
    };
    apply_as_is::<CanaryRelease>(&ns, on_own_gateway("first")).await;
    wait_ready(&ns, "first").await;
    // Creation times are kept to the second: the second release is the later one either way
    // (same second: by name), and a second apart it is so by time alone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    apply_as_is::<CanaryRelease>(&ns, on_own_gateway("second")).await;

    let holder = format!("CanaryRelease {}/first", ns.name);
    wait_host_conflict(&ns, "second", &holder, "*").await;
    assert_withheld(&ns, "second").await;
    assert!(
        exists::<DestinationRule>(&ns, "second").await,
        "its subsets stay: they name only its own Service"
    );
    let first = wait_ready(&ns, "first").await;
    let status = first.status.as_ref().expect("status");
    assert_eq!(
        (status.stable_weight, status.canary_weight),
        (Some(75), Some(25))
    );

    // What the gateway is sent for `*`: the first release's split, nothing of the second's.
    routes
        .wait_split("*", &ns.fqdn("first"), &[("v1", 75), ("v2", 25)], PUSH)
        .await;

    // Istio agrees: had the second release created its Gateway, istioctl analyze would call the
    // two conflicting (IST0145). Its would-be Gateway is the first's under its own name.
    let mut would_be =
        serde_json::to_value(api::<Gateway>(&ns).get("first").await.expect("Gateway"))
            .expect("JSON");
    would_be["metadata"] = json!({"name": "second", "namespace": ns.name});
    let file = std::env::temp_dir().join(format!("{}-second-gateway.json", ns.name));
    std::fs::write(&file, would_be.to_string()).expect("write the would-be Gateway");
    let findings = analyze_with(&ns.name, &[&file]).expect("istioctl analyze");
    let _ = std::fs::remove_file(&file);
    assert!(
        findings
            .iter()
            .any(|f| f.code == "IST0145" && f.message.contains(&format!("{}/first", ns.name))),
        "istioctl analyze of the would-be Gateway: {findings:?}"
    );
    // As the cluster is (the second withheld), nothing conflicts: `TestNs` analyzes the namespace
    // when dropped and fails on any problem.

    // The first goes: the second takes the host by itself, and the gateway follows.
    let started = Instant::now();
    api::<CanaryRelease>(&ns)
        .delete("first", &DeleteParams::default())
        .await
        .expect("delete first");
    let second = wait_ready(&ns, "second").await;
    eprintln!(
        "{test}: second Ready {} ms after the first was deleted",
        started.elapsed().as_millis()
    );
    assert_eq!(
        condition(&second, "Degraded").map(|(s, r, _)| (s, r)),
        Some(("False".to_owned(), "AsExpected".to_owned()))
    );
    wait_event_noting(&ns, "HostFree", "in place again").await;
    routes
        .wait_split("*", &ns.fqdn("second"), &[("v1", 75), ("v2", 25)], PUSH)
        .await;
    wait_gone::<Gateway>(&ns, "first").await;
}

#[tokio::test]
async fn wildcards_overlap_the_hosts_under_them_and_other_ports_and_hosts_are_free() {
    let Some(ns) = setup("wildcard conflict").await else {
        return;
    };
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    let domain = format!("{}.example.com", ns.name);
    let wildcard = [format!("*.{domain}")];
    let chat = [format!("chat.{domain}")];
    apply_as_is::<CanaryRelease>(&ns, claiming(&ns, "wide", &wildcard, None)).await;
    wait_ready(&ns, "wide").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    apply_as_is::<CanaryRelease>(&ns, claiming(&ns, "chat", &chat, None)).await;
    // Another host, and the same host on another port of the same gateway pods: no conflict.
    let other = [format!("other.{}.test", ns.name)];
    apply_as_is::<CanaryRelease>(&ns, claiming(&ns, "other", &other, None)).await;
    apply_as_is::<CanaryRelease>(&ns, claiming(&ns, "alt-port", &chat, Some(443))).await;

    let holder = format!("CanaryRelease {}/wide", ns.name);
    wait_host_conflict(&ns, "chat", &holder, &chat[0]).await;
    assert_withheld(&ns, "chat").await;
    for name in ["wide", "other", "alt-port"] {
        wait_ready(&ns, name).await;
    }

    // The older one narrows its hosts away: the younger is free by itself.
    let narrowed = claiming(&ns, "wide", &[format!("wide.{domain}")], None);
    apply_as_is::<CanaryRelease>(&ns, narrowed).await;
    wait_ready(&ns, "chat").await;
    wait_for("the VirtualService of chat", WAIT, async || {
        api::<VirtualService>(&ns)
            .get_opt("chat")
            .await
            .ok()
            .flatten()
    })
    .await;
}

#[tokio::test]
async fn a_host_someone_elses_virtual_service_serves_is_left_to_it() {
    let Some(ns) = setup("foreign host conflict").await else {
        return;
    };
    create_secret(&ns).await;
    // As a platform team and a team without the operator would have it: a Gateway for the
    // namespace's hosts, and a hand-written VirtualService already serving one of them.
    let host = ns.host("chat");
    apply_as_is::<Gateway>(
        &ns,
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "shared", "namespace": ns.name},
            "spec": {
                "selector": {"istio": "aks-istio-ingressgateway-external"},
                "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": [format!("*.{}.test", ns.name)]}],
            },
        }),
    )
    .await;
    apply_as_is::<VirtualService>(
        &ns,
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "hand-written", "namespace": ns.name},
            "spec": {
                "hosts": [host],
                "gateways": ["shared"],
                "http": [{"route": [{"destination": {"host": ns.fqdn("legacy")}}]}],
            },
        }),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _operator = start_operator(&ns).await;
    let mut release = release(&ns, "chat");
    release["spec"]["gateway"] = json!({"existing": ["shared"], "hosts": [host]});
    apply_as_is::<CanaryRelease>(&ns, release).await;

    let holder = format!("VirtualService {}/hand-written", ns.name);
    wait_host_conflict(&ns, "chat", &holder, &host).await;
    assert_withheld(&ns, "chat").await;
    let foreign = api::<VirtualService>(&ns)
        .get("hand-written")
        .await
        .expect("VS");
    assert_eq!(
        foreign.spec.hosts,
        std::slice::from_ref(&host),
        "someone else's route is left as it is"
    );

    api::<VirtualService>(&ns)
        .delete("hand-written", &DeleteParams::default())
        .await
        .expect("delete the hand-written VirtualService");
    wait_ready(&ns, "chat").await;
    let route = wait_for("the VirtualService of chat", WAIT, async || {
        api::<VirtualService>(&ns)
            .get_opt("chat")
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(route.spec.gateways, ["shared"]);
}

#[tokio::test]
async fn the_later_of_two_httproutes_for_one_host_on_one_gateway_is_withheld() {
    let test = "gateway api host conflict";
    let Some(ns) = setup(test).await else {
        return;
    };
    let Some(_) = istiod(test) else {
        return;
    };
    let mut routes =
        RouteWatch::gateway(PLATFORM.0, "gateway.networking.k8s.io/gateway-name=public")
            .expect("xdsroutes");
    let _operator = start_operator(&ns).await;
    create_secret(&ns).await;
    platform_gateway(&ns).await;
    let wildcard = format!("*.{}.test", ns.name);
    let chat = ns.host("chat");
    let routed = |name: &str, host: &str| {
        let mut release = routed_by_gateway_api(&ns, release(&ns, name), PLATFORM);
        release["spec"]["traffic"]["gatewayAPI"]["hostnames"] = json!([host]);
        release
    };
    apply_as_is::<CanaryRelease>(&ns, routed("wide", &wildcard)).await;
    wait_ready(&ns, "wide").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    apply_as_is::<CanaryRelease>(&ns, routed("chat", &chat)).await;

    let holder = format!("CanaryRelease {}/wide", ns.name);
    wait_host_conflict(&ns, "chat", &holder, &chat).await;
    assert_withheld(&ns, "chat").await;
    let wide = wait_route_weights(&ns, "wide", &[("wide-v1", 75), ("wide-v2", 25)]).await;
    assert!(
        parent_conditions(&wide)
            .iter()
            .any(|(_, t, s, _)| t == "Accepted" && s == "True"),
        "istiod accepts the older route: {:?}",
        parent_conditions(&wide)
    );
    // The Gateway's proxy is sent the older one's backends for its wildcard, and nothing of its
    // own for the younger release's host.
    let fqdn = |name: &str| format!("{name}.{}.svc.cluster.local", ns.name);
    let wide_clusters = [
        (format!("outbound|5000||{}", fqdn("wide-v1")), 75),
        (format!("outbound|5000||{}", fqdn("wide-v2")), 25),
    ];
    let expected: Vec<(&str, u32)> = wide_clusters
        .iter()
        .map(|(c, w)| (c.as_str(), *w))
        .collect();
    let push = routes.wait_split(&wildcard, "none", &expected, PUSH).await;
    assert!(
        push.virtual_hosts
            .iter()
            .all(|v| !v.domains.contains(&chat)),
        "no virtual host of its own for {chat}: {push:?}"
    );

    api::<CanaryRelease>(&ns)
        .delete("wide", &DeleteParams::default())
        .await
        .expect("delete wide");
    wait_ready(&ns, "chat").await;
    wait_route_weights(&ns, "chat", &[("chat-v1", 75), ("chat-v2", 25)]).await;
    let chat_clusters = [
        (format!("outbound|5000||{}", fqdn("chat-v1")), 75),
        (format!("outbound|5000||{}", fqdn("chat-v2")), 25),
    ];
    let expected: Vec<(&str, u32)> = chat_clusters
        .iter()
        .map(|(c, w)| (c.as_str(), *w))
        .collect();
    routes.wait_split(&chat, "none", &expected, PUSH).await;
}
