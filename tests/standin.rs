//! The test kit's stand-ins for what a cluster with Istio and Prometheus would run: the ingress
//! gateway stand-in (`examples/ingress_standin.rs`) moving real requests as the route istiod pushes
//! for a VirtualService on the real control plane changes, and the Prometheus harness (tests/common/prometheus.rs) scraping,
//! losing and regaining its data.
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

mod backend;
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use backend::{IngressStandin, free_port, nginx, start_backend};
use canary_operator::api::istio::{
    Destination, DestinationRule, Gateway, HttpRoute, HttpRouteDestination, VirtualService,
    VirtualServiceSpec,
};
use common::istio::xds_address;
use common::prometheus::{self, JOB, Prometheus, ScrapeTarget};
use common::setup;
use common::{TestNs, host};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// Longest wait for the stand-in to follow a change of the VirtualService (through istiod).
const FOLLOW: Duration = Duration::from_secs(30);

/// Requests per check: a multiple of every split's cycle (the weights sum to 100), so nginx's
/// weighted round robin gives each subset exactly its weight in requests.
const REQUESTS: u32 = 100;

fn http_client() -> reqwest::Client {
    // reqwest is built without a TLS provider of its own (see Cargo.toml); building a client wants
    // one installed, and ring is the one kube's client links. Err: one is installed already.
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client")
}

/// One HTTP route to host `chat`, split by weight between `subsets`.
fn route(subsets: &[(&str, i32)]) -> Vec<HttpRoute> {
    let to = |(subset, weight): &(&str, i32)| HttpRouteDestination {
        destination: Destination {
            host: "chat".to_owned(),
            subset: Some((*subset).to_owned()),
            port: None,
        },
        weight: *weight,
    };
    vec![HttpRoute {
        name: Some("split".to_owned()),
        route: subsets.iter().map(to).collect(),
    }]
}

/// `n` chat requests one after another through `url`; how many answers each model gave (or, for
/// a failed request, its status).
async fn answers(url: &str, n: u32) -> BTreeMap<String, u32> {
    let client = http_client();
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let response = client
            .post(url)
            .json(&json!({"message": "hi"}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let key = if response.status().is_success() {
            let body: Value = response.json().await.expect("a JSON answer");
            body["model"]
                .as_str()
                .expect("a model in the answer")
                .to_owned()
        } else {
            format!("status {}", response.status().as_u16())
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

fn counts(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
}

/// What the operator would write around a VirtualService `chat`, by hand: the Service whose
/// subsets it splits, the DestinationRule naming them, and a Gateway on the external ingress
/// gateway for `host`.
async fn mesh_objects(ns: &TestNs, host: &str) {
    let apply = PatchParams::apply("test").force();
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "chat"},
        "spec": {"selector": {"app": "chat"}, "ports": [{"name": "http", "port": 5000}]},
    });
    Api::<Service>::namespaced(ns.client.clone(), &ns.name)
        .patch("chat", &apply, &Patch::Apply(&service))
        .await
        .expect("the Service");
    let rule = json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "chat"},
        "spec": {"host": "chat", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
        ]},
    });
    Api::<DestinationRule>::namespaced(ns.client.clone(), &ns.name)
        .patch("chat", &apply, &Patch::Apply(&rule))
        .await
        .expect("the DestinationRule");
    let gateway = json!({
        "apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "chat"},
        "spec": {
            "selector": {"istio": "aks-istio-ingressgateway-external"},
            "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": [host]}],
        },
    });
    Api::<Gateway>::namespaced(ns.client.clone(), &ns.name)
        .patch("chat", &apply, &Patch::Apply(&gateway))
        .await
        .expect("the Gateway");
}

