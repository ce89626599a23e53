//! The table's sections, one function each: weight shifts, cold convergence, a warm restart,
//! the steady state, memory, rolling releases.

use super::table::{Table, opt, percentiles, ratio};
use super::{Phases, Report};
use crate::Settings;
use crate::latency::Summary;
use crate::rolling::Rolling;

/// The weight-shift rows of one run of edits.
fn shift_rows(table: &mut Table, label: &str, s: &Summary, p99_goal: Option<(&str, f64)>) {
    table.row(
        &format!("{label}: p50 / p95 / p99 / max"),
        percentiles(&s.ms),
        p99_goal.map(|(text, limit)| {
            (
                text,
                s.ms.samples > 0 && s.ms.p99 <= limit && s.timed_out == 0,
            )
        }),
    );
    if s.gateway_ms.samples + s.gateway_timed_out > 0 {
        table.row(
            &format!(
                "{label}, to the gateway (edit -> route pushed by istiod): p50 / p95 / p99 / max"
            ),
            percentiles(&s.gateway_ms),
            None,
        );
    }
    table.row(
        &format!("{label}, floor (direct VirtualService patch -> event)"),
        percentiles(&s.floor_ms),
        None,
    );
    let met = s.ratio_p50.is_some_and(|r| r <= 1.5) && s.ratio_p99.is_some_and(|r| r <= 2.0);
    table.row(
        &format!("{label}, weight shift / floor: p50 / p99"),
        format!("{} / {}", ratio(s.ratio_p50), ratio(s.ratio_p99)),
        Some(("p50 <= 1.5, p99 <= 2", met)),
    );
    if s.timed_out + s.floor_timed_out + s.gateway_timed_out > 0 {
        table.row(
            &format!("{label}: edits / floor patches / gateway pushes not seen within 30 s"),
            format!(
                "{} / {} / {}",
                s.timed_out, s.floor_timed_out, s.gateway_timed_out
            ),
            None,
        );
    }
}

/// The table printed at the end of a run, with each goal checked.
pub fn table(report: &Report) -> Table {
    let mut table = Table::default();
    if let Some(phases) = &report.phases {
        let s = &report.settings;
        weight_shift(&mut table, s, phases);
        cold_convergence(&mut table, s, phases);
        warm_restart(&mut table, s, phases);
        steady_state(&mut table, s, phases);
        memory(&mut table, s, phases);
    }
    rolling(&mut table, &report.rolling);
    table
}

fn weight_shift(table: &mut Table, settings: &Settings, report: &Phases) {
    let s = settings;
    let n = s.releases;
    let at_10000 = n >= 10_000;
    let (one, loaded, warm) = (&report.one_release, &report.with_n_resident, &report.warm);
    table.section(format!(
        "Weight shift: {} edits, one at a time, PATCH response -> VirtualService event",
        s.weight_shift_edits
    ));
    shift_rows(
        table,
        "1 release",
        &one.shifts.shifts,
        Some(("p99 <= 100 ms", 100.0)),
    );
    shift_rows(
        table,
        &format!("{n} releases resident"),
        &loaded.shifts,
        at_10000.then_some(("p99 <= 50 ms at 10,000", 50.0)),
    );
    let quiet = &warm.quiet;
    table.row(
        &format!(
            "{} edits, each after {} s of quiet ({} resident): ms each",
            quiet.edits_ms.len(),
            quiet.quiet_seconds,
            n + 1
        ),
        quiet
            .edits_ms
            .iter()
            .map(|v| v.map_or("timed out".to_owned(), |v| format!("{v:.1}")))
            .collect::<Vec<_>>()
            .join(" / "),
        (!quiet.edits_ms.is_empty()).then(|| {
            (
                "each <= p99 with N resident",
                quiet.ms.samples == quiet.edits_ms.len()
                    && quiet.slowest_over_loaded_p99.is_some_and(|r| r <= 1.0),
            )
        }),
    );
    table.row(
        "the floor patch right after each of them: ms each",
        quiet
            .floor_ms
            .iter()
            .map(|v| v.map_or("timed out".to_owned(), |v| format!("{v:.1}")))
            .collect::<Vec<_>>()
            .join(" / "),
        None,
    );
    table.row(
        "operator writes per edit (1 release / N resident)",
        format!(
            "{:.2} / {:.2}",
            one.shifts.operator_requests.writes / s.weight_shift_edits.max(1) as f64,
            loaded.operator_requests.writes / s.weight_shift_edits.max(1) as f64
        ),
        None,
    );
}

