//! The operator with nothing to do (memory at idle), then weight-shift latency with one release.

use std::time::Duration;

use serde::Serialize;

use crate::figures::{ApiRequests, MemoryMib, Requests};
use crate::latency::{Shifter, Summary};
use crate::{Bench, LATENCY_NS, LATENCY_RELEASE, api_snapshot, cluster, poll, say};

#[derive(Clone, Debug, Default, Serialize)]
pub struct OneRelease {
    /// From the process's start to `/readyz` answering 200, with no releases.
    pub ready_seconds: Option<f64>,
    pub memory_idle: MemoryMib,
    pub shifts: Summary,
    pub operator_requests: Requests,
    pub apiserver: ApiRequests,
    pub memory_after_shifts: MemoryMib,
}

pub async fn run(bench: &mut Bench) -> OneRelease {
    say("starting the operator with no releases");
    let operator = bench.start_operator("operator-idle.log");
    let ready_seconds = poll(Duration::from_secs(60), async || {
        operator
            .ready()
            .await
            .then(|| operator.started.elapsed().as_secs_f64())
    })
    .await;
    // A few seconds for start-up allocations to settle into what the process keeps.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let memory_idle = operator.memory().unwrap_or_default().into();

    cluster::apply_releases(
        &bench.client,
        vec![cluster::release(&bench.lab, LATENCY_NS, LATENCY_RELEASE)],
        1,
    )
    .await;
    let only = [LATENCY_NS.to_owned()].into();
    let in_place = poll(bench.settings.timeout(), async || {
        (bench.observer.progress(&only).converged == 1).then_some(())
    })
    .await;
    if in_place.is_none() {
        say("warning: the weight-shift release did not converge; latency figures will be timeouts");
    }
    let edits = bench.settings.weight_shift_edits;
    say(format!(
        "{edits} weight shifts and floor patches, one release"
    ));
    let mut shifter = Shifter::start(
        &bench.client,
        LATENCY_NS,
        LATENCY_RELEASE,
        bench.versions(),
        0,
    )
    .await;
    let counters = operator.counters().await.unwrap_or_default();
    let api = api_snapshot(&bench.client).await;
    let shifts = shifter.run(edits).await;
    let operator_requests = operator
        .counters()
        .await
        .unwrap_or_default()
        .since(&counters)
        .into();
    let apiserver = ApiRequests::from(&api_snapshot(&bench.client).await.since(&api));
    let memory_after_shifts = operator.memory().unwrap_or_default().into();
    operator.stop();
    OneRelease {
        ready_seconds,
        memory_idle,
        shifts: shifts.summary(),
        operator_requests,
        apiserver,
        memory_after_shifts,
    }
}
