//! Whether the operator's view of the cluster is current: the state of each watch, what `/readyz`
//! reports, and the signal to look at every release again once a broken watch works again.
//!
//! A watch breaks when the apiserver or etcd restarts, when a CRD is deleted, or when RBAC stops
//! allowing it. While one is broken the caches it feeds are frozen: the operator cannot see edits
//! and must not say it is ready. Each watch retries on its own with a short, capped backoff
//! ([`WatchBackoff`]); an error never pauses the other watches.
//!
//! A broken watch counts as working again as soon as the apiserver answers one of its list or
//! watch requests with a success ([`ObserveLists`], below the client): a watch that resumes
//! without anything having changed yields no event, so events alone could not tell.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher;
use tokio::sync::watch;
use tower::{Layer, Service};

/// Why a watch is not working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The API is not served: its CRD is not installed (or was deleted).
    Missing,
    /// RBAC does not allow the watch.
    Forbidden,
    /// The apiserver cannot be reached or answered with an error; retried.
    Unreachable,
}

#[derive(Debug)]
struct Broken {
    since: Instant,
    fault: Fault,
    message: String,
}

#[derive(Debug)]
struct Watch {
    /// For people: "canaryreleases.canary.dev in namespace apps".
    what: String,
    /// What to do when the API is not served (how to install its CRD).
    hint: Option<String>,
    broken: Option<Broken>,
}

/// The state of every watch of the process, shared by the controllers (which report errors), the
/// client (which reports successes) and `/readyz`.
#[derive(Debug)]
pub struct Readiness {
    /// By the URL path the watch lists and watches (`/api/v1/namespaces/x/configmaps`).
    watches: Mutex<BTreeMap<String, Watch>>,
    /// Set once every cache has completed its first list.
    started: AtomicBool,
    /// Bumped each time the last broken watch works again.
    recovered: watch::Sender<u64>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            watches: Mutex::default(),
            started: AtomicBool::new(false),
            recovered: watch::Sender::new(0),
        }
    }
}

impl Readiness {
    /// Adds a watch: `path` as in its requests; `what` names it and `hint` says how to install its
    /// CRD, for messages.
    pub fn register(&self, path: String, what: String, hint: Option<String>) {
        self.lock().insert(
            path,
            Watch {
                what,
                hint,
                broken: None,
            },
        );
    }

    /// Every cache has listed once (and, until it does, the process is not ready).
    pub fn set_started(&self, started: bool) {
        self.started.store(started, Ordering::Relaxed);
    }

    /// Records an error of the watch at `path`. The first error of an outage is logged at warn
    /// (error for a missing or forbidden API: someone must act); repeats only at debug.
    pub fn failed(&self, path: &str, error: &watcher::Error) {
        let Some(fault) = classify(error) else {
            // 410 Gone: the watch fell behind (after an apiserver or etcd restart, typically);
            // the watcher lists again at once, which is not an outage.
            tracing::debug!(path, %error, "watch expired; listing again");
            return;
        };
        let mut watches = self.lock();
        let Some(watch) = watches.get_mut(path) else {
            return;
        };
        let message = describe(&fault, watch, error);
        match &mut watch.broken {
            Some(broken) if broken.fault == fault => {
                tracing::debug!(watch = %watch.what, %error, "watch still failing");
                broken.message = message;
            }
            broken => {
                match fault {
                    Fault::Unreachable => tracing::warn!(watch = %watch.what, "{message}"),
                    Fault::Missing | Fault::Forbidden => {
                        tracing::error!(watch = %watch.what, "{message}")
                    }
                }
                let since = broken.as_ref().map_or_else(Instant::now, |b| b.since);
                *broken = Some(Broken {
                    since,
                    fault,
                    message,
                });
            }
        }
    }

