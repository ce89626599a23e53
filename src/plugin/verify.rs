//! `verify`'s verdict: is the observed split consistent with the declared weight?
//!
//! The canary's share among the answers that name either version is tested against the weight
//! with an exact two-sided binomial test at [`ALPHA`], and reported with a Clopper-Pearson interval
//! at the matching confidence. Pure: sampling is in [`super::sample`].

use reqwest::Url;
use serde::Serialize;

use super::sample::{Models, Stop, Tally};
use super::table::{self, percent};
use super::{Error, duration};
use crate::stats::{Binomial, Interval};

/// Significance level of the test; the interval is at confidence `1 - ALPHA`.
pub const ALPHA: f64 = 0.05;

/// The lab's endpoint, used when `--url` names only the host.
pub const DEFAULT_PATH: &str = "/chat";

/// What the split should be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Expectation {
    pub models: Models,
    /// Percent of traffic the canary should get, 0-100.
    pub weight: u8,
    /// Where the expectation came from, for the report ("canaryrelease ns/name", "--expect-weight").
    pub source: String,
}

/// The three answers `verify` can give; each is an exit status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "verdict", content = "reason")]
pub enum Agreement {
    Consistent,
    Inconsistent,
    /// Too little was measured to judge; the text says why.
    Unmeasured(String),
}

impl Agreement {
    pub fn exit_code(&self) -> u8 {
        match self {
            Agreement::Consistent => 0,
            Agreement::Inconsistent => 1,
            Agreement::Unmeasured(_) => 2,
        }
    }
}

/// Everything `verify` found, as printed and as `-o json` emits it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub url: String,
    pub requests: u32,
    pub concurrency: u32,
    pub expectation: Expectation,
    pub tally: Tally,
    /// Canary answers among those naming either version; absent when there were none.
    pub canary_share: Option<f64>,
    pub interval: Option<ReportedInterval>,
    /// Two-sided p-value of the exact binomial test against the expected weight.
    pub p_value: Option<f64>,
    pub alpha: f64,
    #[serde(flatten)]
    pub verdict: Agreement,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportedInterval {
    pub method: &'static str,
    pub level: f64,
    pub low: f64,
    pub high: f64,
}

impl From<Interval> for ReportedInterval {
    fn from(i: Interval) -> Self {
        ReportedInterval {
            method: "clopper-pearson",
            level: 1.0 - ALPHA,
            low: i.low,
            high: i.high,
        }
    }
}

/// The URL to post to: `--url` as given when it has a path, else with the lab's `/chat`; a bare
/// `host:port` is taken as `http://host:port`.
pub fn chat_url(text: &str) -> Result<Url, Error> {
    let bad = |reason: String| Error::BadUrl {
        url: text.to_owned(),
        reason,
    };
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host".into()));
    }
    if url.path().is_empty() || url.path() == "/" {
        url.set_path(DEFAULT_PATH);
    }
    Ok(url)
}

/// Requests allowed to fail (or be answered by another model) out of `requests` at
/// `max_errors_percent`.
pub fn failure_budget(requests: u32, max_errors_percent: u8) -> u32 {
    let budget = u64::from(requests) * u64::from(max_errors_percent.min(100)) / 100;
    u32::try_from(budget).unwrap_or(requests)
}

/// A problem that makes sampling pointless, found before any request is sent.
pub fn precheck(expectation: &Expectation) -> Option<Agreement> {
    let Models { stable, canary } = &expectation.models;
    if stable.eq_ignore_ascii_case(canary) {
        return Some(Agreement::Unmeasured(format!(
            "the stable and canary versions both use model {stable:?}; verify tells the versions \
             apart by the model in each answer, so it cannot measure this split"
        )));
    }
    if expectation.weight > 100 {
        return Some(Agreement::Unmeasured(format!(
            "weight {} is not a percentage",
            expectation.weight
        )));
    }
    None
}

/// Judges a finished sample.
///
/// Failures are not simply left out: a failing canary would fail only its own share of the
/// requests, and the survivors would then under-count it. So a sample with more unusable answers
/// than the budget (`failure_budget`, counting requests never completed) is not judged at all.
pub fn judge(
    url: &Url,
    plan_requests: u32,
    concurrency: u32,
    failure_budget: u32,
    expectation: Expectation,
    tally: Tally,
) -> Report {
    let measured = tally.measured();
    let binomial = Binomial::new(measured);
    let canary_share = (measured > 0).then(|| tally.canary as f64 / measured as f64);
    let interval = (measured > 0).then(|| binomial.clopper_pearson(tally.canary, 1.0 - ALPHA));
    let p_value = (measured > 0)
        .then(|| binomial.p_value(tally.canary, f64::from(expectation.weight) / 100.0));
    let lost = u64::from(plan_requests).saturating_sub(measured);
    let verdict = if let Some(verdict) = precheck(&expectation) {
        verdict
    } else if measured == 0 || lost > u64::from(failure_budget) {
        Agreement::Unmeasured(unmeasured_reason(
            plan_requests,
            &tally,
            &expectation.models,
        ))
    } else if p_value.is_some_and(|p| p >= ALPHA) {
        Agreement::Consistent
    } else {
        Agreement::Inconsistent
    };
    Report {
        url: url.to_string(),
        requests: plan_requests,
        concurrency,
        expectation,
        tally,
        canary_share,
        interval: interval.map(ReportedInterval::from),
        p_value,
        alpha: ALPHA,
        verdict,
    }
}

