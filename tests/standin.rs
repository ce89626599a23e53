//! The test kit's stand-ins for what a cluster with Istio and Prometheus would run: the ingress
//! gateway stand-in (`examples/ingress_standin/`) moving real requests as the routes istiod
//! pushes for a VirtualService or an HTTPRoute on the real control plane change (weighted splits,
//! and the sticky routes that keep a conversation on its version by cookie or header), and the
//! Prometheus harness (tests/common/prometheus.rs) scraping, losing and regaining its data.
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

mod backend;
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use backend::{Backend, IngressStandin, free_port, nginx, start_backend};
use canary_operator::api::TrafficProvider;
use canary_operator::api::istio::{
    Destination, DestinationRule, Gateway, HttpRoute, HttpRouteDestination, VirtualService,
    VirtualServiceSpec,
};
use common::gateway_api;
use common::istiod;
use common::lab::{self, create_secret};
use common::operator::start_operator;
use common::prometheus::{self, JOB, Prometheus, ScrapeTarget};
use common::setup;
use common::{TestNs, host};
use k8s_openapi::api::core::v1::Service;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
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
        ..Default::default()
    };
    vec![HttpRoute {
        name: Some("split".to_owned()),
        route: subsets.iter().map(to).collect(),
        ..Default::default()
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
    let Some(xds) = istiod(TEST) else { return };
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
    let mut gateway = IngressStandin::start(
        &nginx,
        &xds,
        (&ns.name, "chat", &gateway_host),
        &upstreams,
        &[],
    );
    let chat = gateway.url("/chat");

    let applied = first_routing(|| gateway.next_applied(FOLLOW));
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

/// Applies `object` (JSON with apiVersion, kind and metadata.name) in the test namespace, whatever
/// its kind: the routes below carry fields (match conditions, response headers, HTTPRoutes) that
/// the operator's own Istio types leave out.
async fn apply(ns: &TestNs, object: Value) {
    let (group, version) = match object["apiVersion"].as_str().expect("an apiVersion") {
        api_version @ "v1" => ("", api_version),
        api_version => api_version.split_once('/').expect("group/version"),
    };
    let kind = object["kind"].as_str().expect("a kind");
    let name = object["metadata"]["name"].as_str().expect("a name");
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::<DynamicObject>::namespaced_with(ns.client.clone(), &ns.name, &resource)
        .patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
}

/// A pod per version for the DestinationRule's subsets to select, as a release's Deployments
/// would run (kwok's: no container runs; the stand-in's `--upstream` processes answer instead).
/// `istioctl analyze` reports subsets that select no pod.
async fn version_pods(ns: &TestNs) {
    for version in ["v1", "v2"] {
        let labels = json!({"app": "chat", "version": version});
        apply(
            ns,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": format!("chat-{version}")},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                        {"name": "chat", "image": "chat:not-pulled-kwok-runs-no-image"}]}},
                },
            }),
        )
        .await;
    }
}

/// Which version a model's answers come from: v1's backend answers as m1, v2's as m2.
fn version_of(model: &str) -> &'static str {
    match model {
        "m1" => "v1",
        "m2" => "v2",
        other => panic!("an answer from {other}, which no version serves"),
    }
}

/// The backends of v1 and v2, answering at once (no simulated time to first token: hundreds of
/// requests go through the gateway here).
async fn versions() -> (Backend, Backend) {
    let v1 = start_backend(&[("AZURE_MODEL_NAME", "m1"), ("OFFLINE_TTFT_MS", "0")]).await;
    let v2 = start_backend(&[("AZURE_MODEL_NAME", "m2"), ("OFFLINE_TTFT_MS", "0")]).await;
    (v1, v2)
}

/// What one chat request through the gateway came back with.
#[derive(Debug)]
struct Answer {
    /// The model that answered, or `status N` for a failed request.
    model: String,
    set_cookie: Vec<String>,
    /// The `x-canary-model` response header, which the header variant's routes add.
    canary_header: Vec<String>,
}

