//! Where each version's pods are: the `--upstream KEY=HOST:PORT` addresses. The keys are what the
//! routing plan splits between, and the addresses what nginx sends to.

use std::net::SocketAddr;

/// One `--upstream`: key (a subset, or the suffix of a version's Service) and address.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    pub(crate) subset: String,
    pub(crate) addr: SocketAddr,
}

/// `KEY=HOST:PORT`, as `--upstream` takes it.
pub(crate) fn parse_upstream(text: &str) -> Result<Upstream, String> {
    let (subset, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not SUBSET=HOST:PORT"))?;
    // The subset is written into nginx's configuration and into `applied` lines.
    if subset.is_empty()
        || !subset
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(format!("{subset:?} is not a subset name"));
    }
    let addr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not HOST:PORT (an IP address and a port): {e}"))?;
    Ok(Upstream {
        subset: subset.to_owned(),
        addr,
    })
}
