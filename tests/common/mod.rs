//! Shared harness for integration tests: a client for the cluster named by `KUBECONFIG`
//! (`make cluster-up`, then `eval $(make -s cluster-env)`) and one throwaway namespace per test.
// Every test crate includes this module but none uses all of it.
#![allow(dead_code)]

pub mod examples;
pub mod gateway_api;
pub mod host;
pub mod istio;
pub mod lab;
pub mod operator;
pub mod process;
pub mod prometheus;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Write;
use std::time::{Duration, Instant};

use host::in_ci;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

/// Label on every namespace the harness creates, so leftovers are easy to find and delete.
pub const TEST_LABEL: &str = "canary-operator-test";

/// How long a test waits for the operator to do one thing.
pub const WAIT: Duration = Duration::from_secs(60);

/// A namespace owned by one test; dropping it deletes the namespace, after asking Istio's
/// `istioctl analyze` about everything in it: a test whose objects Istio finds wrong fails.
pub struct TestNs {
    pub client: Client,
    pub name: String,
    /// Why this test's objects are not for `istioctl analyze` (it writes broken ones on purpose).
    analyze_exempt: Option<&'static str>,
}

/// Connects to the cluster and creates a fresh namespace for `test_name`.
///
/// Returns `None` (the test should return early) when no cluster is reachable, unless `CI` is set:
/// in CI a missing cluster is a failure, never a silent pass.
/// istiod's xDS address, or `None` after saying loudly that `test` is skipped (a failure in CI).
/// Here, not in `istio.rs`, which the bench includes without the rest of the kit.
pub fn istiod(test: &str) -> Option<String> {
    let address = istio::xds_address();
    if address.is_none() {
        host::skip(
            test,
            "the cluster runs no istiod",
            "run `make cluster-up` (it starts istiod)",
        );
    }
    address
}

pub async fn setup(test_name: &str) -> Option<TestNs> {
    let client = match connect().await {
        Ok(client) => client,
        Err(why) => {
            let how = "run `make cluster-up` and `eval $(make -s cluster-env)`";
            if in_ci() {
                panic!(
                    "no cluster for {test_name} ({why}); {how}. CI is set, so this is a failure"
                );
            }
            // Straight to the process's stderr: eprintln! output of passing tests is captured and
            // hidden by the test runner, and a skip must not look like a pass.
            let _ = writeln!(
                std::io::stderr(),
                "\n********** SKIPPED {test_name}: no cluster ({why}); {how} **********\n"
            );
            return None;
        }
    };
    let name = namespace_name(test_name);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([(TEST_LABEL.to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    if let Err(e) = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        panic!("creating test namespace {name}: {e}");
    }
    // Pods are rejected until the namespace's `default` ServiceAccount exists, which the
    // controller-manager creates asynchronously.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    wait_for(
        &format!("ServiceAccount default in {name}"),
        Duration::from_secs(30),
        async || sas.get_opt("default").await.ok().flatten(),
    )
    .await;
    Some(TestNs {
        client,
        name,
        analyze_exempt: None,
    })
}

impl TestNs {
    /// Leaves this namespace out of `istioctl analyze`, saying why.
    pub fn exempt_from_analyze(&mut self, why: &'static str) {
        self.analyze_exempt = Some(why);
    }

    /// The host this namespace's release `name` is served under on the shared ingress gateway.
    /// Every test namespace is a tenant of the one gateway workload, and as tenants of a real
    /// one must, each release has a host of its own: two Gateways of one selector and port that
    /// both claim `*` conflict (istioctl analyze IST0145), and the gateway would route one
    /// release's requests to the other.
    pub fn host(&self, name: &str) -> String {
        format!("{name}.{}.test", self.name)
    }

    /// The FQDN of this namespace's Service `name`, as Istio names clusters after it.
    pub fn fqdn(&self, name: &str) -> String {
        format!("{name}.{}.svc.cluster.local", self.name)
    }
}

/// Calls `f` until it returns `Some`, at most until `timeout`; panics naming `what` on timeout.
pub async fn wait_for<T, F>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: AsyncFnMut() -> Option<T>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn connect() -> Result<Client, String> {
    let client = Client::try_default().await.map_err(|e| e.to_string())?;
    // try_default only reads the config; a request shows whether a server is really there.
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("apiserver did not answer within 10s".into()),
    }
}

