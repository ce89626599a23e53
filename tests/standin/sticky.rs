//! Hand-written sticky routes through the stand-in: a conversation kept on its version by cookie
//! while the split moves, and an API client routed by the version header.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::backend::{Backend, IngressStandin, nginx};
use crate::common::{TestNs, istiod, setup};
use crate::objects::{apply, mesh_objects, version_pods};
use crate::traffic::{
    CONVERSATION, Conversation, FOLLOW, KEPT, REQUESTS, ask, counts, first_routing, http_client,
    sticky_cookie, version_of, versions,
};

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

pub async fn standin_gateway_keeps_a_conversation_on_its_version_by_cookie() {
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

pub async fn standin_gateway_routes_an_api_client_by_the_version_header() {
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