async fn ask(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = client.post(url).json(&json!({"message": "hi"}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let all = |name: &str| -> Vec<String> {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("an ASCII header").to_owned())
            .collect()
    };
    let (set_cookie, canary_header) = (all("set-cookie"), all("x-canary-model"));
    let model = if response.status().is_success() {
        let body: Value = response.json().await.expect("a JSON answer");
        body["model"].as_str().expect("a model").to_owned()
    } else {
        format!("status {}", response.status().as_u16())
    };
    Answer {
        model,
        set_cookie,
        canary_header,
    }
}

/// The sticky cookie the operator's split route sets on an answer of `version`.
fn sticky_cookie(version: &str) -> String {
    format!("canary-model={version}; Path=/; Max-Age=86400")
}

/// How a sticky release tells a conversation's version: by cookie (browsers), or by a header
/// the client sends back (API clients).
#[derive(Clone, Copy)]
enum Sticky {
    Cookie,
    Header,
}

/// The VirtualService routes the operator writes for a sticky release of `chat` at `v2` percent
/// to v2: a route per version with a share, taken when the request names that version, then the
/// weighted split, whose answers name the version that gave them.
fn sticky_routes(fqdn: &str, v2: u32, sticky: Sticky) -> Value {
    let destination =
        |version: &str| json!({"host": fqdn, "subset": version, "port": {"number": 5000}});
    let shares = [("v2", v2), ("v1", 100 - v2)];
    let mut http: Vec<Value> = Vec::new();
    for (version, share) in shares {
        if share == 0 {
            continue;
        }
        let (matcher, response) = match sticky {
            Sticky::Cookie => (
                json!({"cookie": {"regex": format!(r"^(.*;\s*)?canary-model={version}(;.*)?$")}}),
                None,
            ),
            Sticky::Header => (
                json!({"x-canary-model": {"exact": version}}),
                Some(json!({"add": {"x-canary-model": version}})),
            ),
        };
        let mut route = json!({
            "name": format!("sticky-{version}"),
            "match": [{"headers": matcher}],
            "route": [{"destination": destination(version)}],
        });
        if let Some(response) = response {
            route["route"][0]["headers"] = json!({"response": response});
        }
        http.push(route);
    }
    let weighted: Vec<Value> = shares
        .iter()
        .rev()
        .filter(|(_, share)| *share > 0)
        .map(|(version, share)| {
            let added = match sticky {
                Sticky::Cookie => json!({"set-cookie": sticky_cookie(version)}),
                Sticky::Header => json!({"x-canary-model": version}),
            };
            json!({
                "destination": destination(version),
                "weight": share,
                "headers": {"response": {"add": added}},
            })
        })
        .collect();
    http.push(json!({"name": "split", "route": weighted}));
    Value::Array(http)
}

fn sticky_virtual_service(ns: &TestNs, host: &str, v2: u32, sticky: Sticky) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "chat"},
        "spec": {"hosts": [host], "gateways": ["chat"], "http": sticky_routes(&ns.fqdn("chat"), v2, sticky)},
    })
}

/// A browser's conversation: it sends back the cookie the last Set-Cookie gave it, among cookies
/// of its own (before the sticky one in some conversations, after it in others, as browsers
/// order cookies by age).
struct Conversation {
    session: usize,
    cookie: Option<String>,
    /// The model of its first answer.
    model: String,
    sent: usize,
}

impl Conversation {
    async fn send(&mut self, client: &reqwest::Client, url: &str) -> Answer {
        let header = self.cookie.as_ref().map(|sticky| {
            if self.session.is_multiple_of(2) {
                format!("session={}; {sticky}", self.session)
            } else {
                format!("{sticky}; session={}", self.session)
            }
        });
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("cookie", h.as_str())).collect();
        let answer = ask(client, url, &headers).await;
        self.sent += 1;
        if let Some(set) = answer.set_cookie.last() {
            let pair = set.split(';').next().unwrap_or_default().trim();
            self.cookie = Some(pair.to_owned());
        }
        answer
    }
}

/// The stand-in's first `applied` line that routes something (`next` gives each line): it may read
/// istiod's routes before istiod has the test's objects, and then first applies nothing.
fn first_routing(mut next: impl FnMut() -> String) -> String {
    let mut line = next();
    // A line is printed only when the routes change, so nothing comes but a few times at most.
    for _ in 0..3 {
        if line != "applied v1=0 v2=0" {
            break;
        }
        line = next();
    }
    line
}

