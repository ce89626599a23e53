//! The operator's own sticky routes, with each traffic provider, through the stand-in.

use std::net::SocketAddr;

use canary_operator::api::TrafficProvider;
use serde_json::json;

use crate::backend::{IngressStandin, nginx};
use crate::common::gateway_api;
use crate::common::lab::{self, create_secret};
use crate::common::operator::start_operator;
use crate::common::{istiod, setup};
use crate::traffic::{
    CONVERSATION, Conversation, FOLLOW, KEPT, first_routing, http_client, sticky_cookie,
    version_of, versions,
};

/// The operator's own sticky routes, with each provider, through the stand-in: conversations begun
/// at one split stay on their version for 50 requests while the weight moves (25, 50, 75, 10),
/// and all return to the stable version when the canary is rolled back to 0 %.
pub async fn the_operators_sticky_routes_keep_each_conversation_on_its_version() {
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
