//! Traffic providers: what routes requests to the versions. The workload children (ConfigMaps,
//! Deployments, HPAs, the Service) are the same whichever provider routes; a provider builds the
//! routing children for the versions and the decided split, and reads back the split that routing
//! children carry, for status.
//!
//! Adding a provider: one module here with a type implementing [`Provider`], its kinds in
//! [`crate::kinds`] (with its API group in `kinds::provider_of_group`), a variant of
//! `validated::Traffic` and one arm in [`provider`].

pub mod gateway_api;
pub mod istio;
pub mod sticky;

use super::super::children::Children;
use super::super::decide::Decision;
use super::super::validated::{Traffic, Validated};

/// The split a route carries: each version's share, `None` when the route does not name it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub stable: Option<i32>,
    pub canary: Option<i32>,
}

pub trait Provider {
    /// The routing children that send `decision`'s split to `v`'s versions; the other kinds are
    /// left empty.
    fn route(&self, v: &Validated, decision: &Decision) -> Children;

    /// The split that the routing children among `children` carry.
    fn split(&self, v: &Validated, children: &Children) -> Split;

    /// Whether what routes traffic has taken up the routing children among `children`, as far
    /// as it says; a provider whose objects carry no such word has them accepted.
    fn acceptance(&self, _v: &Validated, _children: &Children) -> Acceptance {
        Acceptance::Accepted
    }
}

/// What the routing's controller says of a release's routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acceptance {
    Accepted,
    /// Not (yet) taken up: the controller's reason (a condition reason) and a message for people.
    Refused {
        reason: String,
        message: String,
    },
}

/// The provider that routes `v`'s traffic.
pub fn provider(v: &Validated) -> &'static dyn Provider {
    match v.traffic {
        Traffic::Istio { .. } => &istio::Istio,
        Traffic::GatewayApi(_) => &gateway_api::GatewayApi,
    }
}