/// What the tests of hand-written sticky routes stand on: the Service, DestinationRule and Gateway
/// of `chat`, a pod per version for the subsets, the two backends, and the stand-in following
/// istiod for the release's host. `None` when nginx or istiod is missing (said loudly).
struct StickyStage {
    ns: TestNs,
    gateway_host: String,
    gateway: IngressStandin,
    /// Kept running while the stage lives.
    _versions: (Backend, Backend),
}

impl StickyStage {
    async fn start(test: &str) -> Option<StickyStage> {
        let nginx = nginx(test)?;
        let ns = setup(test).await?;
        let xds = istiod(test)?;
        let gateway_host = ns.host("chat");
        mesh_objects(&ns, &gateway_host).await;
        version_pods(&ns).await;
        let (v1, v2) = versions().await;
        let upstreams: [(&str, SocketAddr); 2] = [("v1", v1.addr), ("v2", v2.addr)];
        let gateway = IngressStandin::start(
            &nginx,
            &xds,
            (&ns.name, "chat", &gateway_host),
            &upstreams,
            &[],
        );
        Some(StickyStage {
            ns,
            gateway_host,
            gateway,
            _versions: (v1, v2),
        })
    }

    /// Applies the sticky routes at `v2` percent to v2 and waits until the stand-in routes them
    /// (`first`: istiod's first push may not hold them yet).
    async fn route(&mut self, v2: u32, sticky: Sticky, first: bool) {
        apply(
            &self.ns,
            sticky_virtual_service(&self.ns, &self.gateway_host, v2, sticky),
        )
        .await;
        let applied = if first {
            first_routing(|| self.gateway.next_applied(FOLLOW))
        } else {
            self.gateway.next_applied(FOLLOW)
        };
        assert_eq!(
            applied,
            format!("applied v1={} v2={v2} match:v2 match:v1", 100 - v2)
        );
    }
}

/// Requests per conversation.
const CONVERSATION: usize = 50;

/// Conversations kept going per version.
const KEPT: usize = 3;

#[tokio::test]
async fn standin_gateway_keeps_a_conversation_on_its_version_by_cookie() {
    const TEST: &str = "standin_gateway_keeps_a_conversation_on_its_version_by_cookie";
    let Some(mut stage) = StickyStage::start(TEST).await else {
        return;
    };
    let chat = stage.gateway.url("/chat");
    let client = http_client();

    // v2's share as a rollout and a rollback would move it; every version keeps a share, so
    // every version keeps its sticky route.
    let shares = [25, 50, 75, 10];
    let mut conversations: Vec<Conversation> = Vec::new();
    let mut sessions = 0;
    for (phase, v2_share) in shares.into_iter().enumerate() {
        stage.route(v2_share, Sticky::Cookie, phase == 0).await;
        let v1_share = 100 - v2_share;

        // Conversations without a cookie yet follow the split, and each answer's cookie names
        // the version that gave it.
        let mut firsts = BTreeMap::new();
        for _ in 0..REQUESTS {
            sessions += 1;
            let mut conversation = Conversation {
                session: sessions,
                cookie: None,
                model: String::new(),
                sent: 0,
            };
            let answer = conversation.send(&client, &chat).await;
            let version = version_of(&answer.model);
            assert_eq!(answer.set_cookie, [sticky_cookie(version)], "{answer:?}");
            conversation.model = answer.model.clone();
            *firsts.entry(answer.model).or_insert(0) += 1;
            let same = conversations
                .iter()
                .filter(|c| c.model == conversation.model);
            if phase == 0 && same.count() < KEPT {
                conversations.push(conversation);
            }
        }
        assert_eq!(
            firsts,
            counts(&[("m1", v1_share), ("m2", v2_share)]),
            "new conversations at v2={v2_share}"
        );

        // The conversations begun at the first split go on with their version whatever the split
        // is now, and are given no new cookie.
        let rest = CONVERSATION - 1;
        let turns = rest / shares.len() + usize::from(phase < rest % shares.len());
        for conversation in &mut conversations {
            for _ in 0..turns {
                let answer = conversation.send(&client, &chat).await;
                assert_eq!(
                    answer.model, conversation.model,
                    "conversation {} at v2={v2_share}: {answer:?}",
                    conversation.session
                );
                assert!(answer.set_cookie.is_empty(), "{answer:?}");
            }
        }
    }
    assert_eq!(conversations.len(), 2 * KEPT);
    for conversation in &conversations {
        assert_eq!(conversation.sent, CONVERSATION);
        let version = version_of(&conversation.model);
        assert_eq!(
            conversation.cookie.as_deref(),
            Some(format!("canary-model={version}").as_str())
        );
    }
}

