//! Pure, and free of any Kubernetes type: which split to apply now, from the release's strategy
//! and what was observed. Today a release is steered by hand (`spec.weight`), so the decision is
//! that weight; the automatic strategy (steps, analysis, promotion and rollback) will be decided
//! here, from an [`Observation`] that the observe step fills.

/// How a release's traffic split is steered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The user sets the canary's share (`spec.weight`) and the operator applies it as it is.
    Manual { canary_weight: i32 },
}

/// What the observe step learned that a decision may depend on. Nothing yet: a manual release
/// needs nothing beyond its spec.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {}

/// The split to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Percent of requests for the canary.
    pub canary_weight: i32,
}

impl Decision {
    /// The stable version gets what the canary does not.
    pub fn stable_weight(&self) -> i32 {
        100 - self.canary_weight
    }
}

pub fn decide(strategy: &Strategy, _observation: &Observation) -> Decision {
    match strategy {
        Strategy::Manual { canary_weight } => Decision {
            canary_weight: (*canary_weight).clamp(0, 100),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each case: the strategy, and the canary and stable weights decided.
    #[test]
    fn manual_weights_are_applied_as_set() {
        let cases = [
            (0, 0, 100),
            (25, 25, 75),
            (100, 100, 0),
            (-5, 0, 100),
            (130, 100, 0),
        ];
        for (asked, canary, stable) in cases {
            let decision = decide(
                &Strategy::Manual {
                    canary_weight: asked,
                },
                &Observation::default(),
            );
            assert_eq!(
                (decision.canary_weight, decision.stable_weight()),
                (canary, stable),
                "asked {asked}"
            );
        }
    }
}
