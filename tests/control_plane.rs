//! Smoke tests proving that the development cluster (`make cluster-up`) is a real control plane:
//! controllers run, the garbage collector works, CRD schemas are enforced and RBAC is enforced.
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{setup, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::config::AuthInfo;
use kube::core::{ApiResource, DynamicObject};
use kube::{Client, Config, Resource, ResourceExt};
use serde_json::json;

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("test object matches its type")
}

/// The HTTP status of a failed API call; panics if the call did not fail that way.
fn api_error_code<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.message),
        other => panic!("{what}: expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn deployment_gets_replicaset_and_ready_pods() {
    let Some(ns) = setup("deployment-ready-pods").await else {
        return;
    };
    let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
    let deployment: Deployment = from_json(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1" }] }
            }
        }
    }));
    let deployment = deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    let deployment_uid = deployment.uid().expect("created object has a uid");

    let replicasets: Api<ReplicaSet> = Api::namespaced(ns.client.clone(), &ns.name);
    let rs = wait_for(
        "a ReplicaSet owned by deployment web",
        Duration::from_secs(60),
        async || {
            let list = replicasets.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|rs| {
                rs.owner_references()
                    .iter()
                    .any(|o| o.uid == deployment_uid)
            })
        },
    )
    .await;
    let rs_uid = rs.uid().expect("replicaset has a uid");

    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let ready = wait_for(
        "2 Running and Ready pods",
        Duration::from_secs(90),
        async || {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let ready: Vec<Pod> = list
                .items
                .into_iter()
                .filter(is_running_and_ready)
                .collect();
            (ready.len() == 2).then_some(ready)
        },
    )
    .await;
    for pod in &ready {
        assert!(
            pod.owner_references().iter().any(|o| o.uid == rs_uid),
            "pod {} is owned by the ReplicaSet",
            pod.name_any()
        );
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        assert!(
            node.starts_with("kwok-node-"),
            "pod {} was bound to a kwok node, got {node:?}",
            pod.name_any()
        );
    }

    wait_for(
        "deployment web to report 2 ready replicas",
        Duration::from_secs(60),
        async || {
            let d = deployments.get("web").await.ok()?;
            (d.status?.ready_replicas? == 2).then_some(())
        },
    )
    .await;
}

fn is_running_and_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

#[tokio::test]
async fn garbage_collector_deletes_owned_objects() {
    let Some(ns) = setup("garbage-collector").await else {
        return;
    };
    let cms: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    let create = async |name: &str, owner: Option<&ConfigMap>| {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                owner_references: owner
                    .map(|o| vec![o.controller_owner_ref(&()).expect("owner has name and uid")]),
                ..Default::default()
            },
            ..Default::default()
        };
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("create configmap")
    };
    let gone = async |name: &str| {
        cms.get_opt(name)
            .await
            .ok()
            .and_then(|o| o.is_none().then_some(()))
    };

    // Background deletion: the owner goes at once, the collector removes the dependent afterwards.
    let owner = create("owner-bg", None).await;
    create("owned-bg", Some(&owner)).await;
    create("bystander", None).await;
    cms.delete("owner-bg", &DeleteParams::background())
        .await
        .expect("delete owner-bg");
    wait_for(
        "owned-bg to be garbage collected",
        Duration::from_secs(60),
        async || gone("owned-bg").await,
    )
    .await;

    // Foreground deletion: the owner stays (with a deletionTimestamp) until its dependents are gone.
    let owner = create("owner-fg", None).await;
    create("owned-fg", Some(&owner)).await;
    cms.delete("owner-fg", &DeleteParams::foreground())
        .await
        .expect("delete owner-fg");
    wait_for(
        "owned-fg to be garbage collected",
        Duration::from_secs(60),
        async || gone("owned-fg").await,
    )
    .await;
    wait_for(
        "owner-fg to be deleted after its dependent",
        Duration::from_secs(60),
        async || gone("owner-fg").await,
    )
    .await;

    assert!(
        cms.get_opt("bystander")
            .await
            .expect("get bystander")
            .is_some(),
        "a ConfigMap without owner references must survive"
    );
}