#[tokio::test]
async fn standin_gateway_routes_an_api_client_by_the_version_header() {
    const TEST: &str = "standin_gateway_routes_an_api_client_by_the_version_header";
    let Some(mut stage) = StickyStage::start(TEST).await else {
        return;
    };
    let chat = stage.gateway.url("/chat");
    let client = http_client();

    for (phase, v2_share) in [10, 60].into_iter().enumerate() {
        stage.route(v2_share, Sticky::Header, phase == 0).await;
        let v1_share = 100 - v2_share;
        // A client that names no version follows the split and is told which version answered;
        // so is one whose header names none exactly (Envoy's exact match minds case).
        let mut models = BTreeMap::new();
        for i in 0..REQUESTS {
            let headers: &[(&str, &str)] = if i.is_multiple_of(2) {
                &[]
            } else {
                &[("x-canary-model", "V2")]
            };
            let answer = ask(&client, &chat, headers).await;
            assert_eq!(
                answer.canary_header,
                [version_of(&answer.model)],
                "{answer:?}"
            );
            assert!(answer.set_cookie.is_empty(), "{answer:?}");
            *models.entry(answer.model).or_insert(0) += 1;
        }
        assert_eq!(models, counts(&[("m1", v1_share), ("m2", v2_share)]));
        // A client that sends back the version it was told stays on it.
        for (version, model) in [("v1", "m1"), ("v2", "m2")] {
            for _ in 0..10 {
                let answer = ask(&client, &chat, &[("x-canary-model", version)]).await;
                assert_eq!(answer.model, model, "{answer:?}");
                assert_eq!(answer.canary_header, [version], "{answer:?}");
            }
        }
    }
}

/// The HTTPRoute a Gateway API release would have: the header route of v2, then the split between
/// one Service per version, each backend's answers naming its version in a cookie.
fn http_route(v2: u32) -> Value {
    let backend = |version: &str, weight: u32| {
        json!({
            "name": format!("chat-{version}"), "port": 5000, "weight": weight,
            "filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                "add": [{"name": "set-cookie", "value": sticky_cookie(version)}]}}],
        })
    };
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "chat"},
        "spec": {
            "parentRefs": [{"name": "chat"}],
            "rules": [
                {"matches": [{"headers": [{"type": "Exact", "name": "x-canary-model", "value": "v2"}]}],
                 "backendRefs": [{"name": "chat-v2", "port": 5000}]},
                {"matches": [{"headers": [{"type": "RegularExpression", "name": "cookie",
                                           "value": r"^(.*;\s*)?canary-model=v2(;.*)?$"}]}],
                 "backendRefs": [{"name": "chat-v2", "port": 5000}]},
                {"backendRefs": [backend("v1", 100 - v2), backend("v2", v2)]},
            ],
        },
    })
}

