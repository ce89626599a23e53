//! Pure: judges one measurement of a check against its bounds, and a whole measurement from its
//! checks. No I/O; the values come from the observe step's queries.
//!
//! Four outcomes, kept apart on purpose: a value that breaks a bound is a **Fail**; a value that
//! cannot be judged (no series, NaN, too few requests) is **Inconclusive** and never counts as a
//! pass; a query that could not be answered is an **Error**, which says nothing about the canary.
//!
//! A rate (errors, rate limits) is judged from its counts, not from a ratio: the exact 95 %
//! Clopper-Pearson interval of failures / requests must lie wholly above the bound to fail and
//! wholly below it to pass, so 1 error in 10 requests is neither. A value (a percentile, a token
//! rate, a cost) is judged only once enough requests stand behind it (`minSamples`).

use std::fmt;

use crate::stats::{Interval, proportion_interval};

/// Confidence of the interval a rate is judged by.
pub const CONFIDENCE: f64 = 0.95;

/// How one measurement of a check (or of all checks) came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Pass,
    Inconclusive,
    Error,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "Pass",
            Verdict::Inconclusive => "Inconclusive",
            Verdict::Error => "Error",
            Verdict::Fail => "Fail",
        }
    }

    pub fn parse(text: &str) -> Option<Verdict> {
        [
            Verdict::Pass,
            Verdict::Inconclusive,
            Verdict::Error,
            Verdict::Fail,
        ]
        .into_iter()
        .find(|v| v.as_str() == text)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bounds of a check's value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bounds {
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Bounds relative to the stable's value (same query, same window).
    pub stable: Option<Comparison>,
}

/// Bounds of the canary's value relative to the stable's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Comparison {
    /// Least canary / stable.
    pub min_ratio: Option<f64>,
    /// Most canary / stable.
    pub max_ratio: Option<f64>,
    /// Most canary − stable (for a rate, in its own unit: 0.01 is one point).
    pub max_increase: Option<f64>,
}

/// What a check's number means, so messages read "2.1%" or "1.3s" rather than a bare float.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unit {
    #[default]
    Plain,
    /// A share in [0, 1], shown in percent.
    Share,
    Seconds,
    TokensPerSecond,
    /// Dollars (or the prices' currency) per 1,000 requests.
    CostPer1k,
}

impl Unit {
    pub fn show(self, v: f64) -> String {
        match self {
            Unit::Plain => show(v),
            Unit::Share => format!("{}%", show_to(v * 100.0, 2)),
            Unit::Seconds => format!("{}s", show(v)),
            Unit::TokensPerSecond => format!("{} tokens/s", show_to(v, 1)),
            Unit::CostPer1k => format!("{} per 1k requests", show(v)),
        }
    }
}

/// The price of a model's tokens, per million, as its provider lists it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

/// How a check's number is found, and so how it is judged. The queries of a variant are listed by
/// [`Rule::queries`] in the order [`judge`] expects their samples.
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// One query that returns the number (a user's own PromQL).
    Value { query: String, unit: Unit },
    /// Failures and requests in the window, judged by the exact interval of their share.
    Rate { failures: String, requests: String },
    /// A number and the requests behind it; inconclusive below `min_samples`.
    Sampled {
        value: String,
        requests: String,
        min_samples: u64,
        unit: Unit,
    },
    /// Cost per 1,000 requests, from the tokens in the window and each version's prices.
    Cost {
        input_tokens: String,
        output_tokens: String,
        requests: String,
        min_samples: u64,
        canary: Price,
        stable: Price,
    },
}

impl Rule {
    pub fn queries(&self) -> Vec<&str> {
        match self {
            Rule::Value { query, .. } => vec![query],
            Rule::Rate { failures, requests } => vec![failures, requests],
            Rule::Sampled {
                value, requests, ..
            } => vec![value, requests],
            Rule::Cost {
                input_tokens,
                output_tokens,
                requests,
                ..
            } => vec![input_tokens, output_tokens, requests],
        }
    }

    pub fn unit(&self) -> Unit {
        match self {
            Rule::Value { unit, .. } | Rule::Sampled { unit, .. } => *unit,
            Rule::Rate { .. } => Unit::Share,
            Rule::Cost { .. } => Unit::CostPer1k,
        }
    }
}

/// The answer to one query: a number, no series at all (`Ok(None)`), or why there was no answer.
pub type Sample = Result<Option<f64>, String>;

/// Which version a reading is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Canary,
    Stable,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Canary => "canary",
            Side::Stable => "stable",
        }
    }
}