    /// Records that the apiserver answered the watch at `path` (or that it delivered an event).
    pub fn succeeded(&self, path: &str) {
        let mut watches = self.lock();
        let Some(broken) = watches.get_mut(path).and_then(|w| w.broken.take()) else {
            return;
        };
        if let Some(watch) = watches.get(path) {
            tracing::info!(
                watch = %watch.what,
                after_ms = broken.since.elapsed().as_millis() as u64,
                "watch works again"
            );
        }
        if watches.values().all(|w| w.broken.is_none()) {
            self.recovered.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Whether `path` is one of the watched paths.
    pub fn watches(&self, path: &str) -> bool {
        self.lock().contains_key(path)
    }

    /// `Ok` when ready; otherwise why not, one line per problem.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems: Vec<String> = self
            .lock()
            .values()
            .filter_map(|w| {
                let broken = w.broken.as_ref()?;
                Some(format!(
                    "{} (for {:.0} s)",
                    broken.message,
                    broken.since.elapsed().as_secs_f64()
                ))
            })
            .collect();
        if !self.started.load(Ordering::Relaxed) {
            problems.push("caches not synced yet".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Fires each time every watch works again after at least one was broken.
    pub fn recoveries(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.recovered.subscribe(), |mut receiver| async move {
            receiver.changed().await.ok()?;
            Some(((), receiver))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Watch>> {
        self.watches.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The HTTP status of a failed request inside a watcher error, if it got that far.
fn status_of(error: &watcher::Error) -> Option<u16> {
    let source = match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        watcher::Error::WatchError(status) => return Some(status.code),
        _ => return None,
    };
    match source {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn classify(error: &watcher::Error) -> Option<Fault> {
    match status_of(error) {
        Some(410) => None,
        Some(404) => Some(Fault::Missing),
        Some(403) => Some(Fault::Forbidden),
        _ => Some(Fault::Unreachable),
    }
}

fn describe(fault: &Fault, watch: &Watch, error: &watcher::Error) -> String {
    let what = &watch.what;
    match fault {
        Fault::Missing => {
            let hint = watch
                .hint
                .as_deref()
                .map(|h| format!(": {h}"))
                .unwrap_or_default();
            format!(
                "the API of {what} is not served (its CRD is not installed, or was deleted); not ready until it is back{hint}"
            )
        }
        Fault::Forbidden => format!(
            "RBAC forbids list and watch of {what}; not ready until they are granted to the operator's ServiceAccount (the Helm chart grants them), or run it only for namespaces it may read (--namespace, the chart's watchNamespaces)"
        ),
        Fault::Unreachable => format!("the watch of {what} is broken, retrying: {error}"),
    }
}

/// Tower layer below the client: a successful list or watch request on a registered path marks
/// that watch as working.
#[derive(Clone, Debug)]
pub struct ObserveLists(pub Arc<Readiness>);

impl<S> Layer<S> for ObserveLists {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            readiness: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Observed<S> {
    inner: S,
    readiness: Arc<Readiness>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<Request<B>> for Observed<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = (request.method() == Method::GET)
            .then(|| request.uri().path())
            .filter(|path| self.readiness.watches(path))
            .map(str::to_owned);
        let response = self.inner.call(request);
        let readiness = self.readiness.clone();
        Box::pin(async move {
            let response = response.await;
            if let (Some(path), Ok(ok)) = (path, &response)
                && ok.status().is_success()
            {
                readiness.succeeded(&path);
            }
            response
        })
    }
}

/// Backoff of one watch's retries: 250 ms, 500 ms, then every second, each with up to a quarter
/// added at random so that watches do not retry in lockstep.
///
/// kube's default (800 ms doubling to 30 s, reset only by an event or after 120 s) let one
/// apiserver restart of 20 s delay a watch by up to half a minute after the apiserver was back.
/// A watch retry is one cheap request, so the cap is short: right after a restart the apiserver
/// answers 503 for custom resources for a moment longer than for built-in ones, and each retry
/// that meets it costs the cap again before the watch (and then its list) can resume.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(1);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(delay + delay.mul_f64(jitter() / 4.0))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// A number in [0, 1): randomly seeded per call, which is all a jitter needs.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    let bits = RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16) -> watcher::Error {
        watcher::Error::WatchFailed(kube::Error::Api(Box::new(Status {
            code,
            message: format!("code {code}"),
            ..Status::default()
        })))
    }

    #[test]
    fn backoff_is_short_and_capped() {
        let delays: Vec<Duration> = WatchBackoff::default().take(8).collect();
        for (delay, base) in delays
            .iter()
            .zip([250, 500, 1000, 1000, 1000, 1000, 1000, 1000])
        {
            let base = Duration::from_millis(base);
            assert!(
                *delay >= base && *delay <= base + base / 4,
                "{delay:?} around {base:?}"
            );
        }
        let mut backoff = WatchBackoff::default();
        backoff.nth(5);
        backoff.reset();
        assert!(
            backoff
                .next()
                .is_some_and(|d| d < Duration::from_millis(320))
        );
    }

    #[test]
    fn a_broken_watch_makes_the_process_unready_until_it_works_again() {
        let readiness = Readiness::default();
        readiness.register("/a".into(), "configmaps".into(), None);
        readiness.register(
            "/b".into(),
            "canaryreleases.canary.dev".into(),
            Some("install it".into()),
        );
        assert!(readiness.check().is_err(), "not started yet");
        readiness.set_started(true);
        assert_eq!(readiness.check(), Ok(()));

        // Cases: the error, whether it makes the process unready, and a fragment of the message.
        let cases: [(watcher::Error, bool, &str); 4] = [
            (api_error(410), false, ""),
            (
                api_error(404),
                true,
                "is not served (its CRD is not installed",
            ),
            (api_error(403), true, "RBAC forbids"),
            (api_error(503), true, "is broken, retrying"),
        ];
        for (error, unready, fragment) in cases {
            readiness.failed("/b", &error);
            match readiness.check() {
                Ok(()) => assert!(!unready, "{error} left it ready"),
                Err(problems) => {
                    assert!(unready, "{error} made it unready: {problems:?}");
                    assert!(problems[0].contains(fragment), "{problems:?}");
                    if fragment.contains("CRD") {
                        assert!(problems[0].contains("install it"), "{problems:?}");
                    }
                }
            }
            readiness.succeeded("/b");
            assert_eq!(readiness.check(), Ok(()));
        }
    }

    #[test]
    fn recovery_fires_only_when_the_last_broken_watch_works() {
        let readiness = Readiness::default();
        readiness.register("/a".into(), "a".into(), None);
        readiness.register("/b".into(), "b".into(), None);
        let mut recovered = readiness.recovered.subscribe();
        readiness.failed("/a", &api_error(500));
        readiness.failed("/b", &api_error(500));
        readiness.succeeded("/a");
        assert!(
            !recovered.has_changed().unwrap_or(true),
            "b is still broken"
        );
        readiness.succeeded("/b");
        assert!(recovered.has_changed().unwrap_or(false));
        // A success on a watch that was never broken is not a recovery.
        recovered.mark_unchanged();
        readiness.succeeded("/a");
        assert!(!recovered.has_changed().unwrap_or(true));
    }
}