/// A Gateway API Gateway of class istio, with istiod as its controller. istiod would deploy its
/// proxy (a Deployment and the Service `chat-istio`, selecting
/// `gateway.networking.k8s.io/gateway-name: chat`), but it has no gateway template here, so the
/// test creates them as it would: a kwok pod, and the Service whose port the listener is on.
/// istiod binds a Gateway API Gateway to the proxies that are endpoints of that Service, and
/// takes a proxy it knows no pod of by its namespace and labels: which is how `xdsroutes`
/// connects.
#[tokio::test]
async fn standin_gateway_follows_an_httproute_to_a_service_per_version() {
    const TEST: &str = "standin_gateway_follows_an_httproute_to_a_service_per_version";
    let Some(nginx) = nginx(TEST) else { return };
    let Some(ns) = setup(TEST).await else {
        return;
    };
    let Some(xds) = istiod(TEST) else { return };
    let gateway_host = ns.host("chat");
    let label = "gateway.networking.k8s.io/gateway-name";
    for version in ["v1", "v2"] {
        apply(&ns, json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("chat-{version}")},
            "spec": {"selector": {"app": "chat", "version": version},
                     "ports": [{"name": "http", "port": 5000}]},
        }))
        .await;
    }
    apply(
        &ns,
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "chat-istio"},
            "spec": {"selector": {label: "chat"}, "ports": [{"name": "http", "port": 80}]},
        }),
    )
    .await;
    apply(&ns, json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "chat-istio"},
        "spec": {
            "selector": {"matchLabels": {label: "chat"}},
            "template": {"metadata": {"labels": {label: "chat"}}, "spec": {"containers": [
                {"name": "istio-proxy", "image": "istio/proxyv2:not-pulled-kwok-runs-no-image"}]}},
        },
    }))
    .await;
    apply(&ns, json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "chat"},
        "spec": {"gatewayClassName": "istio", "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP", "hostname": gateway_host}]},
    }))
    .await;
    apply(&ns, http_route(25)).await;

    let (v1, v2) = versions().await;
    let upstreams: [(&str, SocketAddr); 2] = [("v1", v1.addr), ("v2", v2.addr)];
    let selects = format!("{label}=chat");
    let proxy = ["--proxy-namespace", &ns.name, "--proxy-label", &selects];
    let mut gateway = IngressStandin::start(
        &nginx,
        &xds,
        (&ns.name, "chat", &gateway_host),
        &upstreams,
        &proxy,
    );
    let chat = gateway.url("/chat");
    let client = http_client();
    for (phase, v2_share) in [25, 60].into_iter().enumerate() {
        let v1_share = 100 - v2_share;
        let applied = if phase == 0 {
            first_routing(|| gateway.next_applied(FOLLOW))
        } else {
            apply(&ns, http_route(v2_share)).await;
            gateway.next_applied(FOLLOW)
        };
        assert_eq!(
            applied,
            format!("applied v1={v1_share} v2={v2_share} match:v2 match:v2")
        );
        let mut models = BTreeMap::new();
        for _ in 0..REQUESTS {
            let answer = ask(&client, &chat, &[]).await;
            assert_eq!(
                answer.set_cookie,
                [sticky_cookie(version_of(&answer.model))]
            );
            *models.entry(answer.model).or_insert(0) += 1;
        }
        assert_eq!(models, counts(&[("m1", v1_share), ("m2", v2_share)]));
        for headers in [
            [("x-canary-model", "v2")],
            [("cookie", "a=b; canary-model=v2")],
        ] {
            let answer = ask(&client, &chat, &headers).await;
            assert_eq!(answer.model, "m2", "{headers:?}: {answer:?}");
            assert!(answer.set_cookie.is_empty(), "{answer:?}");
        }
    }

    // What the Gateway's status says once its proxy's pod runs; `istioctl analyze` (when the
    // namespace is dropped) reports a Gateway that is not programmed.
    let gateways = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "Gateway",
    ));
    let api = Api::<DynamicObject>::namespaced_with(ns.client.clone(), &ns.name, &gateways);
    common::wait_for("the Gateway to be Programmed", FOLLOW, async || {
        let gateway = api.get("chat").await.ok()?;
        let conditions = gateway.data["status"]["conditions"].as_array()?.clone();
        conditions
            .iter()
            .any(|c| c["type"] == "Programmed" && c["status"] == "True")
            .then_some(())
    })
    .await;
}

