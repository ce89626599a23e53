//! Pure, and free of any Kubernetes type: which split to apply now, from the release's strategy
//! and what was observed. A manual release gets the weight its spec sets; an automatic one is
//! moved on by the rollout state machine ([`crate::rollout::advance`]) from the state its status
//! holds and what the observe step measured.

use std::time::SystemTime;

use crate::claims::Conflict;
use crate::rollout::{self, Capacity, Measurement, Outcome, Plan, State};

/// How a release's traffic split is steered.
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// The user sets the canary's share (`spec.weight`) and the operator applies it as it is.
    Manual { canary_weight: i32 },
    /// Steps, analysis, promotion and rollback ([`crate::rollout`]).
    Automatic(Box<Automatic>),
}

/// An automatic release: its plan, and the canary revision it rolls out.
#[derive(Clone, Debug, PartialEq)]
pub struct Automatic {
    pub plan: Plan,
    /// Hash of the canary's effective spec: a new one starts a new rollout. `None` without a
    /// canary: nothing to roll out.
    pub revision: Option<String>,
}

/// What the observe step learned that a decision may depend on. A manual release needs nothing
/// beyond its spec; an automatic one needs the rest.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    pub rollout: Option<RolloutObservation>,
    /// An older claim on a host the release routes ([`crate::claims`]).
    pub conflict: Option<Conflict>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RolloutObservation {
    pub now: SystemTime,
    /// The state the release's status holds, if it has one.
    pub previous: Option<State>,
    /// The text of the `canary.dev/request` annotation.
    pub request: Option<String>,
    pub canary_ready: i32,
    /// The canary Deployment's own reason for lacking replicas, if it gives one.
    pub canary_problem: Option<String>,
    pub capacity: Capacity,
    pub measurement: Option<Measurement>,
}

/// The split to apply, and for an automatic release where its rollout now stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Percent of requests for the canary.
    pub canary_weight: i32,
    /// The least replicas the canary's autoscaler must keep (raised for a step's share).
    pub canary_min_replicas: Option<i32>,
    pub rollout: Option<Outcome>,
    /// Why the release must not route now: an older claim on one of its hosts. Its workloads
    /// stay; its routes are not built (and so pruned), so it takes no traffic from the holder.
    pub withheld: Option<Conflict>,
}

impl Decision {
    /// The stable version gets what the canary does not.
    pub fn stable_weight(&self) -> i32 {
        100 - self.canary_weight
    }

    pub fn manual(canary_weight: i32) -> Decision {
        Decision {
            canary_weight: canary_weight.clamp(0, 100),
            canary_min_replicas: None,
            rollout: None,
            withheld: None,
        }
    }
}

pub fn decide(strategy: &Strategy, observation: &Observation) -> Decision {
    match &observation.conflict {
        Some(conflict) => withheld(strategy, observation, conflict),
        None => routed(strategy, observation),
    }
}

/// A release that may not route: a rollout holds where it stands (its state unchanged, no
/// measurement, no step ends), since no request reaches either version through its route.
fn withheld(strategy: &Strategy, observation: &Observation, conflict: &Conflict) -> Decision {
    let previous = observation
        .rollout
        .as_ref()
        .and_then(|r| r.previous.as_ref());
    let (canary_weight, rollout) = match (strategy, previous) {
        (Strategy::Manual { canary_weight }, _) => (*canary_weight, None),
        (Strategy::Automatic(_), Some(state)) => (
            state.weight,
            Some(Outcome {
                state: state.clone(),
                canary_weight: state.weight,
                canary_min_replicas: None,
                notes: Vec::new(),
                wake: None,
            }),
        ),
        (Strategy::Automatic(_), None) => (0, None),
    };
    Decision {
        withheld: Some(conflict.clone()),
        rollout,
        ..Decision::manual(canary_weight)
    }
}

