//! What a rollout test stands on: an automatic release, and (for analysis) the real parts behind
//! it, plus the waits on its rollout status and on the VirtualService's weights.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use canary_operator::api::{CanaryRelease, RolloutStatus, TrafficProvider};
use canary_operator::reconcile::traffic::applied_split;
use futures::StreamExt;
use kube::api::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::backend::{Backend, IngressStandin, nginx, start_backend};
use crate::common::lab::{api, apply_release, create_secret, release};
use crate::common::prometheus::{self, Prometheus, ScrapeTarget};
use crate::common::{TestNs, gateway_api, istiod};

pub const NAME: &str = "chat";

/// The lab's release named `chat`, automatic: `steps` as (weight, duration, approval), and
/// `analysis` (a JSON object) when given.
pub fn automatic(ns: &TestNs, steps: &[(i32, &str, bool)], analysis: Option<Value>) -> Value {
    let mut r = release(ns, NAME);
    let spec = r["spec"].as_object_mut().expect("spec");
    spec.remove("weight");
    spec.insert(
        "strategy".to_owned(),
        json!({"steps": steps.iter().map(|(w, d, a)| json!({"weight": w, "duration": d, "approval": a})).collect::<Vec<_>>()}),
    );
    if let Some(analysis) = analysis {
        spec.insert("analysis".to_owned(), analysis);
    }
    r
}

/// The canary's error rate over the last 5 s; 0 when it answered without errors (the error series
/// does not exist then), NaN or nothing when it had no requests.
pub const ERROR_RATE: &str = r#"(sum(rate(gen_ai_client_operation_duration_seconds_count{namespace="{{namespace}}",version="{{version}}",error_type!=""}[5s])) or vector(0)) / sum(rate(gen_ai_client_operation_duration_seconds_count{namespace="{{namespace}}",version="{{version}}"}[5s]))"#;

/// Analysis every second after 2 s of warmup, one check on the error rate.
pub fn analysis(prometheus: &str) -> Value {
    json!({
        "prometheus": {"address": prometheus, "timeout": "1s"},
        "interval": "1s",
        "warmup": "2s",
        "failureLimit": 1,
        "inconclusiveLimit": 4,
        "errorLimit": 2,
        "checks": [{
            "name": "error-rate",
            "query": ERROR_RATE,
            "max": 0.05,
            "compareToStable": {"maxRatio": 2.0},
        }],
    })
}

/// `kubectl apply --server-side` of `release`, with the Secret it references.
pub async fn apply(ns: &TestNs, release: Value) -> CanaryRelease {
    let secrets = api::<k8s_openapi::api::core::v1::Secret>(ns);
    if secrets
        .get_opt("azure-openai")
        .await
        .ok()
        .flatten()
        .is_none()
    {
        create_secret(ns).await;
    }
    apply_release(ns, release).await.expect("apply the release")
}

pub async fn rollout(ns: &TestNs) -> Option<RolloutStatus> {
    api::<CanaryRelease>(ns)
        .get(NAME)
        .await
        .ok()?
        .status?
        .rollout
}

