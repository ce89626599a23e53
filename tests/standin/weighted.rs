//! A VirtualService's weighted split, followed through istiod as it changes: the requests each
//! subset gets, an unrouted share answered 503, and no route at all.

use std::net::SocketAddr;

use canary_operator::api::istio::{
    Destination, HttpRoute, HttpRouteDestination, VirtualService, VirtualServiceSpec,
};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::backend::{IngressStandin, nginx, start_backend};
use crate::common::{istiod, setup};
use crate::objects::mesh_objects;
use crate::traffic::{FOLLOW, REQUESTS, answers, counts, first_routing};

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

pub async fn standin_gateway_follows_the_route_istiod_pushes() {
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