/// The operator's own sticky routes, with each provider, through the stand-in: conversations begun
/// at one split stay on their version for 50 requests while the weight moves (25, 50, 75, 10),
/// and all return to the stable version when the canary is rolled back to 0 %.
#[tokio::test]
async fn the_operators_sticky_routes_keep_each_conversation_on_its_version() {
    const TEST: &str = "the_operators_sticky_routes_keep_each_conversation_on_its_version";
    let Some(nginx) = nginx(TEST) else { return };
    let Some(xds) = istiod(TEST) else { return };
    for provider in TrafficProvider::ALL {
        let Some(ns) = setup(&format!("{TEST} {}", provider.as_str())).await else {
            return;
        };
        let _operator = start_operator(&ns).await;
        create_secret(&ns).await;
        let mut release = lab::release(&ns, "chat");
        release["spec"]["traffic"] =
            json!({"stickiness": {"cookie": {"name": "canary-model", "maxAge": "24h"}}});
        let proxy: &[&str] = match provider {
            TrafficProvider::GatewayApi => {
                gateway_api::platform_gateway(&ns).await;
                &gateway_api::PLATFORM_PROXY
            }
            TrafficProvider::Istio => &[],
        };
        release = gateway_api::routed_by(&ns, release, provider);
        lab::apply_release(&ns, release)
            .await
            .expect("apply the release");
        lab::wait_ready(&ns, "chat").await;
        let (v1, v2) = versions().await;
        let upstreams: [(&str, SocketAddr); 2] = [("v1", v1.addr), ("v2", v2.addr)];
        let mut gateway = IngressStandin::start(
            &nginx,
            &xds,
            (&ns.name, "chat", &ns.host("chat")),
            &upstreams,
            proxy,
        );
        let chat = gateway.url("/chat");
        let client = http_client();
        let applied = first_routing(|| gateway.next_applied(FOLLOW));
        assert_eq!(
            applied, "applied v1=75 v2=25 match:v2 match:v1",
            "{provider:?}"
        );

        // Conversations begin at 25 %: new ones until KEPT have each version.
        let mut conversations: Vec<Conversation> = Vec::new();
        for session in 0..(8 * KEPT) {
            let mut conversation = Conversation {
                session,
                cookie: None,
                model: String::new(),
                sent: 0,
            };
            let answer = conversation.send(&client, &chat).await;
            assert_eq!(
                answer.set_cookie,
                [sticky_cookie(version_of(&answer.model))],
                "{answer:?}"
            );
            conversation.model = answer.model;
            if conversations
                .iter()
                .filter(|c| c.model == conversation.model)
                .count()
                < KEPT
            {
                conversations.push(conversation);
            }
            if conversations.len() == 2 * KEPT {
                break;
            }
        }
        assert_eq!(
            conversations.len(),
            2 * KEPT,
            "conversations on both versions"
        );

        // The weight moves as a rollout (and a step back) would; each conversation stays.
        let shares = [50, 75, 10];
        let turns = (CONVERSATION - 1).div_ceil(shares.len());
        for v2_share in shares {
            lab::set_weight(&ns, "chat", v2_share)
                .await
                .expect("set the weight");
            // The operator runs on this test's runtime, which `next_applied` blocks: the route
            // is awaited first, then istiod's push (another process) is read.
            lab::wait_split(&ns, "chat", 100 - v2_share, v2_share).await;
            assert_eq!(
                gateway.next_applied(FOLLOW),
                format!(
                    "applied v1={} v2={v2_share} match:v2 match:v1",
                    100 - v2_share
                )
            );
            for conversation in &mut conversations {
                for _ in 0..turns {
                    if conversation.sent == CONVERSATION {
                        break;
                    }
                    let answer = conversation.send(&client, &chat).await;
                    assert_eq!(
                        answer.model, conversation.model,
                        "{provider:?}: conversation {} at v2={v2_share}",
                        conversation.session
                    );
                    assert!(answer.set_cookie.is_empty(), "{answer:?}");
                }
            }
        }
        assert!(conversations.iter().all(|c| c.sent == CONVERSATION));

        // Rolled back: the canary's match route goes, and its conversations are told the stable.
        lab::set_weight(&ns, "chat", 0).await.expect("roll back");
        lab::wait_split(&ns, "chat", 100, 0).await;
        assert_eq!(gateway.next_applied(FOLLOW), "applied v1=100 v2=0 match:v1");
        for conversation in &mut conversations {
            let answer = conversation.send(&client, &chat).await;
            assert_eq!(answer.model, "m1", "everyone on the stable: {answer:?}");
            let told = if conversation.model == "m2" {
                vec![sticky_cookie("v1")]
            } else {
                vec![]
            };
            assert_eq!(
                answer.set_cookie, told,
                "conversation {}",
                conversation.session
            );
        }
    }
}