/// One check judged.
#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    pub verdict: Verdict,
    /// The canary's value, when it was a number (NaN is not kept: status is JSON).
    pub value: Option<f64>,
    /// The stable's value, when it was asked for and was a number.
    pub stable_value: Option<f64>,
    /// The bound the canary was held to, as a person reads it ("≤ 2%", "≤ 1.3 × stable = 0.9s").
    pub bound: String,
    /// Requests behind the canary's value, when the check counts them.
    pub samples: Option<u64>,
    pub stable_samples: Option<u64>,
    /// Both values, the bound and the sample sizes, so "why did it fail?" is answered where it
    /// is shown.
    pub message: String,
}

/// A version's number, with the requests behind it and, for a rate, its interval.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Reading {
    value: f64,
    samples: Option<u64>,
    interval: Option<Interval>,
    failures: Option<u64>,
}

impl Reading {
    fn describe(&self, unit: Unit) -> String {
        match (self.failures, self.samples, self.interval) {
            (Some(k), Some(n), Some(i)) => format!(
                "{} ({k} of {n} requests; 95% interval {}–{})",
                unit.show(self.value),
                unit.show(i.low),
                unit.show(i.high)
            ),
            (_, Some(n), _) => format!("{} over {n} requests", unit.show(self.value)),
            _ => unit.show(self.value),
        }
    }
}

/// Judges a check from its samples: the canary's, and the stable's when the check compares with
/// it (in [`Rule::queries`] order).
pub fn judge(rule: &Rule, bounds: &Bounds, canary: &[Sample], stable: Option<&[Sample]>) -> Judged {
    let unit = rule.unit();
    let canary_reading = read(rule, Side::Canary, canary);
    let stable_reading = stable.map(|s| read(rule, Side::Stable, s));
    let usable = |r: &Result<Reading, (Verdict, String, Option<u64>)>| r.as_ref().ok().copied();
    let mut judged = Judged {
        verdict: Verdict::Pass,
        value: usable(&canary_reading).map(|r| r.value),
        stable_value: stable_reading.as_ref().and_then(usable).map(|r| r.value),
        bound: bound_text(rule, bounds),
        samples: match &canary_reading {
            Ok(r) => r.samples,
            Err((_, _, n)) => *n,
        },
        stable_samples: match &stable_reading {
            Some(Ok(r)) => r.samples,
            Some(Err((_, _, n))) => *n,
            None => None,
        },
        message: String::new(),
    };
    let canary = match canary_reading {
        Err((verdict, message, _)) => {
            judged.verdict = verdict;
            judged.message = message;
            return judged;
        }
        Ok(reading) => reading,
    };
    let stable = match stable_reading {
        None => None,
        Some(Ok(reading)) => Some(Ok(reading)),
        Some(Err((verdict, message, _))) => Some(Err((verdict, message))),
    };
    let (verdict, message) = match rule {
        Rule::Rate { .. } => judge_rate(bounds, &canary, stable.as_ref()),
        _ => judge_value(unit, bounds, &canary, stable.as_ref()),
    };
    judged.verdict = verdict;
    judged.message = message;
    judged
}