fn cold_convergence(table: &mut Table, settings: &Settings, report: &Phases) {
    let n = settings.releases;
    let at_1000 = n == 1000;
    let cold = &report.cold;
    let plain = &report.plain_writer_children;
    let ceiling = &report.trivial_writer_ceiling;
    table.section(format!(
        "Cold convergence: {n} releases created while stopped, then the operator started"
    ));
    table.row(
        "all converged (children + observedGeneration)",
        opt(cold.converged_seconds, "s"),
        at_1000.then(|| {
            (
                "<= 45 s at 1,000",
                cold.converged_seconds.is_some_and(|s| s <= 45.0),
            )
        }),
    );
    table.row(
        "caches synced (/readyz) / first release converged",
        format!(
            "{} / {}",
            opt(cold.ready_seconds, "s"),
            opt(cold.first_converged_seconds, "s")
        ),
        None,
    );
    table.row(
        "releases/s",
        cold.releases_per_s
            .map_or("-".into(), |r| format!("{r:.1}")),
        None,
    );
    table.row(
        "operator requests: writes / reads / writes per s",
        format!(
            "{:.0} / {:.0} / {}",
            cold.operator_requests.writes,
            cold.operator_requests.reads,
            cold.operator_writes_per_s
                .map_or("-".into(), |r| format!("{r:.0}"))
        ),
        None,
    );
    table.row(
        "failed reconciles (retried with backoff)",
        format!("{:.0}", cold.operator_requests.failed_reconciles),
        None,
    );
    table.row(
        "apiserver writes: operator's kinds / CR+Istio kinds",
        format!(
            "{} / {}",
            cold.apiserver.operator_kind_writes, cold.apiserver.exclusive_kind_writes
        ),
        None,
    );
    table.row(
        &format!(
            "the same children by a plain writer ({} releases at once; no reads, cache waits or status)",
            plain.writer.workers
        ),
        format!(
            "{:.1} s ({:.0} writes/s)",
            plain.writer.seconds, plain.writer.writes_per_s
        ),
        None,
    );
    let over_plain = cold
        .converged_seconds
        .map(|s| s / plain.writer.seconds.max(1e-9));
    table.row(
        "operator / plain writer",
        ratio(over_plain),
        at_1000.then(|| ("<= 1.15 at 1,000", over_plain.is_some_and(|r| r <= 1.15))),
    );
    table.row(
        &format!(
            "trivial writer ceiling: {} writers (as the operator) / {} writers",
            ceiling.same_concurrency.workers, ceiling.one_writer_per_release.workers
        ),
        format!(
            "{:.0} / {:.0} writes/s",
            ceiling.same_concurrency.writes_per_s, ceiling.one_writer_per_release.writes_per_s
        ),
        None,
    );
    table.row(
        "operator write rate vs ceiling",
        cold.operator_writes_per_s.map_or("-".into(), |r| {
            format!(
                "{:.0}%",
                100.0 * r / ceiling.same_concurrency.writes_per_s.max(1e-9)
            )
        }),
        None,
    );
    // The control plane's own work in each window (ReplicaSets, pods, endpoints, status): the
    // longer a window, the more of it falls inside and competes for the same cores.
    table.row(
        "apiserver writes by every client in the window: plain writer / operator (pods created)",
        format!(
            "{} ({}) / {} ({})",
            plain.apiserver.all_writes,
            plain.apiserver.pods_created,
            cold.apiserver.all_writes,
            cold.apiserver.pods_created
        ),
        None,
    );
    table.row(
        "plain writer: CPU s by process / machine busy / available",
        format!("{}; {}", plain.cpu.by_process, plain.cpu.busy),
        None,
    );
    table.row(
        "CPU s until converged, by process",
        cold.cpu_until_converged.by_process.clone(),
        None,
    );
    table.row(
        "CPU s until converged: machine busy / available",
        cold.cpu_until_converged.busy.clone(),
        None,
    );
    table.row("all Ready", opt(cold.all_ready_seconds, "s"), None);
    table.row(
        "after settling: operator writes / reads (last work at)",
        format!(
            "{:.0} / {:.0} ({:.1} s)",
            cold.operator_requests_settled.writes,
            cold.operator_requests_settled.reads,
            cold.settled_seconds
        ),
        None,
    );
}