fn routed(strategy: &Strategy, observation: &Observation) -> Decision {
    match (strategy, &observation.rollout) {
        (Strategy::Manual { canary_weight }, _) => Decision::manual(*canary_weight),
        (Strategy::Automatic(automatic), Some(seen)) => {
            let Some(revision) = &automatic.revision else {
                let outcome = rollout::idle(seen.previous.as_ref(), seen.now);
                return Decision {
                    rollout: Some(outcome),
                    ..Decision::manual(0)
                };
            };
            let outcome = rollout::advance(
                &automatic.plan,
                seen.previous.as_ref(),
                &rollout::Inputs {
                    now: seen.now,
                    revision,
                    request: seen.request.as_deref(),
                    canary_ready: seen.canary_ready,
                    canary_problem: seen.canary_problem.as_deref(),
                    capacity: seen.capacity,
                    measurement: seen.measurement.clone(),
                },
            );
            Decision {
                canary_weight: outcome.canary_weight,
                canary_min_replicas: outcome.canary_min_replicas,
                rollout: Some(outcome),
                withheld: None,
            }
        }
        // Observe always fills the rollout's part for an automatic release; without it, the
        // safe split is all to stable.
        (Strategy::Automatic(_), None) => Decision::manual(0),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rollout::{Phase, Step};

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

    #[test]
    fn an_automatic_release_starts_at_its_first_step() {
        let strategy = Strategy::Automatic(Box::new(Automatic {
            plan: Plan {
                steps: vec![
                    Step {
                        weight: 10,
                        duration: Duration::from_secs(60),
                        approval: false,
                    },
                    Step {
                        weight: 100,
                        duration: Duration::from_secs(60),
                        approval: false,
                    },
                ],
                analysis: None,
                deadline: crate::rollout::Deadline::default(),
            },
            revision: Some("abc".to_owned()),
        }));
        let observation = |ready| Observation {
            rollout: Some(RolloutObservation {
                now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
                previous: None,
                request: None,
                canary_ready: ready,
                canary_problem: None,
                capacity: Capacity::Autoscaled {
                    stable: 4,
                    min: 1,
                    max: 4,
                },
                measurement: None,
            }),
            conflict: None,
        };
        let waiting = decide(&strategy, &observation(0));
        assert_eq!(
            (waiting.canary_weight, waiting.canary_min_replicas),
            (0, Some(1))
        );
        let started = decide(&strategy, &observation(1));
        assert_eq!(started.canary_weight, 10);
        assert_eq!(
            started.rollout.map(|o| o.state.phase),
            Some(Phase::Progressing)
        );
        assert_eq!(decide(&strategy, &Observation::default()).canary_weight, 0);
    }

    #[test]
    fn a_release_in_conflict_is_withheld_and_its_rollout_holds() {
        let conflict = Conflict {
            holder: crate::claims::Key::new(crate::claims::Kind::CanaryRelease, "lab", "first"),
            host: "*".to_owned(),
            place: "the ingress pods istio=ingressgateway, port 80".to_owned(),
        };
        let manual = decide(
            &Strategy::Manual { canary_weight: 30 },
            &Observation {
                rollout: None,
                conflict: Some(conflict.clone()),
            },
        );
        assert_eq!(manual.withheld.as_ref(), Some(&conflict));
        assert_eq!(manual.canary_weight, 30);
        let plan = Plan {
            steps: vec![Step {
                weight: 100,
                duration: Duration::from_secs(60),
                approval: false,
            }],
            analysis: None,
            deadline: crate::rollout::Deadline::default(),
        };
        let automatic = Strategy::Automatic(Box::new(Automatic {
            plan: plan.clone(),
            revision: Some("abc".to_owned()),
        }));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let seen = |previous: Option<State>| Observation {
            rollout: Some(RolloutObservation {
                now,
                previous,
                request: None,
                canary_ready: 1,
                canary_problem: None,
                capacity: Capacity::Fixed(1),
                measurement: None,
            }),
            conflict: Some(conflict.clone()),
        };
        let fresh = decide(&automatic, &seen(None));
        assert_eq!(
            (fresh.canary_weight, fresh.rollout),
            (0, None),
            "nothing started"
        );
        // A rollout under way keeps its state as it was: the step does not end, nothing is noted.
        let started = decide(
            &automatic,
            &Observation {
                conflict: None,
                ..seen(None)
            },
        );
        let Some(state) = started.rollout.map(|o| o.state) else {
            panic!("the rollout started")
        };
        let held = decide(&automatic, &seen(Some(state.clone())));
        assert_eq!(held.rollout.as_ref().map(|o| &o.state), Some(&state));
        assert!(
            held.rollout
                .as_ref()
                .is_some_and(|o| o.notes.is_empty() && o.wake.is_none())
        );
        assert_eq!(held.canary_weight, state.weight);
        assert!(held.withheld.is_some());
    }
}
