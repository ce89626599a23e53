//! Whether any pod carries the labels of the Gateway's selector: Istio programs only the proxies
//! of pods the selector matches, so a Gateway whose selector matches none is accepted by the API
//! server and by istiod and receives no traffic at all (in the lab: a typo in
//! `istio: aks-istio-ingressgateway-external`). Observed here, shown as the `IngressGateway`
//! condition by [`condition`].
//!
//! A list of pod metadata with a label selector and `limit=1`, cluster-wide (gateway pods live in
//! their own namespace), remembered per selector for [`RECHECK`]: a thousand releases on one
//! gateway cost one request per period, not one per reconcile. Without the permission to list
//! pods cluster-wide (an install limited to some namespaces), nothing is said.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::validated::{Gateway, Validated};

/// How long a selector's answer is reused; also how soon a release whose selector matched no pod
/// is looked at again, so its status turns right once the gateway's pods appear.
pub const RECHECK: Duration = Duration::from_secs(30);

/// The condition type.
pub const INGRESS_GATEWAY: &str = "IngressGateway";

/// What was found for the release's Gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Nothing to say now: the release binds to Gateways it does not create, or the check is not
    /// allowed or failed. The condition, if any, is kept as it is.
    Unknown,
    /// The release creates no Gateway: no condition.
    NoGateway,
    /// A pod (`namespace/name`) has the selector's labels.
    Found { selector: String, pod: String },
    /// No pod has the selector's labels.
    Missing { selector: String },
}

/// What the list of pods said for one selector.
#[derive(Clone)]
enum Answer {
    /// A pod, as `namespace/name`.
    Pod(String),
    NoPod,
    /// The list failed (not allowed, or the apiserver away).
    Unreadable,
}

/// The answers per selector, with when they were read.
#[derive(Default)]
pub struct Workloads {
    answers: Mutex<HashMap<String, (Instant, Answer)>>,
}

/// `k=v,k2=v2`, as `kubectl -l` takes it (the keys sorted, as a BTreeMap gives them).
pub fn selector_text(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Workloads {
    /// Whether a pod matches the selector of the Gateway `validated` creates.
    pub async fn observe(&self, client: &kube::Client, validated: &Validated) -> Workload {
        let Gateway::Create { selector, .. } = &validated.gateway else {
            return Workload::NoGateway;
        };
        if selector.is_empty() {
            // An empty selector is refused by validation; nothing meaningful to check.
            return Workload::Unknown;
        }
        let selector = selector_text(selector);
        let cached = self.answers.lock().ok().and_then(|answers| {
            answers
                .get(&selector)
                .filter(|(at, _)| at.elapsed() < RECHECK)
                .map(|(_, answer)| answer.clone())
        });
        let answer = match cached {
            Some(answer) => answer,
            None => {
                let answer = first_pod(client, &selector).await;
                if let Ok(mut answers) = self.answers.lock() {
                    answers.retain(|_, (at, _)| at.elapsed() < RECHECK);
                    answers.insert(selector.clone(), (Instant::now(), answer.clone()));
                }
                answer
            }
        };
        match answer {
            Answer::Unreadable => Workload::Unknown,
            Answer::Pod(pod) => Workload::Found { selector, pod },
            Answer::NoPod => Workload::Missing { selector },
        }
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
            tracing::debug!(%error, selector, "cannot list pods to check the Gateway's selector");
            Answer::Unreadable
        }
    }
}

/// The `IngressGateway` condition for `workload`: status, reason and message; `None` for no
/// condition, or (with [`Workload::Unknown`]) for keeping the one there is.
pub fn condition(workload: &Workload) -> Option<(bool, &'static str, String)> {
    match workload {
        Workload::Unknown | Workload::NoGateway => None,
        Workload::Found { selector, pod } => Some((
            true,
            "WorkloadFound",
            format!(
                "the Gateway's selector {selector} matches pod {pod}, an ingress gateway Istio programs"
            ),
        )),
        Workload::Missing { selector } => Some((
            false,
            "NoWorkload",
            format!(
                "no pod in the cluster has the labels of the Gateway's selector {selector}: Istio \
                 programs no ingress gateway for it, so no traffic reaches this release through \
                 it; compare the selector with your gateway's pod labels \
                 (kubectl get pods -A -l {selector})"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_name_the_selector_and_what_to_do() {
        let selector = "istio=aks-istio-ingressgateway-external".to_owned();
        let table = [
            (Workload::Unknown, None),
            (Workload::NoGateway, None),
            (
                Workload::Found {
                    selector: selector.clone(),
                    pod: "aks-istio-ingress/gw-1".to_owned(),
                },
                Some((true, "WorkloadFound")),
            ),
            (
                Workload::Missing {
                    selector: selector.clone(),
                },
                Some((false, "NoWorkload")),
            ),
        ];
        for (workload, expected) in table {
            let got = condition(&workload);
            assert_eq!(
                got.as_ref().map(|(s, r, _)| (*s, *r)),
                expected,
                "{workload:?}"
            );
            if let Some((_, _, message)) = got {
                assert!(message.contains(&selector), "{message}");
            }
        }
        let missing = condition(&Workload::Missing {
            selector: selector.clone(),
        })
        .map(|(_, _, m)| m)
        .unwrap_or_default();
        assert!(missing.contains(&format!("kubectl get pods -A -l {selector}")));
    }

    #[test]
    fn selector_text_is_what_kubectl_takes() {
        let selector: BTreeMap<String, String> = [
            ("istio".to_owned(), "ingressgateway".to_owned()),
            ("app".to_owned(), "gw".to_owned()),
        ]
        .into();
        assert_eq!(selector_text(&selector), "app=gw,istio=ingressgateway");
    }
}
