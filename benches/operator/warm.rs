//! The operator restarted with everything in place; then a quiet spell at N (nothing may be
//! written); then the edit people actually make: one after minutes of quiet.

use std::time::Duration;

use serde::Serialize;

use crate::figures::{ApiRequests, Distribution, MemoryMib, Requests};
use crate::latency::Summary;
use crate::{Bench, api_snapshot, poll, say, settle};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Restart {
    pub ready_seconds: Option<f64>,
    /// Until the operator has reconciled at least as many times as there are releases.
    pub all_reconciled_seconds: Option<f64>,
    pub settled_seconds: f64,
    pub operator_requests: Requests,
    pub apiserver: ApiRequests,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Steady {
    pub seconds: u64,
    pub operator_requests: Requests,
    pub cpu_seconds: f64,
    pub apiserver: ApiRequests,
    pub memory: MemoryMib,
}

/// Edits each made after a quiet spell of `quiet_seconds` in which nothing was sent.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Quiet {
    pub quiet_seconds: u64,
    /// Each edit's latency (PATCH response to VirtualService event), ms; None if it timed out.
    pub edits_ms: Vec<Option<f64>>,
    /// The floor patch sent right after each edit, ms.
    pub floor_ms: Vec<Option<f64>>,
    pub ms: Distribution,
    /// The slowest quiet edit over the p99 of the edits with N resident (no quiet spells).
    pub slowest_over_loaded_p99: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Warm {
    pub restart: Restart,
    pub steady: Steady,
    pub quiet: Quiet,
}

pub async fn run(bench: &mut Bench, loaded: &Summary) -> Warm {
    let total = bench.settings.releases + 1;
    let timeout = bench.settings.timeout();
    say("restarting the operator with everything in place");
    let api_before = api_snapshot(&bench.client).await;
    let operator = bench.start_operator("operator-warm.log");
    let mut ready_seconds = None;
    let all_reconciled_seconds = poll(timeout, async || {
        let elapsed = operator.started.elapsed().as_secs_f64();
        if ready_seconds.is_none() && operator.ready().await {
            ready_seconds = Some(elapsed);
        }
        let counters = operator.counters().await?;
        (counters.reconciles >= total as f64).then_some(elapsed)
    })
    .await;
    let (counters, last_work) = settle(&operator, Duration::from_secs(3), timeout).await;
    let restart = Restart {
        ready_seconds,
        all_reconciled_seconds,
        settled_seconds: last_work.as_secs_f64(),
        operator_requests: counters.into(),
        apiserver: ApiRequests::from(&api_snapshot(&bench.client).await.since(&api_before)),
    };

    let seconds = bench.settings.steady_seconds;
    say(format!("steady state: {seconds} s with no changes"));
    let counters_before = operator.counters().await.unwrap_or_default();
    let cpu_before = operator.cpu_seconds(bench.ticks).unwrap_or_default();
    let api_before = api_snapshot(&bench.client).await;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let steady = Steady {
        seconds,
        operator_requests: operator
            .counters()
            .await
            .unwrap_or_default()
            .since(&counters_before)
            .into(),
        cpu_seconds: operator.cpu_seconds(bench.ticks).unwrap_or_default() - cpu_before,
        apiserver: ApiRequests::from(&api_snapshot(&bench.client).await.since(&api_before)),
        memory: operator.memory().unwrap_or_default().into(),
    };

    let spells = bench.settings.quiet_edits;
    let quiet_seconds = bench.settings.quiet_seconds;
    let mut shifter = bench.shifter(2 * bench.settings.weight_shift_edits).await;
    let mut quiet = Quiet {
        quiet_seconds,
        ..Quiet::default()
    };
    for spell in 1..=spells {
        // The steady state was quiet too: the first spell only needs what it lacks.
        let wait = if spell == 1 {
            quiet_seconds.saturating_sub(seconds)
        } else {
            quiet_seconds
        };
        say(format!(
            "edit {spell}/{spells} after {quiet_seconds} s of quiet"
        ));
        tokio::time::sleep(Duration::from_secs(wait)).await;
        quiet.edits_ms.push(shifter.edit().await.ms);
        quiet.floor_ms.push(shifter.floor().await);
    }
    operator.stop();
    let samples: Vec<f64> = quiet.edits_ms.iter().flatten().copied().collect();
    quiet.ms = Distribution::of(&samples);
    quiet.slowest_over_loaded_p99 =
        (loaded.ms.samples > 0 && quiet.ms.samples > 0).then(|| quiet.ms.max / loaded.ms.p99);
    Warm {
        restart,
        steady,
        quiet,
    }
}