#[tokio::test]
async fn standin_gateway_follows_the_route_istiod_pushes() {
    const TEST: &str = "standin_gateway_follows_the_route_istiod_pushes";
    let Some(nginx) = nginx(TEST) else { return };
    let Some(mut ns) = setup(TEST).await else {
        return;
    };
    let Some(xds) = xds_address() else {
        return host::skip(
            TEST,
            "the cluster runs no istiod",
            "run `make cluster-up` (it starts istiod)",
        );
    };
    // Routes to subset v3, which no DestinationRule defines, on purpose (below).
    ns.exempt_from_analyze("routes to an undefined subset on purpose");
    let gateway_host = ns.host("chat");
    mesh_objects(&ns, &gateway_host).await;
    let api: Api<VirtualService> = Api::namespaced(ns.client.clone(), &ns.name);
    let vs = VirtualService::new(
        "chat",
        VirtualServiceSpec {
            hosts: vec![gateway_host.clone()],
            gateways: vec!["chat".to_owned()],
            http: route(&[("v1", 90), ("v2", 10)]),
        },
    );
    api.create(&PostParams::default(), &vs)
        .await
        .expect("create the VirtualService");
    let v1 = start_backend(&[("AZURE_MODEL_NAME", "m1")]).await;
    let v2 = start_backend(&[("AZURE_MODEL_NAME", "m2")]).await;
    let upstreams: [(&str, SocketAddr); 2] = [("v1", v1.addr), ("v2", v2.addr)];
    let mut gateway =
        IngressStandin::start(&nginx, &xds, (&ns.name, "chat", &gateway_host), &upstreams);
    let chat = gateway.url("/chat");

    let applied = gateway.next_applied(FOLLOW);
    assert_eq!(applied, "applied v1=90 v2=10");
    assert_eq!(
        answers(&chat, REQUESTS).await,
        counts(&[("m1", 90), ("m2", 10)])
    );

    // v3 has no address (nor a subset in the DestinationRule): Istio would answer its share with
    // 503, and so does the stand-in, rather than give it to the other subsets. At 0 istiod leaves
    // a subset out of the route.
    for (split, line, expected) in [
        (
            [("v1", 50), ("v2", 50)],
            "applied v1=50 v2=50",
            counts(&[("m1", 50), ("m2", 50)]),
        ),
        (
            [("v1", 0), ("v2", 100)],
            "applied v1=0 v2=100",
            counts(&[("m2", 100)]),
        ),
        (
            [("v1", 75), ("v3", 25)],
            "applied v1=75 v2=0 unrouted=25",
            counts(&[("m1", 75), ("status 503", 25)]),
        ),
    ] {
        let patch = json!({"spec": {"http": route(&split)}});
        api.patch("chat", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch the VirtualService");
        assert_eq!(gateway.next_applied(FOLLOW), line);
        assert_eq!(answers(&chat, REQUESTS).await, expected, "at {split:?}");
    }

    // No route at all for the host: the gateway answers, but with nothing behind it.
    api.delete("chat", &Default::default())
        .await
        .expect("delete the VirtualService");
    let applied = gateway.next_applied(FOLLOW);
    assert_eq!(applied, "applied v1=0 v2=0");
    assert_eq!(answers(&chat, 10).await, counts(&[("status 503", 10)]));
}

#[tokio::test]
async fn prometheus_scrapes_labelled_targets_and_comes_back_after_an_outage() {
    const TEST: &str = "prometheus_scrapes_labelled_targets_and_comes_back_after_an_outage";
    let Some(binary) = prometheus::binary(TEST) else {
        return;
    };
    // Prometheus scrapes its own /metrics here: the only target at hand that serves the
    // exposition format (the chat backend's /metrics is still to come).
    let port = free_port();
    let own = SocketAddr::from(([127, 0, 0, 1], port));
    let target = ScrapeTarget::new(own, &[("namespace", "x"), ("version", "v1")]);
    let mut prom = Prometheus::start_on(&binary, port, &[target]).await;
    let up = format!(r#"up{{job="{JOB}",namespace="x",version="v1"}}"#);
    assert_eq!(
        prom.wait_for_samples(&up, Duration::from_secs(30)).await,
        1.0
    );
    // The labels select and group like pod labels would: one series per version, none elsewhere.
    let by_version = r#"sum by (version) (prometheus_http_requests_total{namespace="x"})"#;
    let series = prom.query_vector(by_version).await.expect("a vector");
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(
        series[0].0,
        vec![("version".to_owned(), "v1".to_owned())],
        "{series:?}"
    );
    assert!(series[0].1 >= 1.0, "{series:?}");
    assert_eq!(prom.query(r#"up{namespace="y"}"#).await, None);

    // Enough scrapes that the outage cannot be mistaken for a start.
    let scraped = format!("count_over_time({up}[10m])");
    let before = common::wait_for("3 scrapes", Duration::from_secs(30), async || {
        prom.query(&scraped).await.filter(|n| *n >= 3.0)
    })
    .await;

    prom.kill();
    assert!(!prom.ready().await);
    assert_eq!(prom.query(&up).await, None);
    assert_eq!(prom.query_vector("vector(1)").await, None);

    prom.start_again().await;
    assert!(prom.ready().await);
    assert_eq!(
        prom.wait_for_samples(&up, Duration::from_secs(30)).await,
        1.0
    );
    // Same data dir: the scrapes from before the outage are still there.
    let after = prom
        .query(&scraped)
        .await
        .expect("scrapes after the restart");
    assert!(
        after >= before,
        "{after} scrapes after the restart, {before} before"
    );
}
