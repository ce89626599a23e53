//! The operator's connections to the API server.
//!
//! The apiserver closes a connection that has carried no request for 90 s (its `IdleTimeout`, for
//! HTTP/1.1 and HTTP/2 alike). With kube's default client every request that is not a watch goes
//! over a pool of HTTP/1.1 connections, so the first weight edit after minutes of quiet paid a new
//! TCP and TLS handshake (about 40 ms more than the edits that followed; client-go, multiplexing
//! everything over one HTTP/2 connection, never pays it).
//!
//! So the operator's writes, reads and its CanaryRelease watches share one HTTP/2 connection
//! ([`multiplexed`]): a watch is a stream that stays open, which keeps the connection from ever
//! being idle, and the writes find it warm. The child watches keep a connection each
//! ([`kube::client::ClientBuilder`]'s default): they are namespaces × kinds, which could exceed the
//! 250 streams the apiserver allows on one HTTP/2 connection, past which requests would queue
//! behind watches that never end.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ClientBuilder, ConfigExt};
use tower::retry::RetryLayer;
use tower::util::BoxService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

/// The service below the operator's own layers.
pub type Stack = BoxService<http::Request<Body>, http::Response<hyper::body::Incoming>, BoxError>;

/// The clients of a controller (see the module's doc): `requests` for every request but the child
/// watches, which go through `child_watches`.
#[derive(Clone)]
pub struct Clients {
    pub requests: kube::Client,
    pub child_watches: kube::Client,
}

/// One client for everything, as tests that run the controller in-process use it.
impl From<kube::Client> for Clients {
    fn from(client: kube::Client) -> Clients {
        Clients {
            requests: client.clone(),
            child_watches: client,
        }
    }
}

/// A dead connection (an apiserver that vanished without closing it) is noticed within
/// interval + timeout, and its requests fail over to a new connection.
const PING_INTERVAL: Duration = Duration::from_secs(20);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("tls-server-name {name:?} in the kubeconfig is not a valid server name: {source}")]
    ServerName {
        name: String,
        source: rustls::pki_types::InvalidDnsNameError,
    },
}

/// A client builder for `config` whose requests share one HTTP/2 connection (HTTP/1.1 only if the
/// server does not offer HTTP/2). Authentication, the base URI and the extra headers come from
/// `config` as in kube's default client.
pub fn multiplexed(config: &kube::Config) -> Result<ClientBuilder<Stack>, ClientError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    // HTTP/2 sends a request as several small frames; with Nagle's algorithm the later ones wait
    // for the server's delayed ACK of the first (40 ms on Linux): every write took 45 ms more.
    http.set_nodelay(true);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    let builder = match &config.tls_server_name {
        Some(name) => builder.with_server_name_resolver(
            hyper_rustls::FixedServerNameResolver::new(name.clone().try_into().map_err(
                |source| ClientError::ServerName {
                    name: name.clone(),
                    source,
                },
            )?),
        ),
        None => builder,
    };
    let https = builder.enable_http1().enable_http2().wrap_connector(http);
    let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_INTERVAL)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build::<_, Body>(https);
    // As in kube's default client: 429, 503 and 504 are retried with backoff, in place.
    let retry = config
        .default_retry
        .then(|| RetryLayer::new(RetryPolicy::server_retry()));
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(hyper)
        .boxed();
    Ok(ClientBuilder::new(
        service,
        config.default_namespace.clone(),
    ))
}