fn unmeasured_reason(requests: u32, tally: &Tally, models: &Models) -> String {
    let mut parts = Vec::new();
    let failed = tally.failed();
    if failed > 0 {
        parts.push(format!(
            "{failed} of {requests} requests failed ({})",
            top(&tally.failures)
        ));
    }
    let other: u64 = tally.other.values().sum();
    if other > 0 {
        parts.push(format!(
            "{other} answers came from models that are neither stable ({}) nor canary ({}): {}; \
             if the API reports other names than the release's models, pass \
             --stable-model/--canary-model",
            models.stable,
            models.canary,
            top(&tally.other)
        ));
    }
    let unanswered = u64::from(requests).saturating_sub(u64::from(tally.completed));
    match tally.stopped {
        Some(Stop::Deadline) => parts.push(format!(
            "{unanswered} requests had no answer when the --timeout of {} ran out",
            duration::display(tally.elapsed)
        )),
        Some(Stop::TooManyFailures) => parts.push(format!(
            "stopped after {} requests: too many failed to measure the split",
            tally.completed
        )),
        None => {}
    }
    if parts.is_empty() {
        parts.push("no answer named the stable or the canary model".into());
    }
    parts.join("; ")
}

/// The three most frequent keys, as `key ×count`.
fn top(counts: &std::collections::BTreeMap<String, u64>) -> String {
    let mut sorted: Vec<(&String, &u64)> = counts.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut text: Vec<String> = sorted
        .iter()
        .take(3)
        .map(|(key, count)| format!("{key} ×{count}"))
        .collect();
    if sorted.len() > 3 {
        text.push(format!("and {} more", sorted.len() - 3));
    }
    text.join(", ")
}

/// A p-value for people: three decimals, or scientific notation when tiny.
pub fn format_p(p: f64) -> String {
    if p <= 0.0 {
        "< 1e-300".to_owned()
    } else if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}

impl Report {
    /// The report as a person reads it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let t = &self.tally;
        out.push_str(&format!(
            "POST {}: {} of {} requests completed in {} (concurrency {})\n\n",
            self.url,
            t.completed,
            self.requests,
            duration::display(t.elapsed),
            self.concurrency
        ));
        let measured = t.measured();
        let share = |count: u64| {
            if measured > 0 {
                percent(count as f64 / measured as f64)
            } else {
                "-".to_owned()
            }
        };
        let m = &self.expectation.models;
        let mut rows = vec![
            vec![
                m.stable.clone(),
                "stable".into(),
                t.stable.to_string(),
                share(t.stable),
            ],
            vec![
                m.canary.clone(),
                "canary".into(),
                t.canary.to_string(),
                share(t.canary),
            ],
        ];
        for (model, count) in &t.other {
            rows.push(vec![
                model.clone(),
                "other".into(),
                count.to_string(),
                String::new(),
            ]);
        }
        for (cause, count) in &t.failures {
            rows.push(vec![
                format!("({cause})"),
                "error".into(),
                count.to_string(),
                String::new(),
            ]);
        }
        out.push_str(&table::render(
            &["MODEL", "VERSION", "ANSWERS", "SHARE"],
            &rows,
        ));
        out.push('\n');
        let weight = self.expectation.weight;
        if let (Some(share), Some(ci)) = (self.canary_share, &self.interval) {
            out.push_str(&format!(
                "Canary share:   {} ({} of {}), {:.0}% confidence interval {} to {} (Clopper-Pearson)\n",
                percent(share),
                t.canary,
                measured,
                ci.level * 100.0,
                percent(ci.low),
                percent(ci.high)
            ));
        }
        out.push_str(&format!(
            "Expected:       {weight}% ({})\n",
            self.expectation.source
        ));
        if let Some(p) = self.p_value {
            out.push_str(&format!(
                "Exact binomial test (two-sided) against {weight}%: p = {}\n",
                format_p(p)
            ));
        }
        let result = match &self.verdict {
            Agreement::Consistent => format!(
                "consistent: the observed split does not contradict {weight}% (p >= {})",
                self.alpha
            ),
            Agreement::Inconsistent => format!(
                "INCONSISTENT: the canary does not get {weight}% of the traffic (p < {}){}",
                self.alpha,
                self.interval
                    .as_ref()
                    .map(|ci| format!(
                        "; it gets between {} and {}",
                        percent(ci.low),
                        percent(ci.high)
                    ))
                    .unwrap_or_default()
            ),
            Agreement::Unmeasured(reason) => format!("could not measure: {reason}"),
        };
        out.push_str(&format!("Result:         {result}\n"));
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    fn expectation(weight: u8) -> Expectation {
        Expectation {
            models: Models {
                stable: "gpt-4.1".into(),
                canary: "gpt-4o".into(),
            },
            weight,
            source: "--expect-weight".into(),
        }
    }