/// A version's reading from its samples, or the verdict and words for why there is none (with
/// the requests counted, when that is what fell short).
fn read(
    rule: &Rule,
    side: Side,
    samples: &[Sample],
) -> Result<Reading, (Verdict, String, Option<u64>)> {
    let whose = side.as_str();
    let number = |i: usize| -> Result<Option<f64>, (Verdict, String, Option<u64>)> {
        match samples.get(i) {
            None => Err((
                Verdict::Error,
                format!("{whose}: query {} was not run", i + 1),
                None,
            )),
            Some(Err(why)) => Err((Verdict::Error, format!("{whose} query failed: {why}"), None)),
            Some(Ok(v)) => Ok(v.filter(|v| !v.is_nan())),
        }
    };
    // Counts come from `increase()`, which extrapolates to the window's edges: whole requests are
    // what the statistics count.
    let count = |v: Option<f64>| v.map(|v| v.max(0.0).round() as u64);
    let enough = |n: Option<u64>, min: u64| match n {
        None => Err((
            Verdict::Inconclusive,
            format!("{whose} query returned no data (no requests in the window?)"),
            None,
        )),
        Some(n) if n < min.max(1) => Err((
            Verdict::Inconclusive,
            format!(
                "{whose} has {n} requests in the window, fewer than the {} its value needs (minSamples)",
                min.max(1)
            ),
            Some(n),
        )),
        Some(n) => Ok(n),
    };
    match rule {
        Rule::Value { .. } => match samples.first() {
            Some(Ok(None)) | None => Err((
                Verdict::Inconclusive,
                format!("{whose} query returned no data"),
                None,
            )),
            Some(Ok(Some(v))) if v.is_nan() => Err((
                Verdict::Inconclusive,
                format!("{whose} query returned NaN (no requests in the window?)"),
                None,
            )),
            Some(Ok(Some(v))) => Ok(Reading {
                value: *v,
                samples: None,
                interval: None,
                failures: None,
            }),
            Some(Err(why)) => Err((Verdict::Error, format!("{whose} query failed: {why}"), None)),
        },
        Rule::Rate { .. } => {
            let failures = number(0)?;
            let n = enough(count(number(1)?), 1)?;
            // A failure series appears only with the first failure; none in the window is 0.
            let k = count(failures).unwrap_or(0).min(n);
            Ok(Reading {
                value: k as f64 / n as f64,
                samples: Some(n),
                interval: Some(proportion_interval(k, n, CONFIDENCE)),
                failures: Some(k),
            })
        }
        Rule::Sampled { min_samples, .. } => {
            let value = number(0)?;
            let n = enough(count(number(1)?), *min_samples)?;
            let value = value.ok_or_else(|| {
                (
                    Verdict::Inconclusive,
                    format!("{whose} value query returned no data over {n} requests"),
                    Some(n),
                )
            })?;
            Ok(Reading {
                value,
                samples: Some(n),
                interval: None,
                failures: None,
            })
        }
        Rule::Cost {
            min_samples,
            canary,
            stable,
            ..
        } => {
            let input = number(0)?.unwrap_or(0.0);
            let output = number(1)?.unwrap_or(0.0);
            let n = enough(count(number(2)?), *min_samples)?;
            let price = match side {
                Side::Canary => canary,
                Side::Stable => stable,
            };
            let cost =
                (input * price.input_per_million + output * price.output_per_million) / 1_000_000.0;
            Ok(Reading {
                value: cost / n as f64 * 1_000.0,
                samples: Some(n),
                interval: None,
                failures: None,
            })
        }
    }
}

/// A rate: one bound, the tightest of the absolute one and those relative to the stable, and the
/// canary's whole interval on one side of it. The stable's own share is a sample too; its upper
/// bound is what the canary is compared with, so a stable that was lucky in a small window does
/// not fail a canary by chance.
fn judge_rate(
    bounds: &Bounds,
    canary: &Reading,
    stable: Option<&Result<Reading, (Verdict, String)>>,
) -> (Verdict, String) {
    let unit = Unit::Share;
    let mut limits: Vec<(f64, String)> = Vec::new();
    let mut notes = Vec::new();
    if let Some(max) = bounds.max {
        limits.push((max, format!("max {}", unit.show(max))));
    }
    match (bounds.stable.as_ref(), stable) {
        (Some(_), None) => {
            notes.push("the stable serves no traffic at 100%, so it is not compared".to_owned())
        }
        (Some(comparison), Some(Ok(stable))) => {
            let high = stable.interval.map_or(stable.value, |i| i.high);
            notes.push(format!("stable {}", stable.describe(unit)));
            if let Some(increase) = comparison.max_increase {
                limits.push((
                    high + increase,
                    format!(
                        "stable's upper bound {} + {}",
                        unit.show(high),
                        unit.show(increase)
                    ),
                ));
            }
            // "Twice the stable's share" of a stable that had none is no bound at all, only
            // its sampling noise: as for values, a ratio to zero is not compared.
            if comparison.max_ratio.is_some() && stable.failures == Some(0) {
                notes.push("stable had none, so the ratio is not compared".to_owned());
            } else if let Some(ratio) = comparison.max_ratio {
                limits.push((
                    high * ratio,
                    format!("{} × stable's upper bound {}", show(ratio), unit.show(high)),
                ));
            }
        }
        (Some(_), Some(Err((verdict, message)))) => {
            // Without the stable, only the absolute bound can still fail the canary.
            if let (Some(max), Some(interval)) = (bounds.max, canary.interval)
                && interval.low > max
            {
                return (
                    Verdict::Fail,
                    format!(
                        "canary {} is above max {} ({message})",
                        canary.describe(unit),
                        unit.show(max)
                    ),
                );
            }
            return (
                *verdict,
                format!("canary {}; {message}", canary.describe(unit)),
            );
        }
        (None, _) => {}
    }
    let Some((limit, why)) = limits.into_iter().min_by(|a, b| a.0.total_cmp(&b.0)) else {
        notes.insert(0, format!("canary {}", canary.describe(unit)));
        return (Verdict::Pass, notes.join("; "));
    };
    let interval = canary.interval.unwrap_or(Interval {
        low: canary.value,
        high: canary.value,
    });
    let (verdict, relation) = if interval.low > limit {
        (Verdict::Fail, "above the bound")
    } else if interval.high <= limit {
        (Verdict::Pass, "within the bound")
    } else {
        (
            Verdict::Inconclusive,
            "not yet distinguishable from the bound: more requests are needed",
        )
    };
    let mut parts = vec![format!(
        "canary {} is {relation} {} ({why})",
        canary.describe(unit),
        unit.show(limit)
    )];
    parts.extend(notes);
    (verdict, parts.join("; "))
}

