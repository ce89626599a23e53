//! Whether any pod carries given labels, cluster-wide, remembered per label selector: what tells
//! whether a Gateway's selector matches an ingress gateway (`reconcile/gateway_workload.rs`).
//!
//! A list of pod metadata with the label selector and `limit=1`, cluster-wide (gateway pods live
//! in their own namespace), remembered per selector for [`RECHECK`]: a thousand releases on one
//! gateway cost one request per period, not one per reconcile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

/// How long a selector's answer is reused; also how soon a release whose selector matched no pod
/// is looked at again, so its status turns right once the gateway's pods appear.
pub const RECHECK: Duration = Duration::from_secs(30);

/// What the list of pods said for one selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A pod, as `namespace/name`.
    Pod(String),
    NoPod,
    /// The list failed (not allowed, or the apiserver away).
    Unreadable,
}

/// The answers per selector, with when they were read.
#[derive(Default)]
pub struct GatewayPods {
    answers: Mutex<HashMap<String, (Instant, Answer)>>,
}

impl GatewayPods {
    /// A pod with the labels of `selector` (`k=v,k2=v2`), from the last [`RECHECK`] or read now.
    pub async fn first(&self, client: &kube::Client, selector: &str) -> Answer {
        let cached = self.answers.lock().ok().and_then(|answers| {
            answers
                .get(selector)
                .filter(|(at, _)| at.elapsed() < RECHECK)
                .map(|(_, answer)| answer.clone())
        });
        if let Some(answer) = cached {
            return answer;
        }
        let answer = first_pod(client, selector).await;
        if let Ok(mut answers) = self.answers.lock() {
            answers.retain(|_, (at, _)| at.elapsed() < RECHECK);
            answers.insert(selector.to_owned(), (Instant::now(), answer.clone()));
        }
        answer
    }
}

async fn first_pod(client: &kube::Client, selector: &str) -> Answer {
    let pods: Api<Pod> = Api::all(client.clone());
    match pods
        .list_metadata(&ListParams::default().labels(selector).limit(1))
        .await
    {
        Ok(list) => match list.items.first() {
            Some(pod) => Answer::Pod(format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            )),
            None => Answer::NoPod,
        },
        Err(error) => {
            tracing::debug!(%error, selector, "cannot list pods to check a Gateway's selector");
            Answer::Unreadable
        }
    }
}
