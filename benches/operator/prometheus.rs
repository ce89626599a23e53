//! A real Prometheus for the `rolling` phase: the test kit's (`tests/common/prometheus.rs`, one
//! runner for the tests and the bench), from PATH (hack/build-tools.sh links it into the tools'
//! bin dir, which `make bench` puts on PATH), on 127.0.0.1, scraping only itself every second so
//! that the releases' checks have series to query. Killed and its files removed when dropped.

#[path = "../../tests/common/host.rs"]
mod host;
#[path = "../../tests/common/prometheus.rs"]
mod kit;

/// What the kit's runner takes from the kit's process harness, which the bench includes too.
mod process {
    pub use crate::process::http_client;
}

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use kit::Prometheus;
use kit::ScrapeTarget;

/// `prometheus` from PATH; `None` (said loudly; in CI a failure) when it is not there.
pub fn binary() -> Option<PathBuf> {
    kit::binary("the bench's rolling phase")
}

/// Starts Prometheus scraping itself (job `canary`, the kit's `JOB`), and waits (bounded) until it is ready.
pub async fn start(binary: &Path) -> Prometheus {
    let port = host::free_port();
    let itself = SocketAddr::from(([127, 0, 0, 1], port));
    Prometheus::start_on(binary, port, &[ScrapeTarget::new(itself, &[])]).await
}
