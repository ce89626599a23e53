//! The operator with nothing to do (memory at idle), then weight-shift latency with one release.

use std::time::Duration;

use serde::Serialize;

use crate::figures::MemoryMib;
use crate::{Bench, LATENCY_NS, LATENCY_RELEASE, ShiftRun, cluster, poll, say};

#[derive(Clone, Debug, Default, Serialize)]
pub struct OneRelease {
    /// From the process's start to `/readyz` answering 200, with no releases.
    pub ready_seconds: Option<f64>,
    pub memory_idle: MemoryMib,
    pub shifts: ShiftRun,
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
    say(format!(
        "{} weight shifts and floor patches, one release",
        bench.settings.weight_shift_edits
    ));
    let shifts = bench.shifts(&operator, 0).await;
    let memory_after_shifts = operator.memory().unwrap_or_default().into();
    operator.stop();
    OneRelease {
        ready_seconds,
        memory_idle,
        shifts,
        memory_after_shifts,
    }
}
