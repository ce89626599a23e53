//! The HTTP client `verify` sends its requests with.

use std::time::Duration;

/// Connecting should take a fraction of a request's time; a host that does not answer a SYN is
/// reported as unreachable without waiting for the whole request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client whose every request ends within `request_timeout`.
///
/// reqwest is built without a TLS crypto provider of its own; the process uses ring, the provider
/// kube's client already links, so that one TLS stack serves both and no second one is built.
pub fn client(request_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    // Err only means a provider is installed already, which is what is wanted.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(request_timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(request_timeout))
        .user_agent(concat!("kubectl-canary/", env!("CARGO_PKG_VERSION")))
        .build()
}
