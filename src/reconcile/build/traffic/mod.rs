//! Traffic providers: what routes requests to the versions. The workload children (ConfigMaps,
//! Deployments, HPAs, the Service) are the same whichever provider routes; a provider builds the
//! routing children for the versions and the decided split, and reads back the split that routing
//! children carry, for status.
//!
//! Adding a provider: one module here with a type implementing [`Provider`], its kinds in
//! [`crate::kinds`], and one arm in [`provider`].

pub mod istio;

use super::super::children::Children;
use super::super::decide::Decision;
use super::super::validated::Validated;

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
}

/// The provider that routes `v`'s traffic. Istio is the only one so far.
pub fn provider(_v: &Validated) -> &'static dyn Provider {
    &istio::Istio
}
