//! What cold convergence is compared with: the apiserver's write ceiling for a trivial writer,
//! and the children of N releases applied by a plain writer, both measured while nothing else
//! runs and through a client built as the operator builds its own (one HTTP/2 connection).

use serde::Serialize;

use crate::figures::{ApiRequests, Cpu};
use crate::process::CpuSpan;
use crate::{Bench, api_snapshot, cluster, say};

/// The writers run as many requests at once as the operator runs reconciles.
pub const CONCURRENCY: usize = canary_operator::controller::CONCURRENT_RECONCILES as usize;

/// Writes per release when it is created: its children (two ConfigMaps and Deployments, a Service,
/// DestinationRule, Gateway and VirtualService, and two HPAs unless light) and one status.
pub fn writes_per_release(light: bool) -> usize {
    if light { 9 } else { 11 }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Writer {
    pub workers: usize,
    pub writes: u64,
    pub failed: u64,
    pub seconds: f64,
    pub writes_per_s: f64,
}

impl Writer {
    fn of(workers: usize, (writes, failed, seconds): (u64, u64, f64)) -> Writer {
        Writer {
            workers,
            writes,
            failed,
            seconds,
            writes_per_s: writes as f64 / seconds.max(1e-9),
        }
    }
}

/// Server-side applies of new, tiny ConfigMaps.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ceiling {
    pub same_concurrency: Writer,
    pub one_writer_per_release: Writer,
}

/// The operator's writes without the operator.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Plain {
    pub releases: usize,
    pub writer: Writer,
    pub cpu: Cpu,
    pub apiserver: ApiRequests,
}

/// As many writes as the operator sends for N releases (capped, so that N=10,000 does not leave
/// 110,000 ConfigMaps to delete), once with the operator's concurrency and once with one writer
/// per release, to show what a connection per request costs.
pub async fn trivial(bench: &Bench) -> Ceiling {
    let n = bench.settings.releases;
    let namespace = "bench-ceiling";
    cluster::namespace(&bench.client, namespace).await;
    let total = (writes_per_release(bench.settings.light) * n).min(11_000);
    let per_worker = total.div_ceil(CONCURRENCY);
    say(format!(
        "trivial writer: {CONCURRENCY} workers x {per_worker} server-side applies of new ConfigMaps"
    ));
    let same =
        cluster::write_ceiling(&bench.writer, namespace, "same", CONCURRENCY, per_worker).await;
    let wide_per_worker = (total / n).max(1);
    say(format!(
        "trivial writer: {n} workers x {wide_per_worker} applies"
    ));
    let wide = cluster::write_ceiling(&bench.writer, namespace, "wide", n, wide_per_worker).await;
    // Thousands of ConfigMaps would otherwise sit in every watch cache for the rest of the run.
    cluster::delete_namespace(&bench.client, namespace, bench.settings.timeout()).await;
    Ceiling {
        same_concurrency: Writer::of(CONCURRENCY, same),
        one_writer_per_release: Writer::of(n, wide),
    }
}

/// The children of N releases applied by a plain writer at the operator's concurrency: no reads,
/// no cache waits, no status. What the apiserver, controller-manager and kwok then do (ReplicaSets,
/// pods, endpoints) is the same as for the operator's writes, so this is about the best cold
/// convergence this machine allows; the CPU split shows what bounds it.
pub async fn plain(bench: &Bench) -> Plain {
    let n = bench.settings.releases;
    let namespaces: Vec<String> = (0..bench.settings.namespaces)
        .map(|k| format!("bench-plain-{k}"))
        .collect();
    for ns in &namespaces {
        cluster::namespace(&bench.client, ns).await;
    }
    say(format!(
        "plain writer: the children of {n} releases, {CONCURRENCY} releases at once"
    ));
    let before = api_snapshot(&bench.client).await;
    let span = CpuSpan::start(bench.ticks);
    let written =
        cluster::write_children(&bench.writer, &bench.template, &namespaces, n, CONCURRENCY).await;
    let cpu = span.finish(&[]);
    let api = api_snapshot(&bench.client).await.since(&before);
    say(format!(
        "plain writer: {} writes ({} failed) in {:.1} s",
        written.0, written.1, written.2
    ));
    futures::future::join_all(
        namespaces
            .iter()
            .map(|ns| cluster::delete_namespace(&bench.client, ns, bench.settings.timeout())),
    )
    .await;
    Plain {
        releases: n,
        writer: Writer::of(CONCURRENCY, written),
        cpu: Cpu::from(&cpu),
        apiserver: ApiRequests::from(&api),
    }
}