/// Waits until the rollout is in `phase` (and `reason`, when given).
pub async fn wait_phase(
    ns: &TestNs,
    phase: &str,
    reason: Option<&str>,
    within: Duration,
) -> RolloutStatus {
    let mut last = None;
    let found = tokio::time::timeout(within, async {
        loop {
            if let Some(r) = rollout(ns).await {
                if r.phase == phase && (reason.is_none() || r.pause_reason.as_deref() == reason) {
                    return r;
                }
                last = Some(r);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    match found {
        Ok(r) => r,
        Err(_) => panic!("rollout not {phase} {reason:?} within {within:?}; last: {last:#?}"),
    }
}

/// `kubectl canary VERB chat`, through the plugin's own code: the annotation, stamped now, and the
/// wait until the operator has recorded it.
pub async fn ask(ns: &TestNs, verb: canary_operator::rollout::Verb) -> String {
    let answer = canary_operator::plugin::request::request(
        &target(ns),
        NAME,
        verb,
        Some(Duration::from_secs(30)),
    )
    .await
    .unwrap_or_else(|e| panic!("kubectl canary {}: {e}", verb.as_str()));
    let recorded = answer.rollout.and_then(|r| r.last_request);
    assert_eq!(recorded.as_deref(), Some(answer.request.as_str()));
    answer.request
}

/// What the plugin's commands act on: the test's namespace.
pub fn target(ns: &TestNs) -> canary_operator::plugin::cluster::Target {
    canary_operator::plugin::cluster::Target {
        client: ns.client.clone(),
        namespace: ns.name.clone(),
    }
}

/// What a watch of `api` saw, in order: what `describe` says of each version of an object, with
/// the resourceVersion it was seen at (etcd's revisions order every write in the cluster,
/// whichever object it was). Recorded until the returned task is aborted.
pub type Seen<T> = Arc<Mutex<Vec<(u64, T)>>>;

/// What a watch needs of a kind.
pub trait Watched:
    kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static
{
}

impl<K> Watched for K where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static
{
}

pub fn record<K: Watched, T: Send + 'static>(
    api: kube::Api<K>,
    config: watcher::Config,
    describe: impl Fn(&K) -> Option<T> + Send + 'static,
) -> (Seen<T>, tokio::task::JoinHandle<()>) {
    let seen: Seen<T> = Arc::default();
    let log = seen.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, config).applied_objects().boxed();
        while let Some(event) = stream.next().await {
            if let Ok(object) = event
                && let Some(what) = describe(&object)
                && let Ok(mut log) = log.lock()
            {
                let revision = object
                    .meta()
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_default();
                log.push((revision, what));
            }
        }
    });
    (seen, task)
}

/// Every canary weight the release's route carried, in order, as a watch sees it.
pub struct WeightLog(Seen<i32>, tokio::task::JoinHandle<()>);

impl WeightLog {
    /// The canary's weights in the route of release [`NAME`] routed by `provider`, as the seam
    /// reads them ([`canary_operator::reconcile::traffic::applied_split`]).
    pub fn start(ns: &TestNs, provider: TrafficProvider) -> WeightLog {
        let release = gateway_api::routed_by(ns, release(ns, NAME), provider);
        let release: CanaryRelease = serde_json::from_value(release).expect("the lab's release");
        let routes = kube::Api::<DynamicObject>::namespaced_with(
            ns.client.clone(),
            &ns.name,
            &provider.route_resource(),
        );
        let config = watcher::Config::default().fields(&format!("metadata.name={NAME}"));
        let (seen, task) = record(routes, config, move |route| {
            applied_split(&release, route)?.canary
        });
        WeightLog(seen, task)
    }

    /// The weights, each change once (a route rewritten for another reason shows no new weight).
    pub fn weights(&self) -> Vec<i32> {
        let mut weights: Vec<i32> = self
            .0
            .lock()
            .map(|w| w.iter().map(|(_, weight)| *weight).collect())
            .unwrap_or_default();
        weights.dedup();
        weights
    }

    /// The weights with the resourceVersion each was first seen at.
    pub fn revisions(&self) -> Vec<(u64, i32)> {
        let mut seen = self.0.lock().map(|w| w.clone()).unwrap_or_default();
        seen.dedup_by_key(|(_, weight)| *weight);
        seen
    }

    /// The weights once the canary had a ready replica: a rollout's route starts at 0 until then.
    pub fn since_ready(&self) -> Vec<i32> {
        let mut weights = self.weights();
        if weights.first() == Some(&0) {
            weights.remove(0);
        }
        weights
    }
}

impl Drop for WeightLog {
    fn drop(&mut self) {
        self.1.abort();
    }
}

