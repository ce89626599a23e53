//! Counts the requests the operator sends to the API server, by kind of request.
//!
//! The counts sit below every `Api` call (a tower layer in the client), so they include Events,
//! status writes and deletes: "no writes when nothing changed" is checked against what really left
//! the process, not against our own bookkeeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use std::future::Future;
use std::pin::Pin;

use http::{Method, Request, Response};
use tower::{Layer, Service};

/// Totals since the client was built.
#[derive(Debug, Default)]
pub struct RequestCounts {
    writes: AtomicU64,
    reads: AtomicU64,
    watches: AtomicU64,
}

impl RequestCounts {
    /// POST, PUT, PATCH and DELETE requests.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// GET requests that are not watches (single gets and lists).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Watch requests (each reconnect counts).
    pub fn watches(&self) -> u64 {
        self.watches.load(Ordering::Relaxed)
    }

    fn record(&self, method: &Method, query: Option<&str>) {
        let counter = match *method {
            Method::GET
                if query
                    .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1")) =>
            {
                &self.watches
            }
            Method::GET | Method::HEAD => &self.reads,
            _ => &self.writes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Tower layer that records each request in a shared [`RequestCounts`].
#[derive(Clone, Debug, Default)]
pub struct CountRequests(pub Arc<RequestCounts>);

impl<S> Layer<S> for CountRequests {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            counts: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Counted<S> {
    inner: S,
    counts: Arc<RequestCounts>,
}

impl<S, B, R> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.counts.record(request.method(), request.uri().query());
        // One line per request with its answer (debug): what the chart's RBAC test checks the
        // grants against, whichever connection the request took.
        let method = request.method().clone();
        let url = request.uri().clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            if tracing::enabled!(tracing::Level::DEBUG) {
                let status = response.as_ref().ok().map(|r| r.status().as_u16());
                tracing::debug!(%method, %url, status, "request answered");
            }
            response
        })
    }
}

/// Builds a client from `config` whose requests are counted in `counts`.
pub fn counting_client(
    config: kube::Config,
    counts: Arc<RequestCounts>,
) -> Result<kube::Client, kube::Error> {
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder.with_layer(&CountRequests(counts)).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_requests() {
        let counts = RequestCounts::default();
        counts.record(&Method::GET, Some("watch=true&resourceVersion=5"));
        counts.record(&Method::GET, Some("labelSelector=a%3Db"));
        counts.record(&Method::GET, None);
        counts.record(
            &Method::PATCH,
            Some("fieldManager=canary-operator&force=true"),
        );
        counts.record(&Method::DELETE, None);
        counts.record(&Method::POST, None);
        assert_eq!(
            (counts.watches(), counts.reads(), counts.writes()),
            (1, 2, 3)
        );
    }
}
