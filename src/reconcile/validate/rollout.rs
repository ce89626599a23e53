//! The rollout part of a spec: the automatic strategy's steps, analysis and checks, and the
//! durations and addresses they are written with.

use std::time::Duration;

use crate::api::{
    BuiltinCheck, CanaryReleaseSpec, CheckAction, CheckSpec, DeadlineAction, VersionSpec,
};
use crate::rollout::{
    Action, Analysis, Bounds, Builtin, Check, Comparison, DEFAULT_PROGRESS_DEADLINE, Deadline,
    Plan, Price, Rule, Step, Unit, builtin, template,
};

/// The automatic strategy's plan, or `None` in manual mode; every problem of the new fields is
/// reported with its field, so an apiserver without the CRD's CEL rules (or a release built in
/// memory) is held to the same rules.
pub fn strategy_plan(
    spec: &CanaryReleaseSpec,
    min_interval: Duration,
    problem: &mut impl FnMut(&str, String),
) -> Option<Plan> {
    match (&spec.weight, &spec.strategy) {
        (Some(_), Some(_)) => problem(
            "spec.weight",
            "set exactly one of weight (manual) or strategy (automatic), not both".to_owned(),
        ),
        (None, None) if spec.canary.is_some() => problem(
            "spec.weight",
            "set weight (manual: you set the split) or strategy (automatic)".to_owned(),
        ),
        (Some(weight), None) if spec.canary.is_none() && *weight != 0 => problem(
            "spec.weight",
            format!(
                "{weight} with no canary: there is nothing to send it to; set it to 0 or add spec.canary"
            ),
        ),
        _ => {}
    }
    if spec.analysis.is_some() && spec.strategy.is_none() {
        problem(
            "spec.analysis",
            "analysis applies only to an automatic release: set strategy too".to_owned(),
        );
    }
    let strategy = spec.strategy.as_ref()?;
    let mut steps = Vec::new();
    if strategy.steps.is_empty() {
        problem(
            "spec.strategy.steps",
            "at least one step is needed, the last with weight 100".to_owned(),
        );
    }
    let mut previous = 0;
    for (i, step) in strategy.steps.iter().enumerate() {
        let at = format!("spec.strategy.steps[{i}]");
        if !(1..=100).contains(&step.weight) {
            problem(
                &format!("{at}.weight"),
                format!("{} is not a percent from 1 to 100", step.weight),
            );
        } else if step.weight <= previous {
            problem(
                &format!("{at}.weight"),
                format!(
                    "{} does not exceed the step before ({previous}): weights must be strictly increasing",
                    step.weight
                ),
            );
        }
        previous = step.weight;
        let duration = parse_duration(&format!("{at}.duration"), &step.duration, problem);
        steps.push(Step {
            weight: step.weight,
            duration: duration.unwrap_or_default(),
            approval: step.approval,
        });
    }
    if let Some(last) = strategy.steps.last()
        && last.weight != 100
    {
        problem(
            &format!("spec.strategy.steps[{}].weight", strategy.steps.len() - 1),
            format!(
                "the last step's weight is {}, not 100: the rollout must end with the canary serving everything",
                last.weight
            ),
        );
    }
    if spec.autoscaling.is_none() && spec.canary.as_ref().is_some_and(|c| c.replicas == Some(0)) {
        problem(
            "spec.canary.replicas",
            "an automatic rollout needs at least one canary replica to send traffic to".to_owned(),
        );
    }
    let analysis = spec.analysis.as_ref().map(|a| {
        let interval = parse_duration("spec.analysis.interval", &a.interval, problem).unwrap_or(min_interval);
        if interval < min_interval {
            problem(
                "spec.analysis.interval",
                format!("{} is shorter than the operator's minimum of {min_interval:?} (--min-analysis-interval)", a.interval),
            );
        }
        let warmup = parse_duration("spec.analysis.warmup", &a.warmup, problem).unwrap_or_default();
        let timeout = parse_duration("spec.analysis.prometheus.timeout", &a.prometheus.timeout, problem).unwrap_or_default();
        if timeout.is_zero() {
            problem("spec.analysis.prometheus.timeout", "must be longer than zero".to_owned());
        } else if timeout > interval {
            problem(
                "spec.analysis.prometheus.timeout",
                format!("{} is longer than the interval ({}): a query must end before the next is due", a.prometheus.timeout, a.interval),
            );
        }
        if let Err(why) = check_address(&a.prometheus.address) {
            problem("spec.analysis.prometheus.address", why);
        }
        for (field, value, least) in [
            ("failureLimit", a.failure_limit, 0),
            ("inconclusiveLimit", a.inconclusive_limit, 1),
            ("errorLimit", a.error_limit, 1),
        ] {
            if value < least {
                problem(&format!("spec.analysis.{field}"), format!("{value} is below {least}"));
            }
        }
        if a.checks.is_empty() {
            problem("spec.analysis.checks", "at least one check is needed".to_owned());
        }
        let mut checks: Vec<Check> = Vec::new();
        for (i, spec_check) in a.checks.iter().enumerate() {
            let at = format!("spec.analysis.checks[{i}]");
            if let Some(check) = check_of(spec, spec_check, &at, problem) {
                if checks.iter().any(|c| c.name == check.name) {
                    problem(&format!("{at}.name"), format!("{:?} is used by an earlier check", check.name));
                }
                checks.push(check);
            }
        }
        Analysis {
            address: a.prometheus.address.trim_end_matches('/').to_owned(),
            timeout,
            interval,
            warmup,
            failure_limit: u32::try_from(a.failure_limit).unwrap_or_default(),
            inconclusive_limit: u32::try_from(a.inconclusive_limit).unwrap_or(1).max(1),
            error_limit: u32::try_from(a.error_limit).unwrap_or(1).max(1),
            checks,
        }
    });
    let deadline = Deadline {
        after: strategy
            .progress_deadline
            .as_deref()
            .and_then(|text| {
                let field = "spec.strategy.progressDeadline";
                let after = parse_duration(field, text, problem)?;
                if after < MIN_PROGRESS_DEADLINE {
                    problem(
                        field,
                        format!("{text} is shorter than {MIN_PROGRESS_DEADLINE:?}: pods need time to be scheduled and to start"),
                    );
                }
                Some(after)
            })
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE),
        abort: strategy.progress_deadline_action == Some(DeadlineAction::Abort),
    };
    Some(Plan {
        steps,
        analysis,
        deadline,
    })
}