/// A value: absolute bounds on the canary's number, relative ones on its ratio to (or distance
/// from) the stable's.
fn judge_value(
    unit: Unit,
    bounds: &Bounds,
    canary: &Reading,
    stable: Option<&Result<Reading, (Verdict, String)>>,
) -> (Verdict, String) {
    let value = canary.value;
    let mut broken = Vec::new();
    if let Some(min) = bounds.min
        && value < min
    {
        broken.push(format!(
            "canary {} is below min {}",
            canary.describe(unit),
            unit.show(min)
        ));
    }
    if let Some(max) = bounds.max
        && value > max
    {
        broken.push(format!(
            "canary {} is above max {}",
            canary.describe(unit),
            unit.show(max)
        ));
    }
    let mut notes = Vec::new();
    match (bounds.stable.as_ref(), stable) {
        (Some(_), None) => {
            notes.push("the stable serves no traffic at 100%, so it is not compared".to_owned())
        }
        (Some(_), Some(Err((verdict, message)))) => {
            // A broken absolute bound is a failure whatever the stable shows.
            if broken.is_empty() {
                return (
                    *verdict,
                    format!("canary {}; {message}", canary.describe(unit)),
                );
            }
            notes.push(message.clone());
        }
        (Some(comparison), Some(Ok(stable))) => {
            let base = stable.value;
            let versus = format!(
                "canary {} vs stable {}",
                canary.describe(unit),
                stable.describe(unit)
            );
            let mut relative_broken = Vec::new();
            if let Some(increase) = comparison.max_increase
                && value - base > increase
            {
                relative_broken.push(format!(
                    "more than {} above the stable",
                    unit.show(increase)
                ));
            }
            // A ratio to zero has no meaning (an error rate of 0 on stable is normal); the
            // absolute bounds still apply.
            if base == 0.0 {
                if comparison.min_ratio.is_some() || comparison.max_ratio.is_some() {
                    notes.push(format!(
                        "{versus}: stable is 0, so the ratio is not compared"
                    ));
                }
            } else {
                let r = value / base;
                if let Some(max) = comparison.max_ratio
                    && r > max
                {
                    relative_broken.push(format!(
                        "{} × stable, above maxRatio {}",
                        show(r),
                        show(max)
                    ));
                }
                if let Some(min) = comparison.min_ratio
                    && r < min
                {
                    relative_broken.push(format!(
                        "{} × stable, below minRatio {}",
                        show(r),
                        show(min)
                    ));
                }
                if relative_broken.is_empty() {
                    notes.push(format!("{versus} ({} × stable)", show(r)));
                }
            }
            if !relative_broken.is_empty() {
                broken.push(format!("{versus}: {}", relative_broken.join(", ")));
            } else if base == 0.0 && comparison.max_increase.is_some() {
                notes.push(versus);
            }
        }
        (None, _) => {}
    }
    if broken.is_empty() {
        let mut parts = vec![format!("canary {}", canary.describe(unit))];
        parts.extend(absolute_text(unit, bounds));
        parts.extend(notes);
        (Verdict::Pass, dedup_canary(parts).join("; "))
    } else {
        broken.extend(notes);
        (Verdict::Fail, broken.join("; "))
    }
}

/// A note that already names both values makes the leading "canary ..." redundant.
fn dedup_canary(parts: Vec<String>) -> Vec<String> {
    if parts.iter().skip(1).any(|p| p.starts_with("canary ")) {
        parts.into_iter().skip(1).collect()
    } else {
        parts
    }
}

