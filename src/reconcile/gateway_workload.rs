//! Whether any pod carries the labels of the Gateway's selector: Istio programs only the proxies
//! of pods the selector matches, so a Gateway whose selector matches none is accepted by the API
//! server and by istiod and receives no traffic at all (in the lab: a typo in
//! `istio: aks-istio-ingressgateway-external`). Observed here for the Istio provider (its
//! `Provider::observe`), shown as the `IngressGateway` condition by [`condition`].
//!
//! The pods are read through [`crate::gateway_pods`], at most once per selector every
//! [`RECHECK`]. Without the permission to list pods cluster-wide (an install limited to some
//! namespaces), nothing is said.

use super::validated::{Ingress, Validated};
pub use crate::claims::selector_text;
use crate::context::Context;
use crate::gateway_pods::Answer;
pub use crate::gateway_pods::RECHECK;

/// The condition type.
pub const INGRESS_GATEWAY: &str = "IngressGateway";

/// What was found for the release's Gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Nothing to say now: the check is off (an install limited to some namespaces), or the
    /// pods could not be listed. The condition, if any, is kept as it is.
    Unknown,
    /// The release creates no Gateway (it binds to existing ones): no condition.
    NoGateway,
    /// A pod (`namespace/name`) has the selector's labels.
    Found { selector: String, pod: String },
    /// No pod has the selector's labels.
    Missing { selector: String },
}

/// Whether a pod matches the selector of the Gateway `validated` creates.
pub async fn observe(ctx: &Context, validated: &Validated) -> Workload {
    let Some(Ingress::Create { selector, .. }) = validated.gateway() else {
        return Workload::NoGateway;
    };
    if !ctx.settings.check_gateway_pods || selector.is_empty() {
        return Workload::Unknown;
    }
    let selector = selector_text(selector);
    match ctx.gateway_pods.first(&ctx.client, &selector).await {
        Answer::Unreadable => Workload::Unknown,
        Answer::Pod(pod) => Workload::Found { selector, pod },
        Answer::NoPod => Workload::Missing { selector },
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
}
