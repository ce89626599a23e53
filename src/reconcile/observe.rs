//! Observe: reads what a decision needs beyond the spec and the children. A manual release needs
//! nothing, so this step reads nothing today; the automatic strategy's metric analysis (queries to
//! Prometheus) will be made here, the only step besides apply and status that does I/O.

use super::decide::Observation;
use super::validated::Validated;
use crate::Result;
use crate::api::CanaryRelease;
use crate::context::Context;

pub async fn observe(
    _ctx: &Context,
    _release: &CanaryRelease,
    _validated: &Validated,
) -> Result<Observation> {
    Ok(Observation::default())
}