fn absolute_text(unit: Unit, bounds: &Bounds) -> Option<String> {
    match (bounds.min, bounds.max) {
        (Some(min), Some(max)) => Some(format!("within [{}, {}]", unit.show(min), unit.show(max))),
        (Some(min), None) => Some(format!("at least {}", unit.show(min))),
        (None, Some(max)) => Some(format!("at most {}", unit.show(max))),
        (None, None) => None,
    }
}

/// The bounds as one line for a table: "≤ 2% and ≤ stable + 1%", "≥ 0.7 × stable".
pub fn bound_text(rule: &Rule, bounds: &Bounds) -> String {
    let unit = rule.unit();
    let mut parts = Vec::new();
    if let Some(min) = bounds.min {
        parts.push(format!("≥ {}", unit.show(min)));
    }
    if let Some(max) = bounds.max {
        parts.push(format!("≤ {}", unit.show(max)));
    }
    if let Some(c) = &bounds.stable {
        if let Some(r) = c.min_ratio {
            parts.push(format!("≥ {} × stable", show(r)));
        }
        if let Some(r) = c.max_ratio {
            parts.push(format!("≤ {} × stable", show(r)));
        }
        if let Some(i) = c.max_increase {
            parts.push(match unit {
                Unit::Share => {
                    let points = i * 100.0;
                    let word = if points == 1.0 { "point" } else { "points" };
                    format!("≤ stable + {} {word}", show(points))
                }
                _ => format!("≤ stable + {}", unit.show(i)),
            });
        }
    }
    parts.join(" and ")
}

/// A value as people read it: up to 4 significant decimals, no trailing zeros.
pub fn show(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    let text = format!("{v:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0" } else { text }.to_owned()
}

/// A value with at most `decimals` decimals, no trailing zeros.
fn show_to(v: f64, decimals: usize) -> String {
    let text = format!("{v:.decimals$}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0" } else { text }.to_owned()
}