fn warm_restart(table: &mut Table, settings: &Settings, report: &Phases) {
    let warm = &report.warm;
    let total = settings.releases + 1;
    let restart = &warm.restart;
    table.section(format!("Warm restart: {total} releases in place"));
    table.row(
        "caches synced (/readyz)",
        opt(restart.ready_seconds, "s"),
        None,
    );
    table.row(
        "all reconciled (reconciles >= releases)",
        opt(restart.all_reconciled_seconds, "s"),
        None,
    );
    table.row(
        "operator writes",
        format!("{:.0}", restart.operator_requests.writes),
        Some(("0", restart.operator_requests.writes == 0.0)),
    );
    table.row(
        "operator reads / reconciles",
        format!(
            "{:.0} / {:.0}",
            restart.operator_requests.reads, restart.operator_requests.reconciles
        ),
        None,
    );
    table.row(
        "apiserver writes: operator's kinds / CR+Istio kinds",
        format!(
            "{} / {}",
            restart.apiserver.operator_kind_writes, restart.apiserver.exclusive_kind_writes
        ),
        None,
    );
}

fn steady_state(table: &mut Table, settings: &Settings, report: &Phases) {
    let total = settings.releases + 1;
    let steady = &report.warm.steady;
    table.section(format!(
        "Steady state: {} s, no changes, {total} releases",
        steady.seconds
    ));
    table.row(
        "operator writes",
        format!("{:.0}", steady.operator_requests.writes),
        Some(("0", steady.operator_requests.writes == 0.0)),
    );
    table.row(
        "operator reads (GET/LIST) / reconciles",
        format!(
            "{:.0} / {:.0}",
            steady.operator_requests.reads, steady.operator_requests.reconciles
        ),
        None,
    );
    table.row("operator CPU", format!("{:.2} s", steady.cpu_seconds), None);
    table.row(
        "apiserver writes: operator's kinds / CR+Istio kinds",
        format!(
            "{} / {}",
            steady.apiserver.operator_kind_writes, steady.apiserver.exclusive_kind_writes
        ),
        None,
    );
    table.row(
        "apiserver GET/LIST of operator's kinds (all clients)",
        steady.apiserver.operator_kind_reads.to_string(),
        None,
    );
}

fn memory(table: &mut Table, settings: &Settings, report: &Phases) {
    let n = settings.releases;
    let total = n + 1;
    let (at_1000, at_10000) = (n == 1000, n >= 10_000);
    let (one, cold, steady) = (&report.one_release, &report.cold, &report.warm.steady);
    table.section("Operator memory (RSS)");
    table.row(
        "idle, 0 releases",
        one.memory_idle.text(),
        Some(("<= 12 MiB", one.memory_idle.rss <= 12.0)),
    );
    let memory_goal = |mib: f64| {
        if at_1000 {
            Some(("<= 32 MiB at 1,000", mib <= 32.0))
        } else if at_10000 {
            Some(("<= 96 MiB at 10,000", mib <= 96.0))
        } else {
            None
        }
    };
    table.row(
        &format!("{total} releases, steady (after warm restart)"),
        steady.memory.text(),
        memory_goal(steady.memory.rss),
    );
    table.row(
        &format!("{total} releases, peak (warm restart)"),
        format!("{:.1} MiB", steady.memory.peak_rss),
        memory_goal(steady.memory.peak_rss),
    );
    table.row(
        &format!("{total} releases, peak (cold convergence, weight shifts)"),
        format!("{:.1} MiB", cold.memory_end.peak_rss),
        memory_goal(cold.memory_end.peak_rss),
    );
}

