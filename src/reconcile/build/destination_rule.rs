use std::collections::BTreeMap;

use super::metadata;
use crate::api::istio::{DestinationRule, DestinationRuleSpec, Subset};
use crate::labels;
use crate::reconcile::validate::Validated;

/// Names each version as a subset of the Service by its `version` label.
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
                    labels: BTreeMap::from([(labels::VERSION.to_owned(), version.name.clone())]),
                })
                .collect(),
        },
    );
    rule.metadata = metadata(v, &v.name, labels::common(&v.name));
    rule
}