    fn tally(stable: u64, canary: u64, failures: &[(&str, u64)]) -> Tally {
        let failures: BTreeMap<String, u64> = failures
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        let failed: u64 = failures.values().sum();
        Tally {
            completed: u32::try_from(stable + canary + failed).unwrap_or(u32::MAX),
            stable,
            canary,
            failures,
            elapsed: Duration::from_secs(1),
            ..Tally::default()
        }
    }

    fn url() -> Url {
        chat_url("127.0.0.1:8080").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Stable and canary answers, failures by cause, expected weight, exit code, and why.
    type Case = (
        u64,
        u64,
        &'static [(&'static str, u64)],
        u8,
        u8,
        &'static str,
    );

    #[test]
    fn verdicts_for_a_table_of_samples() {
        let cases: [Case; 9] = [
            (300, 100, &[], 25, 0, "exactly 3:1 at 25%"),
            (290, 110, &[], 25, 0, "27.5% is within noise at n=400"),
            (200, 200, &[], 25, 1, "1:1 is not 25% at n=400"),
            (400, 0, &[], 0, 0, "weight 0, no canary answer"),
            (399, 1, &[], 0, 1, "weight 0, one canary answer"),
            (0, 400, &[], 100, 0, "weight 100, all canary"),
            (1, 399, &[], 100, 1, "weight 100, one stable answer"),
            (
                270,
                90,
                &[("HTTP 502 Bad Gateway", 40)],
                25,
                0,
                "10% failures is the limit",
            ),
            (
                270,
                89,
                &[("HTTP 502 Bad Gateway", 41)],
                25,
                2,
                "over 10% failures",
            ),
        ];
        for (stable, canary, failures, weight, code, why) in cases {
            let report = judge(
                &url(),
                400,
                8,
                failure_budget(400, 10),
                expectation(weight),
                tally(stable, canary, failures),
            );
            assert_eq!(
                report.verdict.exit_code(),
                code,
                "{why}: {:?}",
                report.verdict
            );
        }
    }

    #[test]
    fn unreachable_url_is_unmeasured_with_the_cause() {
        let report = judge(
            &url(),
            400,
            8,
            40,
            expectation(25),
            tally(
                0,
                0,
                &[("cannot connect: Connection refused (os error 111)", 41)],
            ),
        );
        let Agreement::Unmeasured(reason) = &report.verdict else {
            panic!("expected unmeasured, got {:?}", report.verdict);
        };
        assert!(
            reason.contains("41 of 400 requests failed (cannot connect: Connection refused"),
            "{reason}"
        );
        assert_eq!(report.canary_share, None);
        assert_eq!(report.p_value, None);
    }

    #[test]
    fn answers_from_unknown_models_are_named() {
        let mut t = tally(0, 0, &[]);
        t.other.insert("llama-3".into(), 400);
        t.completed = 400;
        let report = judge(&url(), 400, 8, 40, expectation(25), t);
        let Agreement::Unmeasured(reason) = &report.verdict else {
            panic!("expected unmeasured, got {:?}", report.verdict);
        };
        assert!(reason.contains("llama-3 ×400"), "{reason}");
        assert!(reason.contains("--stable-model"), "{reason}");
    }

    #[test]
    fn the_same_model_for_both_versions_cannot_be_measured() {
        let mut e = expectation(25);
        e.models.canary = "GPT-4.1".into();
        assert!(matches!(precheck(&e), Some(Agreement::Unmeasured(_))));
        assert_eq!(precheck(&expectation(25)), None);
    }

    #[test]
    fn report_text_shows_counts_share_interval_and_result() {
        let report = judge(&url(), 400, 8, 40, expectation(25), tally(300, 100, &[]));
        let text = report.render();
        for expected in [
            "POST http://127.0.0.1:8080/chat: 400 of 400 requests completed",
            "gpt-4.1   stable    300       75.0%",
            "gpt-4o    canary    100       25.0%",
            "Canary share:   25.0% (100 of 400), 95% confidence interval 20.8% to 29.5% (Clopper-Pearson)",
            "Exact binomial test (two-sided) against 25%: p = 1.000",
            "Result:         consistent",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn urls_get_the_lab_path_and_a_scheme() {
        let cases = [
            ("http://10.0.0.1", "http://10.0.0.1/chat"),
            ("10.0.0.1:8080", "http://10.0.0.1:8080/chat"),
            ("https://chat.example.com/", "https://chat.example.com/chat"),
            (
                "http://127.0.0.1:5000/api/chat",
                "http://127.0.0.1:5000/api/chat",
            ),
        ];
        for (given, expected) in cases {
            let url = chat_url(given).map(|u| u.to_string());
            assert_eq!(url.ok().as_deref(), Some(expected), "{given}");
        }
        for bad in ["ftp://host/", "http://", ""] {
            assert!(chat_url(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn p_values_print_readably() {
        assert_eq!(format_p(1.0), "1.000");
        assert_eq!(format_p(0.0123), "0.012");
        assert_eq!(format_p(3.2e-27), "3.2e-27");
        assert_eq!(format_p(0.0), "< 1e-300");
    }
}