fn rolling(table: &mut Table, r: &Rolling) {
    table.section(format!(
        "{} resident, {} rolling: {} checks ({} compared with stable) every {} s, {:.0} s window",
        r.releases, r.rolling, r.checks, r.compared_to_stable, r.interval_seconds, r.window_seconds
    ));
    if let Some(why) = &r.skipped {
        table.row("skipped", why.clone(), None);
        return;
    }
    if let Some(p) = &r.prepared {
        table.row(
            &format!(
                "(BENCH_ONLY=rolling) {} releases created / converged / Ready",
                r.releases
            ),
            format!(
                "{:.1} s / {} / {}",
                p.create_seconds,
                opt(p.converged_seconds, "s"),
                opt(p.all_ready_seconds, "s")
            ),
            None,
        );
    }
    table.row(
        "all rolling: Progressing, weight applied, measured (from start)",
        match r.all_measuring_seconds {
            Some(s) => format!("{s:.1} s"),
            None => format!("not reached ({}/{})", r.measuring, r.rolling),
        },
        None,
    );
    table.row(
        "before the window: operator writes / measurements per release and check",
        format!(
            "{:.0} / {:.2}",
            r.before_window.operator_writes, r.before_window.measurements_per_release_and_check
        ),
        None,
    );
    table.row(
        "operator CPU",
        format!(
            "{:.2} s ({:.1}% of a core)",
            r.operator_cpu_seconds, r.operator_cpu_percent_of_core
        ),
        None,
    );
    let failed = r
        .operator_queries_by_outcome
        .get("failed")
        .copied()
        .unwrap_or(0.0);
    let queries_goal = format!(
        "<= {:.1}/s ({} x {} / {} s; {:.1} with the window's edges)",
        r.expected_queries_per_s,
        r.checks + r.compared_to_stable,
        r.rolling,
        r.interval_seconds,
        r.queries_per_s_limit
    );
    table.row(
        "Prometheus queries/s: Prometheus's count / the operator's (failed)",
        format!(
            "{} / {:.2} ({failed:.0})",
            r.prometheus_queries_per_s
                .map_or("-".to_owned(), |q| format!("{q:.2}")),
            r.operator_queries_per_s
        ),
        Some((
            &queries_goal,
            r.prometheus_queries_per_s
                .is_some_and(|q| q <= r.queries_per_s_limit)
                && r.operator_queries_per_s <= r.queries_per_s_limit,
        )),
    );
    let writes_goal = format!(
        "<= {:.0}/min (60 / {} s x {}; {:.0} with the window's edges)",
        r.expected_writes_per_min, r.interval_seconds, r.rolling, r.writes_per_min_limit
    );
    table.row(
        "operator writes/min (its count) / reads in the window",
        format!(
            "{:.1} / {:.0}",
            r.operator_writes_per_min, r.operator_requests.reads
        ),
        Some((
            &writes_goal,
            r.operator_writes_per_min <= r.writes_per_min_limit,
        )),
    );
    table.row(
        "status writes/min (apiserver's canaryreleases/status) / expected",
        format!(
            "{:.1} / {:.0}",
            r.status_writes_per_min, r.expected_writes_per_min
        ),
        None,
    );
    table.row(
        "apiserver writes in the window: operator's kinds / CR+Istio kinds",
        format!(
            "{} / {}",
            r.apiserver.operator_kind_writes, r.apiserver.exclusive_kind_writes
        ),
        None,
    );
    let verdicts = r
        .measurements
        .iter()
        .filter(|(_, n)| **n > 0.0)
        .map(|(verdict, n)| format!("{verdict} {n:.0}"))
        .collect::<Vec<_>>()
        .join(", ");
    table.row(
        "check measurements by verdict / expected",
        format!(
            "{} / {:.0}",
            if verdicts.is_empty() {
                "none"
            } else {
                &verdicts
            },
            r.expected_measurements
        ),
        None,
    );
    let phases = r
        .phases_at_end
        .iter()
        .filter(|(_, n)| **n > 0.0)
        .map(|(phase, n)| format!("{phase} {n:.0}"))
        .collect::<Vec<_>>()
        .join(", ");
    table.row(
        "rollout phases at the end (canary_operator_rollout_phase)",
        if phases.is_empty() {
            "none".to_owned()
        } else {
            phases
        },
        None,
    );
    table.row("operator memory at the end", r.memory.text(), None);
    table.row(
        "CPU s in the window, by process",
        r.cpu.by_process.clone(),
        None,
    );
    table.row(
        "CPU s in the window: machine busy / available",
        r.cpu.busy.clone(),
        None,
    );
}
