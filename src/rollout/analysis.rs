//! Pure: judges one measurement of a check against its bounds, and a whole measurement from its
//! checks. No I/O; the values come from the observe step's queries.
//!
//! Four outcomes, kept apart on purpose: a value that breaks a bound is a **Fail**; a value that
//! cannot be judged (no series, NaN, no requests) is **Inconclusive** and never counts as a pass;
//! a query that could not be answered is an **Error**, which says nothing about the canary.

use std::fmt;

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
    /// Bounds of the canary's value divided by the stable's (same query, same window).
    pub ratio: Option<Ratio>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ratio {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// The answer to one query: a number, no series at all (`Ok(None)`), or why there was no answer.
pub type Sample = Result<Option<f64>, String>;

/// One check judged.
#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    pub verdict: Verdict,
    /// The canary's value, when it was a number (NaN is not kept: status is JSON).
    pub value: Option<f64>,
    /// The stable's value, when it was asked for and was a number.
    pub stable_value: Option<f64>,
    /// Both values and the bound, so "why did it fail?" is answered where it is shown.
    pub message: String,
}

/// Judges a check: the canary's sample, and the stable's when the check compares with it.
pub fn judge(bounds: &Bounds, canary: &Sample, stable: Option<&Sample>) -> Judged {
    let number = |s: &Sample| s.as_ref().ok().copied().flatten().filter(|v| !v.is_nan());
    let mut judged = Judged {
        verdict: Verdict::Pass,
        value: number(canary),
        stable_value: stable.and_then(number),
        message: String::new(),
    };
    let value = match unusable("canary", canary) {
        Err((verdict, message)) => {
            judged.verdict = verdict;
            judged.message = message;
            return judged;
        }
        Ok(value) => value,
    };
    let mut broken = Vec::new();
    if let Some(min) = bounds.min
        && value < min
    {
        broken.push(format!("canary {} is below min {}", show(value), show(min)));
    }
    if let Some(max) = bounds.max
        && value > max
    {
        broken.push(format!("canary {} is above max {}", show(value), show(max)));
    }
    let mut notes = Vec::new();
    if bounds.ratio.is_some() && stable.is_none() {
        notes.push("the stable serves no traffic at 100%, so it is not compared".to_owned());
    }
    if let (Some(ratio), Some(stable)) = (&bounds.ratio, stable) {
        match unusable("stable", stable) {
            Err((verdict, message)) => {
                // A broken absolute bound is a failure whatever the stable shows.
                if broken.is_empty() {
                    judged.verdict = verdict;
                    judged.message = format!("canary {}; {message}", show(value));
                    return judged;
                }
                notes.push(message);
            }
            // A ratio to zero has no meaning (an error rate of 0 on stable is normal); the
            // absolute bounds still apply.
            Ok(0.0) => notes.push("stable is 0, so the ratio is not compared".to_owned()),
            Ok(base) => {
                let r = value / base;
                if let Some(max) = ratio.max
                    && r > max
                {
                    broken.push(format!(
                        "canary {} is {} × stable {}, above maxRatio {}",
                        show(value),
                        show(r),
                        show(base),
                        show(max)
                    ));
                } else if let Some(min) = ratio.min
                    && r < min
                {
                    broken.push(format!(
                        "canary {} is {} × stable {}, below minRatio {}",
                        show(value),
                        show(r),
                        show(base),
                        show(min)
                    ));
                } else {
                    notes.push(format!("{} × stable {}", show(r), show(base)));
                }
            }
        }
    }
    if broken.is_empty() {
        let mut parts = vec![format!("canary {}", show(value))];
        parts.extend(bounds_text(bounds));
        parts.extend(notes);
        judged.message = parts.join("; ");
    } else {
        judged.verdict = Verdict::Fail;
        broken.extend(notes);
        judged.message = broken.join("; ");
    }
    judged
}

/// The value of a sample, or why it cannot be judged.
fn unusable(whose: &str, sample: &Sample) -> Result<f64, (Verdict, String)> {
    match sample {
        Err(why) => Err((Verdict::Error, format!("{whose} query failed: {why}"))),
        Ok(None) => Err((
            Verdict::Inconclusive,
            format!("{whose} query returned no data"),
        )),
        Ok(Some(v)) if v.is_nan() => Err((
            Verdict::Inconclusive,
            format!("{whose} query returned NaN (no requests in the window?)"),
        )),
        Ok(Some(v)) => Ok(*v),
    }
}

fn bounds_text(bounds: &Bounds) -> Vec<String> {
    let mut parts = Vec::new();
    match (bounds.min, bounds.max) {
        (Some(min), Some(max)) => parts.push(format!("within [{}, {}]", show(min), show(max))),
        (Some(min), None) => parts.push(format!("at least {}", show(min))),
        (None, Some(max)) => parts.push(format!("at most {}", show(max))),
        (None, None) => {}
    }
    parts
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
            ratio: ratio.map(|(min, max)| Ratio { min, max }),
        }
    }

    /// Each case: bounds, canary sample, stable sample, verdict, words the message must hold.
    #[test]
    fn checks_are_judged_by_their_bounds() {
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
                "canary 0.3 is 3 × stable 0.1, above maxRatio 1.5",
            ),
            (
                bounds(None, None, Some((None, Some(1.5)))),
                Ok(Some(0.12)),
                Some(Ok(Some(0.1))),
                Verdict::Pass,
                "1.2 × stable 0.1",
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
            let judged = judge(&bounds, &canary, stable.as_ref());
            assert_eq!(judged.verdict, verdict, "case {i}: {}", judged.message);
            assert!(
                judged.message.contains(words),
                "case {i}: {:?} lacks {words:?}",
                judged.message
            );
        }
    }

    #[test]
    fn values_are_kept_only_when_numbers() {
        let b = bounds(None, Some(1.0), Some((None, Some(2.0))));
        let judged = judge(&b, &Ok(Some(f64::NAN)), Some(&Ok(Some(0.5))));
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