/// A measurement's verdict: any failure fails it; otherwise any error, then anything
/// inconclusive, keeps it from passing. No checks at all pass.
pub fn overall(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
    verdicts.into_iter().max().unwrap_or(Verdict::Pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(
        min: Option<f64>,
        max: Option<f64>,
        ratio: Option<(Option<f64>, Option<f64>)>,
    ) -> Bounds {
        Bounds {
            min,
            max,
            stable: ratio.map(|(min_ratio, max_ratio)| Comparison {
                min_ratio,
                max_ratio,
                max_increase: None,
            }),
        }
    }

    fn value_rule() -> Rule {
        Rule::Value {
            query: "q".to_owned(),
            unit: Unit::Plain,
        }
    }

    /// Each case: bounds, canary sample, stable sample, verdict, words the message must hold.
    #[test]
    fn values_are_judged_by_their_bounds() {
        let err = |s: &str| Err(s.to_owned());
        let cases: Vec<(Bounds, Sample, Option<Sample>, Verdict, &str)> = vec![
            (
                bounds(None, Some(0.02), None),
                Ok(Some(0.01)),
                None,
                Verdict::Pass,
                "canary 0.01; at most 0.02",
            ),
            (
                bounds(None, Some(0.02), None),
                Ok(Some(0.02)),
                None,
                Verdict::Pass,
                "at most 0.02",
            ),
            (
                bounds(None, Some(0.02), None),
                Ok(Some(0.5)),
                None,
                Verdict::Fail,
                "canary 0.5 is above max 0.02",
            ),
            (
                bounds(Some(10.0), None, None),
                Ok(Some(3.0)),
                None,
                Verdict::Fail,
                "canary 3 is below min 10",
            ),
            (
                bounds(Some(1.0), Some(2.0), None),
                Ok(Some(1.5)),
                None,
                Verdict::Pass,
                "within [1, 2]",
            ),
            (
                bounds(None, Some(0.02), None),
                Ok(None),
                None,
                Verdict::Inconclusive,
                "no data",
            ),
            (
                bounds(None, Some(0.02), None),
                Ok(Some(f64::NAN)),
                None,
                Verdict::Inconclusive,
                "NaN",
            ),
            (
                bounds(None, Some(0.02), None),
                err("connection refused"),
                None,
                Verdict::Error,
                "canary query failed: connection refused",
            ),
            (
                bounds(None, None, Some((None, Some(1.5)))),
                Ok(Some(0.3)),
                Some(Ok(Some(0.1))),
                Verdict::Fail,
                "canary 0.3 vs stable 0.1: 3 × stable, above maxRatio 1.5",
            ),
            (
                bounds(None, None, Some((None, Some(1.5)))),
                Ok(Some(0.12)),
                Some(Ok(Some(0.1))),
                Verdict::Pass,
                "canary 0.12 vs stable 0.1 (1.2 × stable)",
            ),
            (
                bounds(None, None, Some((Some(0.8), None))),
                Ok(Some(50.0)),
                Some(Ok(Some(100.0))),
                Verdict::Fail,
                "below minRatio 0.8",
            ),
            (
                bounds(None, None, Some((None, Some(1.5)))),
                Ok(Some(0.01)),
                Some(Ok(Some(0.0))),
                Verdict::Pass,
                "stable is 0",
            ),
            (
                bounds(None, None, Some((None, Some(1.5)))),
                Ok(Some(0.01)),
                Some(Ok(None)),
                Verdict::Inconclusive,
                "stable query returned no data",
            ),
            (
                bounds(None, None, Some((None, Some(1.5)))),
                Ok(Some(0.01)),
                Some(err("timeout")),
                Verdict::Error,
                "stable query failed: timeout",
            ),
            // A broken absolute bound fails even when the stable cannot be read.
            (
                bounds(None, Some(0.02), Some((None, Some(1.5)))),
                Ok(Some(0.5)),
                Some(err("timeout")),
                Verdict::Fail,
                "above max 0.02",
            ),
            // At 100 % the stable is not asked: the absolute bounds alone decide.
            (
                bounds(None, Some(0.02), Some((None, Some(1.5)))),
                Ok(Some(0.01)),
                None,
                Verdict::Pass,
                "not compared",
            ),
            // The canary's own answer decides first.
            (
                bounds(None, None, Some((None, Some(1.5)))),
                Ok(None),
                Some(Ok(Some(0.1))),
                Verdict::Inconclusive,
                "canary query returned no data",
            ),
        ];
        for (i, (bounds, canary, stable, verdict, words)) in cases.into_iter().enumerate() {
            let stable = stable.map(|s| vec![s]);
            let judged = judge(&value_rule(), &bounds, &[canary], stable.as_deref());
            assert_eq!(judged.verdict, verdict, "case {i}: {}", judged.message);
            assert!(
                judged.message.contains(words),
                "case {i}: {:?} lacks {words:?}",
                judged.message
            );
        }
    }

    fn rate_rule() -> Rule {
        Rule::Rate {
            failures: "f".to_owned(),
            requests: "n".to_owned(),
        }
    }

    fn counts(k: f64, n: f64) -> Vec<Sample> {
        vec![Ok(Some(k)), Ok(Some(n))]
    }

    /// The built-in error-rate's default: ≤ 2 % and ≤ stable + 1 point.
    fn error_rate_bounds() -> Bounds {
        Bounds {
            max: Some(0.02),
            stable: Some(Comparison {
                max_increase: Some(0.01),
                ..Comparison::default()
            }),
            ..Bounds::default()
        }
    }

    /// Each case: canary counts, stable counts, verdict, words. Rates are judged by the exact
    /// interval of the counts, never by the point share alone.
    #[test]
    fn rates_are_judged_from_their_counts() {
        type Case = (Vec<Sample>, Option<Vec<Sample>>, Verdict, &'static str);
        let cases: Vec<Case> = vec![
            // 1 error in 10 requests: the interval (0.25 %–44.5 %) straddles 2 %.
            (
                counts(1.0, 10.0),
                Some(counts(0.0, 30.0)),
                Verdict::Inconclusive,
                "1 of 10 requests",
            ),
            // 30 % errors over 200 requests: clearly above.
            (
                counts(60.0, 200.0),
                Some(counts(0.0, 600.0)),
                Verdict::Fail,
                "is above the bound",
            ),
            // None in 1,000 against a clean stable: the interval's top (0.37 %) is below 1.3 %.
            (
                counts(0.0, 1000.0),
                Some(counts(0.0, 3000.0)),
                Verdict::Pass,
                "within the bound",
            ),
            // No failure series yet: no failures.
            (
                vec![Ok(None), Ok(Some(1000.0))],
                Some(counts(0.0, 3000.0)),
                Verdict::Pass,
                "0 of 1000 requests",
            ),
            // No requests at all: nothing to judge.
            (
                vec![Ok(None), Ok(None)],
                Some(counts(0.0, 3000.0)),
                Verdict::Inconclusive,
                "no data",
            ),
            (
                vec![Ok(Some(0.0)), Ok(Some(0.0))],
                None,
                Verdict::Inconclusive,
                "0 requests",
            ),
            // 1.5 % is under 2 % but 1.2 points over a clean stable's upper bound + 1 point.
            (
                counts(150.0, 10_000.0),
                Some(counts(0.0, 30_000.0)),
                Verdict::Fail,
                "stable's upper bound",
            ),
            // A stable that fails as often lifts the relative bound; the absolute 2 % still holds.
            (
                counts(150.0, 10_000.0),
                Some(counts(450.0, 30_000.0)),
                Verdict::Pass,
                "max 2%",
            ),
            // At 100 % the stable is not compared: the absolute bound alone.
            (counts(0.0, 1000.0), None, Verdict::Pass, "not compared"),
            // The stable's query failing leaves an error, unless the canary breaks max alone.
            (
                counts(0.0, 1000.0),
                Some(vec![Err("timeout".to_owned()), Ok(Some(1.0))]),
                Verdict::Error,
                "stable query failed",
            ),
            (
                counts(500.0, 1000.0),
                Some(vec![Err("timeout".to_owned()), Ok(Some(1.0))]),
                Verdict::Fail,
                "above max 2%",
            ),
            // Extrapolated counts are whole requests, and never more failures than requests.
            (counts(10.6, 9.7), None, Verdict::Fail, "10 of 10 requests"),
        ];
        for (i, (canary, stable, verdict, words)) in cases.into_iter().enumerate() {
            let judged = judge(
                &rate_rule(),
                &error_rate_bounds(),
                &canary,
                stable.as_deref(),
            );
            assert_eq!(judged.verdict, verdict, "case {i}: {}", judged.message);
            assert!(
                judged.message.contains(words),
                "case {i}: {:?} lacks {words:?}",
                judged.message
            );
        }
    }

    #[test]
    fn a_ratio_to_the_stable_rate_uses_its_upper_bound() {
        // rate-limited: ≤ 5 % and ≤ 2 × stable. Stable 1 % of 2,000 (upper bound ≈ 1.5 %).
        let bounds = Bounds {
            max: Some(0.05),
            stable: Some(Comparison {
                max_ratio: Some(2.0),
                ..Comparison::default()
            }),
            ..Bounds::default()
        };
        let stable = counts(20.0, 2000.0);
        let judged = judge(&rate_rule(), &bounds, &counts(250.0, 500.0), Some(&stable));
        assert_eq!(judged.verdict, Verdict::Fail, "{}", judged.message);
        assert!(
            judged.message.contains("2 × stable's upper bound"),
            "{}",
            judged.message
        );
        assert_eq!(
            (judged.samples, judged.stable_samples),
            (Some(500), Some(2000))
        );
        assert_eq!(judged.bound, "≤ 5% and ≤ 2 × stable");
        let judged = judge(&rate_rule(), &bounds, &counts(5.0, 2000.0), Some(&stable));
        assert_eq!(judged.verdict, Verdict::Pass, "{}", judged.message);
        // A stable without a single 429: only the absolute 5 % applies.
        let clean = counts(0.0, 1500.0);
        let judged = judge(&rate_rule(), &bounds, &counts(0.0, 500.0), Some(&clean));
        assert_eq!(judged.verdict, Verdict::Pass, "{}", judged.message);
        assert!(
            judged.message.contains("ratio is not compared"),
            "{}",
            judged.message
        );
    }

    #[test]
    fn sampled_values_need_enough_requests() {
        let rule = Rule::Sampled {
            value: "p95".to_owned(),
            requests: "n".to_owned(),
            min_samples: 100,
            unit: Unit::Seconds,
        };
        let bounds = Bounds {
            max: Some(2.0),
            stable: Some(Comparison {
                max_ratio: Some(1.3),
                ..Comparison::default()
            }),
            ..Bounds::default()
        };
        let cases: Vec<(Vec<Sample>, Vec<Sample>, Verdict, &str)> = vec![
            (
                vec![Ok(Some(0.2)), Ok(Some(40.0))],
                vec![Ok(Some(0.2)), Ok(Some(400.0))],
                Verdict::Inconclusive,
                "canary has 40 requests in the window, fewer than the 100",
            ),
            (
                vec![Ok(Some(0.2)), Ok(Some(400.0))],
                vec![Ok(Some(0.2)), Ok(Some(40.0))],
                Verdict::Inconclusive,
                "stable has 40 requests",
            ),
            (
                vec![Ok(Some(1.7)), Ok(Some(400.0))],
                vec![Ok(Some(0.2)), Ok(Some(1200.0))],
                Verdict::Fail,
                "canary 1.7s over 400 requests vs stable 0.2s over 1200 requests: 8.5 × stable, above maxRatio 1.3",
            ),
            (
                vec![Ok(Some(2.5)), Ok(Some(400.0))],
                vec![Ok(Some(2.4)), Ok(Some(1200.0))],
                Verdict::Fail,
                "above max 2s",
            ),
            (
                vec![Ok(Some(0.22)), Ok(Some(400.0))],
                vec![Ok(Some(0.2)), Ok(Some(1200.0))],
                Verdict::Pass,
                "(1.1 × stable)",
            ),
            (
                vec![Ok(None), Ok(Some(400.0))],
                vec![Ok(Some(0.2)), Ok(Some(1200.0))],
                Verdict::Inconclusive,
                "value query returned no data over 400 requests",
            ),
        ];
        for (i, (canary, stable, verdict, words)) in cases.into_iter().enumerate() {
            let judged = judge(&rule, &bounds, &canary, Some(&stable));
            assert_eq!(judged.verdict, verdict, "case {i}: {}", judged.message);
            assert!(
                judged.message.contains(words),
                "case {i}: {:?} lacks {words:?}",
                judged.message
            );
        }
    }

    #[test]
    fn cost_is_per_thousand_requests_at_each_versions_prices() {
        let rule = Rule::Cost {
            input_tokens: "in".to_owned(),
            output_tokens: "out".to_owned(),
            requests: "n".to_owned(),
            min_samples: 100,
            // gpt-4o-like against gpt-4.1-like prices.
            canary: Price {
                input_per_million: 2.5,
                output_per_million: 10.0,
            },
            stable: Price {
                input_per_million: 2.0,
                output_per_million: 8.0,
            },
        };
        let bounds = Bounds {
            stable: Some(Comparison {
                max_ratio: Some(1.5),
                ..Comparison::default()
            }),
            ..Bounds::default()
        };
        // 1,000 requests of 100 input and 50 output tokens each, on both versions.
        let same = vec![Ok(Some(100_000.0)), Ok(Some(50_000.0)), Ok(Some(1000.0))];
        let judged = judge(&rule, &bounds, &same, Some(&same));
        // Canary: (100k × 2.5 + 50k × 10) / 1M = 0.75 per 1,000; stable 0.6.
        assert_eq!(judged.value, Some(0.75));
        assert_eq!(judged.stable_value, Some(0.6));
        assert_eq!(judged.verdict, Verdict::Pass, "{}", judged.message);
        assert!(
            judged.message.contains("1.25 × stable"),
            "{}",
            judged.message
        );
    }

    #[test]
    fn values_are_kept_only_when_numbers() {
        let b = bounds(None, Some(1.0), Some((None, Some(2.0))));
        let judged = judge(
            &value_rule(),
            &b,
            &[Ok(Some(f64::NAN))],
            Some(&[Ok(Some(0.5))]),
        );
        assert_eq!((judged.value, judged.stable_value), (None, Some(0.5)));
    }

    #[test]
    fn a_measurement_is_as_bad_as_its_worst_check() {
        use Verdict::*;
        let cases = [
            (vec![], Pass),
            (vec![Pass, Pass], Pass),
            (vec![Pass, Inconclusive], Inconclusive),
            (vec![Inconclusive, Error], Error),
            (vec![Error, Fail, Pass], Fail),
        ];
        for (verdicts, expected) in cases {
            assert_eq!(overall(verdicts.clone()), expected, "{verdicts:?}");
        }
    }

    #[test]
    fn values_read_as_people_write_them() {
        let cases = [
            (0.02, "0.02"),
            (3.0, "3"),
            (1.23456, "1.2346"),
            (f64::INFINITY, "+Inf"),
            (-0.0, "0"),
        ];
        for (v, text) in cases {
            assert_eq!(show(v), text);
        }
        assert_eq!(Unit::Share.show(0.0137), "1.37%");
        assert_eq!(Unit::Share.show(0.494949), "49.49%");
        assert_eq!(Unit::Share.show(0.0), "0%");
        assert_eq!(Unit::TokensPerSecond.show(123.456), "123.5 tokens/s");
        for v in [
            Verdict::Pass,
            Verdict::Fail,
            Verdict::Error,
            Verdict::Inconclusive,
        ] {
            assert_eq!(Verdict::parse(v.as_str()), Some(v));
        }
    }
}