fn virtual_service_resource() -> ApiResource {
    ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: "networking.istio.io/v1".into(),
        kind: "VirtualService".into(),
        plural: "virtualservices".into(),
    }
}

fn virtual_service(name: &str, route: serde_json::Value) -> DynamicObject {
    from_json(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": { "name": name },
        "spec": { "hosts": ["llm"], "http": [{ "route": route }] }
    }))
}

#[tokio::test]
async fn istio_crd_schema_rejects_invalid_virtual_services() {
    let Some(mut ns) = setup("istio-crd-schema").await else {
        return;
    };
    // Objects for the schema only: their hosts and subsets name nothing that exists.
    ns.exempt_from_analyze("VirtualServices written only to test the CRD's schema");
    let ar = virtual_service_resource();
    let vss: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ar);
    let pp = PostParams::default();

    // A valid object is accepted, so the rejections below come from the schema, not a missing CRD.
    let valid = virtual_service(
        "valid",
        json!([
            { "destination": { "host": "llm", "subset": "stable" }, "weight": 90 },
            { "destination": { "host": "llm", "subset": "canary" }, "weight": 10 }
        ]),
    );
    vss.create(&pp, &valid)
        .await
        .expect("a valid VirtualService is accepted");

    let string_weight = virtual_service(
        "string-weight",
        json!([{ "destination": { "host": "llm" }, "weight": "100" }]),
    );
    let (code, message) = api_error_code("string weight", vss.create(&pp, &string_weight).await);
    assert_eq!(code, 422, "string weight is Invalid: {message}");
    assert!(
        message.contains("weight"),
        "the error names the field: {message}"
    );

    let unknown_field = virtual_service(
        "unknown-field",
        json!([{ "destination": { "host": "llm" }, "weight": 100, "wieght": 5 }]),
    );
    // kube's PostParams cannot express fieldValidation, so this create is sent as a raw request.
    let url = format!(
        "{}?fieldValidation=Strict",
        DynamicObject::url_path(&ar, Some(&ns.name))
    );
    let request = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&unknown_field).expect("serialise"))
        .expect("build request");
    let (code, message) = api_error_code(
        "unknown field under strict validation",
        ns.client.request::<DynamicObject>(request).await,
    );
    assert_eq!(
        code, 400,
        "unknown field is a BadRequest under Strict: {message}"
    );
    assert!(
        message.contains("unknown field") && message.contains("wieght"),
        "{message}"
    );

    // Without strict validation the same object is accepted and the unknown field pruned, which is
    // exactly why the operator must send strict requests.
    let stored = vss
        .create(&pp, &unknown_field)
        .await
        .expect("accepted without strict validation");
    let route = &stored.data["spec"]["http"][0]["route"][0];
    assert_eq!(route["weight"], 100);
    assert!(
        route.get("wieght").is_none(),
        "unknown field was pruned: {route}"
    );
}