/// A valid DNS label: the sanitised test name (for finding a test's objects) plus a random suffix
/// (so reruns and parallel tests never collide with a namespace that is still terminating).
fn namespace_name(test_name: &str) -> String {
    let mut base = String::new();
    for c in test_name.to_ascii_lowercase().chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && (base.is_empty() || base.ends_with('-'))) {
            base.push(c);
        }
    }
    base.truncate(50);
    let base = base.trim_end_matches('-');
    let base = if base.is_empty() { "test" } else { base };
    // RandomState is seeded randomly per process and differs per instance: enough for a suffix.
    let suffix = RandomState::new().hash_one(Instant::now()) % 36u64.pow(6);
    format!("{base}-{}", base36(suffix, 6))
}

fn base36(mut n: u64, width: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Drop for TestNs {
    fn drop(&mut self) {
        // A test that already failed has said why; its objects may be half made.
        if let Some(why) = self.analyze_exempt {
            eprintln!("istioctl analyze of {} left out: {why}", self.name);
        } else if !std::thread::panicking() && !self.name.is_empty() {
            match istio::problems(&self.name) {
                Ok(problems) => {
                    if !problems.is_empty() {
                        let name = self.name.clone();
                        delete_namespace(std::mem::take(&mut self.name));
                        panic!(
                            "istioctl analyze finds problems in namespace {name}:\n  {}",
                            problems.join("\n  ")
                        );
                    }
                }
                Err(why) if in_ci() => {
                    delete_namespace(std::mem::take(&mut self.name));
                    panic!(
                        "istioctl analyze could not run ({why}); CI is set, so this is a failure"
                    );
                }
                Err(why) => eprintln!("warning: istioctl analyze of {} skipped: {why}", self.name),
            }
        }
        delete_namespace(std::mem::take(&mut self.name));
    }
}

/// Deletes a test's namespace (in the background: its objects go with it).
fn delete_namespace(name: String) {
    if name.is_empty() {
        return;
    }
    // Drop cannot await, and blocking the test's runtime would starve the client's background
    // tasks; so a separate thread with its own runtime and its own client does the delete.
    let deleted = std::thread::spawn(move || -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let client = Client::try_default().await.map_err(|e| e.to_string())?;
            let api = Api::<Namespace>::all(client);
            let params = DeleteParams::background();
            let delete = api.delete(&name, &params);
            match tokio::time::timeout(Duration::from_secs(30), delete).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("deleting namespace {name}: {e}")),
                Err(_) => Err(format!("deleting namespace {name}: timed out")),
            }
        })
    })
    .join();
    match deleted {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("warning: {e}"),
        Err(_) => eprintln!("warning: namespace cleanup thread panicked"),
    }
}

/// A kubeconfig for the cluster the tests use, authenticating with `token` only.
// Test set-up: a failed expectation is the test's failure.
#[allow(clippy::expect_used)]
pub fn token_kubeconfig(token: &str, namespace: &str) -> String {
    let path = std::env::var("KUBECONFIG").expect("KUBECONFIG is set by `make cluster-env`");
    let path = std::env::split_paths(&path)
        .next()
        .expect("a KUBECONFIG path");
    let admin: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read KUBECONFIG: {e}")),
    )
    .expect("parse KUBECONFIG");
    let context_name = admin["current-context"].as_str().expect("current-context");
    let context = admin["contexts"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == context_name))
        .expect("the current context");
    let cluster_name = &context["context"]["cluster"];
    let cluster = admin["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| &c["name"] == cluster_name))
        .expect("the current cluster");
    // Only the server and its CA are taken over; no client certificate, so the token is the
    // only identity the operator has.
    let mut server = serde_json::Map::new();
    for key in [
        "server",
        "certificate-authority",
        "certificate-authority-data",
        "tls-server-name",
    ] {
        if let Some(value) = cluster["cluster"].get(key) {
            server.insert(key.to_owned(), value.clone());
        }
    }
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": server}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": "operator", "namespace": namespace}}],
        "current-context": "operator",
    });
    serde_norway::to_string(&config).expect("kubeconfig YAML")
}

/// A token (valid for an hour) of the ServiceAccount `name` in the test's namespace, for running
/// the operator as that identity.
pub async fn service_account_token(ns: &TestNs, name: &str) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let created = Api::<ServiceAccount>::namespaced(ns.client.clone(), &ns.name)
        .create_token_request(name, &PostParams::default(), &request)
        .await;
    match created.map(|r| r.status.map(|s| s.token)) {
        Ok(Some(Some(token))) => token,
        other => panic!("no token for ServiceAccount {name}: {other:?}"),
    }
}