/// The shortest progress deadline accepted: less would give up on pods that merely take a moment
/// to be scheduled and become ready.
const MIN_PROGRESS_DEADLINE: Duration = Duration::from_secs(10);

/// One check of the spec as the rollout judges it: a built-in one with the spec's tuning over its
/// defaults, or the user's own query.
fn check_of(
    spec: &CanaryReleaseSpec,
    check: &CheckSpec,
    at: &str,
    problem: &mut impl FnMut(&str, String),
) -> Option<Check> {
    let builtin = check.builtin.map(BuiltinCheck::builtin);
    let name = match (&check.name, builtin) {
        (Some(name), _) => name.clone(),
        (None, Some(b)) => b.name().to_owned(),
        (None, None) => {
            problem(
                &format!("{at}.name"),
                "a check of your own needs a name".to_owned(),
            );
            return None;
        }
    };
    let comparison = check.compare_to_stable.as_ref().map(|c| Comparison {
        min_ratio: c.min_ratio,
        max_ratio: c.max_ratio,
        max_increase: c.max_increase,
    });
    let (rule, bounds, action) = match (builtin, &check.query) {
        (Some(_), Some(_)) | (None, None) => {
            problem(
                at,
                "set query (a check of your own) or builtin, not both".to_owned(),
            );
            return None;
        }
        (None, Some(query)) => {
            let unknown = template::unknown(query);
            if !unknown.is_empty() {
                let known: Vec<String> = template::PLACEHOLDERS
                    .iter()
                    .map(|(p, _)| format!("{{{{{p}}}}}"))
                    .collect();
                problem(
                    &format!("{at}.query"),
                    format!(
                        "unknown placeholder {}; known: {}",
                        unknown.join(", "),
                        known.join(", ")
                    ),
                );
            }
            if query.trim().is_empty() {
                problem(&format!("{at}.query"), "is empty".to_owned());
            }
            if check.min_samples.is_some() {
                problem(
                    &format!("{at}.minSamples"),
                    "applies to built-in checks only: a query of your own has no request count"
                        .to_owned(),
                );
            }
            let bounds = Bounds {
                min: check.min,
                max: check.max,
                stable: comparison,
            };
            let rule = Rule::Value {
                query: query.clone(),
                unit: Unit::Plain,
            };
            (rule, bounds, Action::Rollback)
        }
        (Some(b), None) => {
            let defaults = b.default_bounds();
            let bounds = Bounds {
                min: check.min.or(defaults.min),
                max: check.max.or(defaults.max),
                stable: comparison.or(defaults.stable),
            };
            if b.is_rate() {
                let lower = bounds.min.is_some()
                    || bounds
                        .stable
                        .as_ref()
                        .is_some_and(|c| c.min_ratio.is_some());
                if lower {
                    problem(
                        at,
                        format!(
                            "{} is a share of requests judged against upper bounds: min and minRatio do not apply",
                            b.name()
                        ),
                    );
                }
                if check.min_samples.is_some() {
                    problem(
                        &format!("{at}.minSamples"),
                        format!(
                            "{} is judged by the exact interval of its counts, which already accounts for the sample size",
                            b.name()
                        ),
                    );
                }
                if bounds.max.is_some_and(|m| !(0.0..=1.0).contains(&m)) {
                    problem(
                        &format!("{at}.max"),
                        format!("{} is a share between 0 and 1 (0.02 is 2%)", b.name()),
                    );
                }
            }
            let mut price = |version: Option<&VersionSpec>, field: &str| {
                let pricing = version.and_then(|v| v.pricing.as_ref());
                if b == Builtin::CostPerRequest && version.is_some() && pricing.is_none() {
                    problem(
                        &format!("{field}.pricing"),
                        format!(
                            "cost-per-request needs each version's pricing (model {})",
                            version.map_or("", |v| v.model.as_str())
                        ),
                    );
                }
                pricing.map_or_else(Price::default, |p| Price {
                    input_per_million: p.input_per_million_tokens,
                    output_per_million: p.output_per_million_tokens,
                })
            };
            let prices = (
                price(spec.canary.as_ref(), "spec.canary"),
                price(Some(&spec.stable), "spec.stable"),
            );
            let min_samples = check
                .min_samples
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(builtin::DEFAULT_MIN_SAMPLES);
            let action = b.default_action();
            (b.rule(min_samples, prices), bounds, action)
        }
    };
    let action = match check.action {
        Some(CheckAction::Rollback) => Action::Rollback,
        Some(CheckAction::StepBack) => Action::StepBack,
        Some(CheckAction::Warn) => Action::Warn,
        None => action,
    };
    if bounds.min.is_none()
        && bounds.max.is_none()
        && bounds.stable.as_ref().is_none_or(|c| {
            c.min_ratio.is_none() && c.max_ratio.is_none() && c.max_increase.is_none()
        })
    {
        problem(at, "a check needs a bound: min, max or compareToStable with minRatio, maxRatio or maxIncrease".to_owned());
    }
    if let (Some(min), Some(max)) = (check.min, check.max)
        && min > max
    {
        problem(&format!("{at}.min"), format!("{min} exceeds max {max}"));
    }
    if let Some(c) = &check.compare_to_stable {
        if let (Some(min), Some(max)) = (c.min_ratio, c.max_ratio)
            && min > max
        {
            problem(
                &format!("{at}.compareToStable.minRatio"),
                format!("{min} exceeds maxRatio {max}"),
            );
        }
        for (field, value) in [
            ("minRatio", c.min_ratio),
            ("maxRatio", c.max_ratio),
            ("maxIncrease", c.max_increase),
        ] {
            if value.is_some_and(|v| v < 0.0) {
                problem(
                    &format!("{at}.compareToStable.{field}"),
                    "cannot be negative".to_owned(),
                );
            }
        }
    }
    Some(Check {
        name,
        rule,
        bounds,
        action,
        builtin,
    })
}

/// A Go duration (as kubectl and Kubernetes write them), not negative.
pub fn parse_duration(
    field: &str,
    text: &str,
    problem: &mut impl FnMut(&str, String),
) -> Option<Duration> {
    match text.trim().parse::<kube::core::Duration>() {
        Ok(d) if d.is_negative() => {
            problem(field, format!("{text:?} is negative"));
            None
        }
        Ok(d) => Some(Duration::from(d)),
        Err(e) => {
            problem(
                field,
                format!("{text:?} is not a duration like 30s, 5m or 1h30m: {e}"),
            );
            None
        }
    }
}

/// An http(s) URL with a host, and nothing a base address cannot have (query, fragment).
fn check_address(address: &str) -> Result<(), String> {
    let uri: http::Uri = address
        .parse()
        .map_err(|e| format!("{address:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("{address:?} must start with http:// or https://"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{address:?} names no host"));
    }
    if uri.query().is_some() || address.contains('#') {
        return Err(format!(
            "{address:?} must be a base URL, without ?query or #fragment"
        ));
    }
    Ok(())
}