/// The real parts behind a rolling release: a chat backend per version, Prometheus scraping
/// both (with the namespace and version labels a pod's labels would give), and the ingress
/// gateway stand-in. `None` when nginx or Prometheus is missing outside CI (after saying so).
pub struct Stage {
    /// The stable's and the canary's processes, kept running while the stage lives.
    backends: (Backend, Backend),
    pub prometheus: Prometheus,
    pub gateway: IngressStandin,
    load: Option<tokio::task::JoinHandle<()>>,
}

/// How the versions behave: each backend's environment, and whether Prometheus scrapes the
/// canary at all (a canary that exposes no metrics).
#[derive(Clone, Copy)]
pub struct Versions<'a> {
    pub stable_env: &'a [(&'a str, &'a str)],
    pub canary_env: &'a [(&'a str, &'a str)],
    pub canary_scraped: bool,
    /// Who routes the release: with the Gateway API, an HTTPRoute on the platform's Gateway,
    /// whose proxy the stand-in then is.
    pub provider: TrafficProvider,
}

impl Stage {
    pub async fn start(ns: &TestNs, test: &str, canary_env: &[(&str, &str)]) -> Option<Stage> {
        let versions = Versions {
            stable_env: &[],
            canary_env,
            canary_scraped: true,
            provider: TrafficProvider::Istio,
        };
        Stage::start_with(ns, test, versions).await
    }

    pub async fn start_with(ns: &TestNs, test: &str, versions: Versions<'_>) -> Option<Stage> {
        let nginx = nginx(test)?;
        let xds = istiod(test)?;
        let binary = prometheus::binary(test)?;
        let mut env = vec![("AZURE_MODEL_NAME", "m-stable")];
        env.extend_from_slice(versions.stable_env);
        let stable = start_backend(&env).await;
        let mut env = vec![("AZURE_MODEL_NAME", "m-canary")];
        env.extend_from_slice(versions.canary_env);
        let canary = start_backend(&env).await;
        let mut targets = vec![ScrapeTarget::new(
            stable.addr,
            &[("namespace", &ns.name), ("version", "v1")],
        )];
        if versions.canary_scraped {
            targets.push(ScrapeTarget::new(
                canary.addr,
                &[("namespace", &ns.name), ("version", "v2")],
            ));
        }
        let prometheus = Prometheus::start(&binary, &targets).await;
        // With the Gateway API the stand-in is a proxy of the platform's Gateway (its workload's
        // labels, in its namespace), as istiod's gateway deployment would be.
        let proxy: &[&str] = match versions.provider {
            TrafficProvider::GatewayApi => {
                gateway_api::platform_gateway(ns).await;
                &gateway_api::PLATFORM_PROXY
            }
            TrafficProvider::Istio => &[],
        };
        let gateway = IngressStandin::start(
            &nginx,
            &xds,
            (&ns.name, NAME, &ns.host(NAME)),
            &[("v1", stable.addr), ("v2", canary.addr)],
            proxy,
        );
        Some(Stage {
            backends: (stable, canary),
            prometheus,
            gateway,
            load: None,
        })
    }

    /// Tells the canary's process how to fail from now on (`PUT /fault`): a real fault in the
    /// real backend, mid-rollout.
    pub async fn canary_fault(&self, fault: Value) {
        let response = http()
            .put(self.backends.1.url("/fault"))
            .json(&fault)
            .send()
            .await
            .expect("PUT /fault to the canary");
        assert!(
            response.status().is_success(),
            "PUT /fault {fault}: {}",
            response.status()
        );
    }

    /// Steady traffic through the gateway stand-in: `rps` requests a second, as users would send.
    pub fn load(&mut self, rps: u32) {
        let url = self.gateway.url("/chat");
        let client = http();
        self.load = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rps.max(1));
            loop {
                tick.tick().await;
                let request = client.post(&url).json(&json!({"message": "hi"})).send();
                tokio::spawn(request);
            }
        }));
    }
}

/// A plain HTTP client for the stage's processes.
fn http() -> reqwest::Client {
    // reqwest has no TLS provider of its own here; ring is the one kube links.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client")
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(load) = self.load.take() {
            load.abort();
        }
    }
}
