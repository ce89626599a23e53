//! Pure: the built-in checks of a model swap. Each is a named template (its PromQL, its default
//! bounds and action) written against the metric contract of docs/metrics.md: the
//! OpenTelemetry GenAI client metrics, as Prometheus names them, with `namespace` and `version`
//! target labels.
//! A user names one (`builtin: error-rate`) and may tune its bounds, action and sample size, or
//! write a check of their own instead.

use super::Action;
use super::analysis::{Bounds, Comparison, Price, Rule, Unit};

/// Requests a percentile, a token rate or a cost needs behind it before it is judged (a p95 of
/// a handful of requests is one slow request).
pub const DEFAULT_MIN_SAMPLES: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    ErrorRate,
    RateLimited,
    TtftP95,
    LatencyP95,
    TokensPerSecond,
    CostPerRequest,
}

/// The selector every template's series share: one version of one release's namespace.
const SELECTOR: &str = r#"namespace="{{namespace}}",version="{{version}}""#;

impl Builtin {
    pub const ALL: [Builtin; 6] = [
        Builtin::ErrorRate,
        Builtin::RateLimited,
        Builtin::TtftP95,
        Builtin::LatencyP95,
        Builtin::TokensPerSecond,
        Builtin::CostPerRequest,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::ErrorRate => "error-rate",
            Builtin::RateLimited => "rate-limited",
            Builtin::TtftP95 => "ttft-p95",
            Builtin::LatencyP95 => "latency-p95",
            Builtin::TokensPerSecond => "tokens-per-second",
            Builtin::CostPerRequest => "cost-per-request",
        }
    }

    pub fn parse(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The unit its value is shown in.
    pub fn unit(self) -> Unit {
        match self {
            Builtin::ErrorRate | Builtin::RateLimited => Unit::Share,
            Builtin::TtftP95 | Builtin::LatencyP95 => Unit::Seconds,
            Builtin::TokensPerSecond => Unit::TokensPerSecond,
            Builtin::CostPerRequest => Unit::CostPer1k,
        }
    }

    /// Whether it is a share of requests, judged from counts: only upper bounds make sense, and
    /// the sample size is the statistics' business, not a floor's.
    pub fn is_rate(self) -> bool {
        matches!(self, Builtin::ErrorRate | Builtin::RateLimited)
    }

    /// The default rule of the issue that asked for them, for a model swap.
    pub fn default_bounds(self) -> Bounds {
        let relative = |c: Comparison| Some(c);
        match self {
            Builtin::ErrorRate => Bounds {
                max: Some(0.02),
                stable: relative(Comparison {
                    max_increase: Some(0.01),
                    ..Comparison::default()
                }),
                ..Bounds::default()
            },
            Builtin::RateLimited => Bounds {
                max: Some(0.05),
                stable: relative(Comparison {
                    max_ratio: Some(2.0),
                    ..Comparison::default()
                }),
                ..Bounds::default()
            },
            Builtin::TtftP95 => Bounds {
                max: Some(2.0),
                stable: relative(Comparison {
                    max_ratio: Some(1.3),
                    ..Comparison::default()
                }),
                ..Bounds::default()
            },
            Builtin::LatencyP95 => Bounds {
                stable: relative(Comparison {
                    max_ratio: Some(1.25),
                    ..Comparison::default()
                }),
                ..Bounds::default()
            },
            Builtin::TokensPerSecond => Bounds {
                stable: relative(Comparison {
                    min_ratio: Some(0.7),
                    ..Comparison::default()
                }),
                ..Bounds::default()
            },
            Builtin::CostPerRequest => Bounds {
                stable: relative(Comparison {
                    max_ratio: Some(1.5),
                    ..Comparison::default()
                }),
                ..Bounds::default()
            },
        }
    }

    /// Throttling is the provider's quota answering load, not a broken build: it steps back
    /// rather than rolls back. A model swap changes cost on purpose: cost only warns.
    pub fn default_action(self) -> Action {
        match self {
            Builtin::RateLimited => Action::StepBack,
            Builtin::CostPerRequest => Action::Warn,
            _ => Action::Rollback,
        }
    }

    /// The rule with its PromQL. `prices` (canary's, stable's) matter to cost-per-request alone.
    pub fn rule(self, min_samples: u64, prices: (Price, Price)) -> Rule {
        let count = |extra: &str| {
            format!(
                "sum(increase(gen_ai_client_operation_duration_seconds_count{{{SELECTOR}{extra}}}[{{{{interval}}}}]))"
            )
        };
        // A success carries no error_type, so `error_type=""` selects successes.
        let successes = count(r#",error_type="""#);
        let tokens = |kind: &str| {
            format!(
                r#"sum(increase(gen_ai_client_token_usage_sum{{{SELECTOR},gen_ai_token_type="{kind}"}}[{{{{interval}}}}]))"#
            )
        };
        let p95 = |metric: &str, extra: &str| {
            format!(
                "histogram_quantile(0.95, sum by (le) (increase({metric}_bucket{{{SELECTOR}{extra}}}[{{{{interval}}}}])))"
            )
        };
        match self {
            // 5xx and timeouts among the requests that reached the model (429s did not).
            Builtin::ErrorRate => Rule::Rate {
                failures: format!("{} or vector(0)", count(r#",error_type=~"5..|timeout""#)),
                requests: count(r#",error_type!="429""#),
            },
            Builtin::RateLimited => Rule::Rate {
                failures: format!("{} or vector(0)", count(r#",error_type="429""#)),
                requests: count(""),
            },
            Builtin::TtftP95 => Rule::Sampled {
                value: p95("gen_ai_client_operation_time_to_first_chunk_seconds", ""),
                requests: format!(
                    "sum(increase(gen_ai_client_operation_time_to_first_chunk_seconds_count{{{SELECTOR}}}[{{{{interval}}}}]))"
                ),
                min_samples,
                unit: self.unit(),
            },
            Builtin::LatencyP95 => Rule::Sampled {
                value: p95(
                    "gen_ai_client_operation_duration_seconds",
                    r#",error_type="""#,
                ),
                requests: successes,
                min_samples,
                unit: self.unit(),
            },
            // Output tokens over the time spent generating them: each success's duration less
            // its time to first chunk (the backend records both, and the tokens, for successes).
            Builtin::TokensPerSecond => Rule::Sampled {
                value: format!(
                    "{} / (sum(increase(gen_ai_client_operation_duration_seconds_sum{{{SELECTOR},error_type=\"\"}}[{{{{interval}}}}])) - sum(increase(gen_ai_client_operation_time_to_first_chunk_seconds_sum{{{SELECTOR}}}[{{{{interval}}}}])))",
                    tokens("output"),
                ),
                requests: successes,
                min_samples,
                unit: self.unit(),
            },
            Builtin::CostPerRequest => Rule::Cost {
                input_tokens: tokens("input"),
                output_tokens: tokens("output"),
                requests: successes,
                min_samples,
                canary: prices.0,
                stable: prices.1,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::template;

    #[test]
    fn names_round_trip_and_templates_use_known_placeholders() {
        for b in Builtin::ALL {
            assert_eq!(Builtin::parse(b.name()), Some(b));
            let rule = b.rule(DEFAULT_MIN_SAMPLES, Default::default());
            assert_eq!(rule.unit(), b.unit(), "{}", b.name());
            for query in rule.queries() {
                assert_eq!(template::unknown(query), Vec::<String>::new(), "{query}");
                assert!(query.contains(r#"version="{{version}}""#), "{query}");
            }
        }
        assert_eq!(Builtin::parse("error_rate"), None);
    }

    /// The defaults are the issue's table, word for word.
    #[test]
    fn defaults_follow_the_table() {
        use crate::rollout::analysis::bound_text;
        let cases = [
            (
                Builtin::ErrorRate,
                "≤ 2% and ≤ stable + 1 point",
                Action::Rollback,
            ),
            (
                Builtin::RateLimited,
                "≤ 5% and ≤ 2 × stable",
                Action::StepBack,
            ),
            (
                Builtin::TtftP95,
                "≤ 2s and ≤ 1.3 × stable",
                Action::Rollback,
            ),
            (Builtin::LatencyP95, "≤ 1.25 × stable", Action::Rollback),
            (Builtin::TokensPerSecond, "≥ 0.7 × stable", Action::Rollback),
            (Builtin::CostPerRequest, "≤ 1.5 × stable", Action::Warn),
        ];
        for (b, bound, action) in cases {
            let rule = b.rule(DEFAULT_MIN_SAMPLES, Default::default());
            assert_eq!(
                bound_text(&rule, &b.default_bounds()),
                bound,
                "{}",
                b.name()
            );
            assert_eq!(b.default_action(), action, "{}", b.name());
        }
    }
}