/// The Gateway API's CRDs (standard channel, from the pinned `sigs.k8s.io/gateway-api` module) hold
/// their own rules: types, ranges, and CEL rules the apiserver evaluates.
#[tokio::test]
async fn gateway_api_crd_schema_rejects_invalid_http_routes() {
    let Some(mut ns) = setup("gateway-api-crd-schema").await else {
        return;
    };
    ns.exempt_from_analyze("HTTPRoutes written only to test the CRD's schema");
    let ar = ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "HTTPRoute".into(),
        plural: "httproutes".into(),
    };
    let routes: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ar);
    let pp = PostParams::default();
    let route = |name: &str, spec: serde_json::Value| -> DynamicObject {
        from_json(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": name},
            "spec": spec,
        }))
    };
    let backends = json!([{"name": "llm-v1", "port": 5000, "weight": 90}, {"name": "llm-v2", "port": 5000, "weight": 10}]);
    routes
        .create(
            &pp,
            &route(
                "valid",
                json!({"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": backends}]}),
            ),
        )
        .await
        .expect("a valid HTTPRoute is accepted");

    // Each case: the spec, and a fragment of the apiserver's refusal.
    let cases = [
        (
            "a negative weight",
            json!({"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "llm-v1", "port": 5000, "weight": -1}]}]}),
            "weight",
        ),
        (
            "a Service backend without a port",
            json!({"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "llm-v1"}]}]}),
            "Must have port for Service reference",
        ),
        (
            // (An IP passes the schema's pattern, though the Gateway API forbids it; the
            // operator's own validation refuses it.)
            "an uppercase hostname",
            json!({"hostnames": ["Chat.example.com"], "rules": [{"backendRefs": backends}]}),
            "hostnames",
        ),
        (
            "a header match type that does not exist",
            json!({"rules": [{"matches": [{"headers": [{"type": "Glob", "name": "cookie", "value": "x"}]}], "backendRefs": backends}]}),
            "Unsupported value",
        ),
        (
            "seventeen rules",
            json!({"rules": (0..17).map(|_| json!({"backendRefs": backends})).collect::<Vec<_>>()}),
            "rules",
        ),
    ];
    for (i, (what, spec, fragment)) in cases.into_iter().enumerate() {
        let (code, message) = api_error_code(
            what,
            routes.create(&pp, &route(&format!("bad-{i}"), spec)).await,
        );
        assert_eq!(code, 422, "{what} is Invalid: {message}");
        assert!(message.contains(fragment), "{what}: {message}");
    }
}

#[tokio::test]
async fn rbac_is_enforced_for_service_accounts() {
    let Some(ns) = setup("rbac-enforced").await else {
        return;
    };
    let admin = ns.client.clone();
    let sa_name = "reader";
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns.name);
    let sa: ServiceAccount = from_json(json!({ "metadata": { "name": sa_name } }));
    sas.create(&PostParams::default(), &sa)
        .await
        .expect("create service account");

    let token_request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = sas
        .create_token_request(sa_name, &PostParams::default(), &token_request)
        .await
        .expect("TokenRequest")
        .status
        .expect("TokenRequest returns a status")
        .token
        .expect("TokenRequest returns a token");

    // The admin config minus its client certificate, plus the bearer token.
    let mut config = Config::infer().await.expect("kubeconfig");
    config.auth_info = AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let as_sa = Client::try_from(config).expect("client for the service account");

    let review = Api::<SelfSubjectReview>::all(as_sa.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("the token authenticates");
    let username = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username);
    assert_eq!(
        username,
        Some(format!("system:serviceaccount:{}:{sa_name}", ns.name))
    );

    let sa_cms: Api<ConfigMap> = Api::namespaced(as_sa.clone(), &ns.name);
    let (code, message) = api_error_code(
        "list without RBAC",
        sa_cms.list(&ListParams::default()).await,
    );
    assert_eq!(code, 403, "no RBAC means Forbidden: {message}");

    let role: Role = from_json(json!({
        "metadata": { "name": "configmap-reader" },
        "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"] }]
    }));
    Api::<Role>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &role)
        .await
        .expect("create role");
    let binding: RoleBinding = from_json(json!({
        "metadata": { "name": "configmap-reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader" },
        "subjects": [{ "kind": "ServiceAccount", "name": sa_name, "namespace": ns.name }]
    }));
    Api::<RoleBinding>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create rolebinding");

    // The RBAC authorizer works from an informer cache, so the grant takes effect shortly after.
    wait_for(
        "configmaps to be listable after the RoleBinding",
        Duration::from_secs(30),
        async || sa_cms.list(&ListParams::default()).await.ok(),
    )
    .await;

    // The grant is exactly what the Role says: secrets stay forbidden.
    let sa_secrets: Api<Secret> = Api::namespaced(as_sa, &ns.name);
    let (code, message) = api_error_code(
        "list secrets",
        sa_secrets.list(&ListParams::default()).await,
    );
    assert_eq!(code, 403, "secrets are not granted: {message}");
}
