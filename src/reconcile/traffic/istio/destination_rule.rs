use crate::api::istio::{DestinationRule, DestinationRuleSpec, Subset};
use crate::labels;
use crate::reconcile::meta::metadata;
use crate::reconcile::validated::Validated;

/// Names each version as a subset of the Service by its `version` label, together with the labels
/// that make a pod the release's own ([`labels::release_selector`]).
pub fn destination_rule(v: &Validated) -> DestinationRule {
    let mut rule = DestinationRule::new(
        &v.name,
        DestinationRuleSpec {
            host: v.host.clone(),
            subsets: v
                .versions()
                .iter()
                .map(|version| Subset {
                    name: version.name.clone(),
                    labels: {
                        let mut selector = labels::release_selector(&v.name);
                        selector.insert(labels::VERSION.to_owned(), version.name.clone());
                        selector
                    },
                })
                .collect(),
        },
    );
    rule.metadata = metadata(v, &v.name, labels::common(&v.name));
    rule
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::reconcile::testing::{lab_validated, shared_metadata, to_json};

    #[test]
    fn lab_destination_rule_names_both_subsets() {
        let expected = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": shared_metadata(),
            "spec": {
                "host": "azureopenaichat.azureopenai.svc.cluster.local",
                "subsets": [
                    {"name": "v1", "labels": {
                        "app.kubernetes.io/instance": "azureopenaichat",
                        "app.kubernetes.io/managed-by": "canary-operator",
                        "version": "v1",
                    }},
                    {"name": "v2", "labels": {
                        "app.kubernetes.io/instance": "azureopenaichat",
                        "app.kubernetes.io/managed-by": "canary-operator",
                        "version": "v2",
                    }},
                ],
            },
        });
        assert_eq!(to_json(&destination_rule(&lab_validated())), expected);
    }
}
