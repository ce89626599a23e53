//! Pure: turns a `CanaryRelease` into the one value decide and build read ([`Validated`], free of
//! Kubernetes types), or into the list of problems the schema could not catch. No I/O.
//!
//! The apiserver already enforces ranges, patterns and the CEL rules in the CRD; what is checked
//! here needs knowledge the schema lacks (which names the children get, what the model variable is
//! called, what looks like a secret).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use super::credentials;
use super::decide::{Automatic, Strategy};
use super::validated::{
    Autoscaling, Claim, Gateway, GatewayApi, ParentRef, Resources, Role, Stickiness, Traffic,
    Validated, Version,
};
use crate::api::{
    AutoscalingSpec, BuiltinCheck, CanaryRelease, CanaryReleaseSpec, CheckAction, CheckSpec,
    DeadlineAction, GatewayApiSpec, GatewaySpec, TrafficProvider, VersionSpec,
};
use crate::rollout::{
    Action, Analysis, Bounds, Builtin, Check, Comparison, DEFAULT_PROGRESS_DEADLINE, Deadline,
    Plan, Price, Rule, Step, Unit, builtin, template,
};

/// One thing wrong with a spec, addressed by the field path a user would edit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem of a spec, so the user can fix them in one edit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

/// Default HTTP port of a Gateway the operator creates.
const DEFAULT_GATEWAY_PORT: i32 = 80;

pub use crate::rollout::DEFAULT_MIN_INTERVAL;

pub fn validate(release: &CanaryRelease, cluster_domain: &str) -> Result<Validated, Problems> {
    validate_with(release, cluster_domain, DEFAULT_MIN_INTERVAL)
}

pub fn validate_with(
    release: &CanaryRelease,
    cluster_domain: &str,
    min_interval: Duration,
) -> Result<Validated, Problems> {
    let mut problems = Vec::new();
    let mut problem = |field: &str, message: String| {
        problems.push(Problem {
            field: field.to_owned(),
            message,
        })
    };
    let name = release.name_any();
    let namespace = release.namespace().unwrap_or_default();
    let spec = &release.spec;

    if !is_dns1035_label(&name) {
        problem(
            "metadata.name",
            format!(
                "{name:?} cannot name the release's Service: use at most 63 lowercase letters, digits and '-', starting with a letter"
            ),
        );
    }
    if spec.image.chars().any(char::is_whitespace) {
        problem(
            "spec.image",
            format!("{:?} contains whitespace", spec.image),
        );
    }
    let rules = ConfigRules {
        model_env: &spec.model_env,
        not_secret: &spec.not_secret,
    };
    rules.check("spec.config", &spec.config, &mut problem);
    let declared = [
        ("spec.stable", Some(&spec.stable)),
        ("spec.canary", spec.canary.as_ref()),
    ];
    for (field, version) in declared.iter().filter_map(|(f, v)| Some((*f, (*v)?))) {
        rules.check(&format!("{field}.config"), &version.config, &mut problem);
        if let Some(image) = &version.image
            && image.chars().any(char::is_whitespace)
        {
            problem(
                &format!("{field}.image"),
                format!("{image:?} contains whitespace"),
            );
        }
    }
    for (i, key) in spec.not_secret.iter().enumerate() {
        let known = spec.config.contains_key(key)
            || spec.stable.config.contains_key(key)
            || spec
                .canary
                .as_ref()
                .is_some_and(|c| c.config.contains_key(key));
        if !known {
            problem(
                &format!("spec.notSecret[{i}]"),
                format!(
                    "{key:?} is not a key of spec.config or of a version's config; remove it or fix its spelling"
                ),
            );
        }
    }
    let traffic = traffic(spec, &name, &mut problem);
    let stickiness = stickiness(spec, &mut problem);

    let plan = strategy_plan(spec, min_interval, &mut problem);

    // Children name their controller by name and uid; a release read from the API server has
    // both, one built in memory may not.
    let uid = match (&release.metadata.name, &release.metadata.uid) {
        (Some(_), Some(uid)) => uid.clone(),
        _ => {
            problem("metadata.uid", "the release has no uid yet".to_owned());
            String::new()
        }
    };
    if !problems.is_empty() {
        return Err(Problems(problems));
    }

    let version = |role, v: &VersionSpec| Version {
        role,
        object_name: format!("{name}-{}", v.name),
        name: v.name.clone(),
        model: v.model.clone(),
        image: v.image.clone().unwrap_or_else(|| spec.image.clone()),
        config: {
            let mut config = spec.config.clone();
            config.extend(v.config.clone());
            config.insert(spec.model_env.clone(), v.model.clone());
            config
        },
        resources: v.resources.as_ref().map(resources),
        replicas: match spec.autoscaling {
            Some(_) => None,
            None => Some(v.replicas.unwrap_or(1)),
        },
    };
    let stable = version(Role::Stable, &spec.stable);
    let canary = spec.canary.as_ref().map(|c| version(Role::Canary, c));
    let strategy = match (plan, spec.weight) {
        (Some(plan), _) => Strategy::Automatic(Box::new(Automatic {
            plan,
            revision: canary.as_ref().map(Version::revision),
        })),
        (None, weight) => Strategy::Manual {
            canary_weight: weight.unwrap_or_default(),
        },
    };
    Ok(Validated {
        host: format!("{name}.{namespace}.svc.{cluster_domain}"),
        stable,
        canary,
        name,
        namespace,
        uid,
        port: spec.port,
        secret_name: spec.secret_ref.as_ref().map(|s| s.name.clone()),
        strategy,
        autoscaling: spec.autoscaling.as_ref().map(autoscaling),
        traffic,
        stickiness,
    })
}

/// Whether the operator runs the traffic provider `v` asks for (`--traffic-providers`): its
/// watches and grants cover only those, so another provider's objects could be neither seen nor
/// written.
pub fn provider_enabled(v: &Validated, running: &[TrafficProvider]) -> Result<(), Problems> {
    let provider = super::traffic::provider_of(&v.traffic);
    if running.contains(&provider) {
        return Ok(());
    }
    let names: Vec<&str> = running.iter().map(|p| p.as_str()).collect();
    Err(Problems(vec![Problem {
        field: "spec.traffic.provider".to_owned(),
        message: format!(
            "{} is not among the traffic providers this operator runs with ({}): start it with --traffic-providers including {0} (the chart's trafficProviders), with that provider's CRDs installed",
            provider.as_str(),
            names.join(",")
        ),
    }]))
}

/// Who routes the release's traffic and from where, with every problem of `spec.gateway` and
/// `spec.traffic` reported.
fn traffic(
    spec: &CanaryReleaseSpec,
    name: &str,
    problem: &mut impl FnMut(&str, String),
) -> Traffic {
    let settings = spec.traffic.clone().unwrap_or_default();
    if let Some(gateway) = &spec.gateway {
        check_gateway(gateway, settings.mesh, problem);
    }
    match settings.provider {
        TrafficProvider::Istio => {
            if settings.gateway_api.is_some() {
                problem(
                    "spec.traffic.gatewayAPI",
                    "applies to provider gatewayAPI; remove it or set traffic.provider: gatewayAPI"
                        .to_owned(),
                );
            }
            if spec.gateway.is_none() && !settings.mesh {
                problem(
                    "spec.gateway",
                    "set gateway (traffic enters through an Istio ingress gateway), traffic.mesh: true (calls inside the mesh only), or traffic.provider: gatewayAPI".to_owned(),
                );
            }
            let gateway = spec
                .gateway
                .as_ref()
                .map(|g| match (&g.selector, &g.existing) {
                    (_, Some(existing)) => Gateway::Existing {
                        gateways: existing.clone(),
                        hosts: g.hosts.clone(),
                    },
                    (selector, None) => Gateway::Create {
                        selector: selector.clone().unwrap_or_default(),
                        port: g.port.unwrap_or(DEFAULT_GATEWAY_PORT),
                        hosts: g.hosts.clone(),
                    },
                });
            Traffic::Istio {
                gateway,
                mesh: settings.mesh,
            }
        }
        TrafficProvider::GatewayApi => {
            if spec.gateway.is_some() {
                problem(
                    "spec.gateway",
                    "is for the istio provider; with gatewayAPI the Gateways are traffic.gatewayAPI.parentRefs".to_owned(),
                );
            }
            if settings.mesh {
                problem(
                    "spec.traffic.mesh",
                    "applies to the istio provider (a Gateway API route for calls inside the mesh names a Service as its parent, which this operator does not write)".to_owned(),
                );
            }
            Traffic::GatewayApi(gateway_api(
                spec,
                name,
                settings.gateway_api.as_ref(),
                problem,
            ))
        }
    }
}

/// The Gateway API's side of a release, with the problems of its settings and of the names its
/// version Services would get.
fn gateway_api(
    spec: &CanaryReleaseSpec,
    name: &str,
    settings: Option<&GatewayApiSpec>,
    problem: &mut impl FnMut(&str, String),
) -> GatewayApi {
    // Each version gets a Service of its own, named like its Deployment.
    for (field, version) in [
        ("spec.stable", Some(&spec.stable)),
        ("spec.canary", spec.canary.as_ref()),
    ] {
        if let Some(version) = version {
            let service = format!("{name}-{}", version.name);
            if !is_dns1035_label(&service) {
                problem(
                    &format!("{field}.name"),
                    format!(
                        "the version's Service {service:?} is not a valid Service name (at most 63 characters): shorten the release's or the version's name"
                    ),
                );
            }
        }
    }
    let Some(api) = settings else {
        problem(
            "spec.traffic.gatewayAPI",
            "is required with provider gatewayAPI: name the Gateway in parentRefs".to_owned(),
        );
        return GatewayApi {
            parent_refs: Vec::new(),
            hostnames: Vec::new(),
        };
    };
    if api.parent_refs.is_empty() {
        problem(
            "spec.traffic.gatewayAPI.parentRefs",
            "name at least one Gateway".to_owned(),
        );
    }
    let mut seen = Vec::new();
    for (i, parent) in api.parent_refs.iter().enumerate() {
        let at = format!("spec.traffic.gatewayAPI.parentRefs[{i}]");
        if !is_subdomain(&parent.name) {
            problem(
                &format!("{at}.name"),
                format!("{:?} is not a Gateway name", parent.name),
            );
        }
        if let Some(ns) = &parent.namespace
            && !is_dns1123_label(ns)
        {
            problem(
                &format!("{at}.namespace"),
                format!("{ns:?} is not a namespace name"),
            );
        }
        if let Some(section) = &parent.section_name
            && !is_subdomain(section)
        {
            problem(
                &format!("{at}.sectionName"),
                format!("{section:?} is not a listener name"),
            );
        }
        let key = (
            &parent.name,
            &parent.namespace,
            &parent.section_name,
            parent.port,
        );
        if seen.contains(&key) {
            problem(
                &at,
                "names the same Gateway (and listener) as an earlier entry".to_owned(),
            );
        }
        seen.push(key);
    }
    for (i, host) in api.hostnames.iter().enumerate() {
        if !is_route_hostname(host) {
            problem(
                &format!("spec.traffic.gatewayAPI.hostnames[{i}]"),
                format!(
                    "{host:?} is not a host name: use a lowercase DNS name such as chat.example.com or a wildcard such as *.example.com (a lone * is not allowed: leave hostnames empty to serve every host of the listener)"
                ),
            );
        }
    }
    GatewayApi {
        parent_refs: api
            .parent_refs
            .iter()
            .map(|p| ParentRef {
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                section_name: p.section_name.clone(),
                port: p.port,
            })
            .collect(),
        hostnames: api.hostnames.clone(),
    }
}

fn check_gateway(gateway: &GatewaySpec, mesh: bool, problem: &mut impl FnMut(&str, String)) {
    for (i, host) in gateway.hosts.iter().enumerate() {
        if !is_host(host) {
            problem(
                &format!("spec.gateway.hosts[{i}]"),
                format!(
                    "{host:?} is not a host name: use a DNS name such as chat.example.com, a wildcard such as *.example.com, or *"
                ),
            );
        } else if mesh && host.starts_with('*') {
            problem(
                &format!("spec.gateway.hosts[{i}]"),
                format!(
                    "{host:?} with traffic.mesh: the VirtualService, bound to the mesh too, would take every call inside the mesh to a matching host; name the host the gateway serves, such as chat.example.com"
                ),
            );
        }
    }
    for (i, reference) in gateway.existing.iter().flatten().enumerate() {
        if !is_gateway_reference(reference) {
            problem(
                &format!("spec.gateway.existing[{i}]"),
                format!("{reference:?} is not a gateway reference: use NAME or NAMESPACE/NAME"),
            );
        } else if reference == MESH_GATEWAY {
            problem(
                &format!("spec.gateway.existing[{i}]"),
                "\"mesh\" is not a gateway: set traffic.mesh: true to split calls made inside the mesh".to_owned(),
            );
        }
    }
    for (key, value) in gateway.selector.iter().flatten() {
        if !is_label_value(value) || key.is_empty() || key.len() > 317 {
            problem(
                &format!("spec.gateway.selector.{key}"),
                format!("{value:?} is not a valid label selector entry"),
            );
        }
    }
}

/// Istio's reserved gateway name for the sidecars of the mesh.
pub const MESH_GATEWAY: &str = "mesh";

/// Headers a sticky route must not be keyed on: the client or a proxy sets them for their own
/// purpose, or the operator's routes already use them.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "host",
    "set-cookie",
    "te",
    "transfer-encoding",
    "upgrade",
    "x-forwarded-for",
    "x-request-id",
];

fn stickiness(
    spec: &CanaryReleaseSpec,
    problem: &mut impl FnMut(&str, String),
) -> Option<Stickiness> {
    let sticky = spec.traffic.as_ref()?.stickiness.as_ref()?;
    match (&sticky.cookie, &sticky.header) {
        (Some(cookie), None) => {
            let field = "spec.traffic.stickiness.cookie";
            if !is_cookie_name(&cookie.name) {
                problem(
                    &format!("{field}.name"),
                    format!(
                        "{:?} is not a cookie name: use letters, digits, '_', '-' and '.'",
                        cookie.name
                    ),
                );
            }
            let max_age = match &cookie.max_age {
                Some(text) => match parse_duration(&format!("{field}.maxAge"), text, problem) {
                    Some(d) if d.as_secs() == 0 => {
                        problem(
                            &format!("{field}.maxAge"),
                            format!(
                                "{text:?} would expire the cookie at once: use at least 1s, or leave it unset for a session cookie"
                            ),
                        );
                        None
                    }
                    d => d.map(|d| d.as_secs()),
                },
                None => None,
            };
            Some(Stickiness::Cookie {
                name: cookie.name.clone(),
                max_age,
            })
        }
        (None, Some(header)) => {
            let field = "spec.traffic.stickiness.header.name";
            let name = &header.name;
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-');
            if !valid {
                problem(
                    field,
                    format!(
                        "{name:?} is not a header name: use lowercase letters, digits and '-', such as x-canary-model"
                    ),
                );
            } else if RESERVED_HEADERS.contains(&name.as_str()) {
                problem(
                    field,
                    format!(
                        "{name:?} carries something else already; choose a name of your own, such as x-canary-model"
                    ),
                );
            }
            Some(Stickiness::Header { name: name.clone() })
        }
        _ => {
            problem(
                "spec.traffic.stickiness",
                "set exactly one of cookie (browsers) or header (API clients)".to_owned(),
            );
            None
        }
    }
}

fn is_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A Gateway API hostname: a lowercase DNS name, optionally with one leading `*.` label; no IP.
fn is_route_hostname(s: &str) -> bool {
    let rest = s.strip_prefix("*.").unwrap_or(s);
    !rest.is_empty()
        && s.len() <= 253
        && rest.split('.').all(is_dns1123_label)
        && rest.parse::<std::net::Ipv4Addr>().is_err()
}

/// The automatic strategy's plan, or `None` in manual mode; every problem of the new fields is
/// reported with its field, so an apiserver without the CRD's CEL rules (or a release built in
/// memory) is held to the same rules.
fn strategy_plan(
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
fn parse_duration(
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

/// What the settings of `config` are checked against.
struct ConfigRules<'a> {
    model_env: &'a str,
    not_secret: &'a [String],
}

impl ConfigRules<'_> {
    fn check(
        &self,
        field: &str,
        config: &BTreeMap<String, String>,
        problem: &mut impl FnMut(&str, String),
    ) {
        for (key, value) in config {
            let at = format!("{field}.{key}");
            let vouched = self.not_secret.iter().any(|k| k == key);
            if !is_env_var_name(key) {
                problem(
                    &at,
                    format!(
                        "{key:?} is not a valid environment variable name (letters, digits, '_', '-', '.'; not starting with a digit)"
                    ),
                );
            } else if key == self.model_env {
                problem(
                    &at,
                    format!(
                        "{key} is set from stable.model and canary.model (spec.modelEnv); remove it from config"
                    ),
                );
            } else if vouched {
                continue;
            } else if credentials::name_looks_secret(key) {
                problem(
                    &at,
                    format!(
                        "{key} looks like a credential by its name; ConfigMaps are not for secrets: put it in a Secret and name it in spec.secretRef (or, if it is not a secret, list {key} in spec.notSecret)"
                    ),
                );
            } else if let Some(what) = credentials::value_looks_secret(value) {
                // The value itself is never repeated: this message goes to status and Events.
                problem(
                    &at,
                    format!(
                        "the value of {key} looks like a credential ({what}); ConfigMaps are not for secrets: put it in a Secret and name it in spec.secretRef (or, if it is not a secret, list {key} in spec.notSecret)"
                    ),
                );
            }
        }
    }
}

/// The container's resources as written: quantities keep the user's spelling.
fn resources(spec: &ResourceRequirements) -> Resources {
    let quantities = |map: &BTreeMap<String, Quantity>| {
        map.iter()
            .map(|(name, Quantity(quantity))| (name.clone(), quantity.clone()))
            .collect()
    };
    Resources {
        limits: spec.limits.as_ref().map(quantities),
        requests: spec.requests.as_ref().map(quantities),
        claims: spec.claims.as_ref().map(|claims| {
            claims
                .iter()
                .map(|c| Claim {
                    name: c.name.clone(),
                    request: c.request.clone(),
                })
                .collect()
        }),
    }
}

fn autoscaling(spec: &AutoscalingSpec) -> Autoscaling {
    Autoscaling {
        min_replicas: spec.min_replicas,
        max_replicas: spec.max_replicas,
        target_cpu_utilization_percentage: spec.target_cpu_utilization_percentage,
    }
}

pub fn is_dns1035_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn is_env_var_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && !bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn is_host(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let rest = s.strip_prefix("*.").unwrap_or(s);
    !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|label| {
            let label = label.to_ascii_lowercase();
            is_dns1123_label(&label)
        })
}

fn is_gateway_reference(s: &str) -> bool {
    match s.split_once('/') {
        Some((namespace, name)) => is_dns1123_label(namespace) && is_subdomain(name),
        None => is_subdomain(s),
    }
}

fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn is_label_value(s: &str) -> bool {
    let bytes = s.as_bytes();
    s.is_empty()
        || (s.len() <= 63
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        CookieStickiness, GatewayApiSpec, HeaderStickiness, ParentRefSpec, StickinessSpec,
        TrafficSpec,
    };

    fn gw(r: &mut CanaryRelease) -> &mut GatewaySpec {
        r.spec.gateway.get_or_insert_with(|| GatewaySpec {
            selector: None,
            port: None,
            existing: None,
            hosts: vec!["*".into()],
        })
    }

    fn traffic(r: &mut CanaryRelease) -> &mut TrafficSpec {
        r.spec.traffic.get_or_insert_with(TrafficSpec::default)
    }

    fn api_spec(gateway: &str) -> GatewayApiSpec {
        GatewayApiSpec {
            parent_refs: vec![ParentRefSpec {
                name: gateway.into(),
                ..ParentRefSpec::default()
            }],
            hostnames: vec!["chat.example.com".into()],
        }
    }

    /// Turns the release into a Gateway API one, and returns its settings to edit.
    fn gateway_api(r: &mut CanaryRelease) -> &mut GatewayApiSpec {
        r.spec.gateway = None;
        let traffic = traffic(r);
        traffic.provider = TrafficProvider::GatewayApi;
        traffic
            .gateway_api
            .get_or_insert_with(|| api_spec("public"))
    }
    use crate::reconcile::testing::lab_release;
    #[allow(unused_imports)]
    use crate::reconcile::testing::{canary, canary_spec};

    fn problems_of(edit: impl FnOnce(&mut CanaryRelease)) -> Vec<Problem> {
        let mut release = lab_release();
        edit(&mut release);
        match validate(&release, "cluster.local") {
            Ok(_) => Vec::new(),
            Err(Problems(problems)) => problems,
        }
    }

    #[test]
    fn lab_example_is_valid_and_resolves_defaults() {
        let v = validate(&lab_release(), "cluster.local").unwrap_or_else(|p| panic!("{p}"));
        assert_eq!(v.host, "azureopenaichat.azureopenai.svc.cluster.local");
        assert_eq!(v.strategy, Strategy::Manual { canary_weight: 25 });
        assert_eq!(v.stable.object_name, "azureopenaichat-v1");
        assert_eq!(
            canary(&v)
                .config
                .get("AZURE_MODEL_NAME")
                .map(String::as_str),
            Some("gpt-4o")
        );
        assert_eq!(
            v.stable.replicas, None,
            "autoscaled versions leave replicas to the HPA"
        );
        assert_eq!(
            canary(&v).image,
            "myregistry.azurecr.io/canarydeploymentapplication:latest"
        );
        assert_eq!(v.uid, crate::reconcile::testing::UID);
    }

    #[test]
    fn version_settings_override_shared_ones() {
        let mut release = lab_release();
        canary_spec(&mut release).image = Some("repo/app:2".into());
        canary_spec(&mut release)
            .config
            .insert("AZURE_API_URL".into(), "https://canary.example/".into());
        let v = validate(&release, "cluster.local").unwrap_or_else(|p| panic!("{p}"));
        assert_eq!(canary(&v).image, "repo/app:2");
        assert_eq!(v.stable.image, release.spec.image);
        assert_eq!(
            canary(&v).config["AZURE_API_URL"],
            "https://canary.example/"
        );
        assert_eq!(
            v.stable.config["AZURE_API_URL"],
            "https://example.openai.azure.com/"
        );
    }

    fn progressive() -> CanaryRelease {
        let mut release: CanaryRelease =
            serde_norway::from_str(include_str!("../../examples/progressive.yaml"))
                .unwrap_or_else(|e| panic!("examples/progressive.yaml: {e}"));
        release.metadata.uid = Some(crate::reconcile::testing::UID.to_owned());
        release
    }

    #[test]
    fn the_progressive_example_is_automatic() {
        let v = validate(&progressive(), "cluster.local").unwrap_or_else(|p| panic!("{p}"));
        let Strategy::Automatic(automatic) = &v.strategy else {
            panic!("not automatic: {:?}", v.strategy);
        };
        let weights: Vec<i32> = automatic.plan.steps.iter().map(|s| s.weight).collect();
        assert_eq!(weights, [10, 50, 100]);
        assert_eq!(automatic.plan.steps[1].duration, Duration::from_secs(600));
        assert!(automatic.plan.steps[1].approval);
        let analysis = automatic
            .plan
            .analysis
            .as_ref()
            .unwrap_or_else(|| panic!("no analysis"));
        assert_eq!(
            (analysis.interval, analysis.warmup, analysis.timeout),
            (
                Duration::from_secs(60),
                Duration::from_secs(60),
                Duration::from_secs(5)
            )
        );
        assert_eq!(analysis.checks.len(), 2);
        assert_eq!(automatic.revision, Some(canary(&v).revision()));
    }

    fn llm_rollout() -> CanaryRelease {
        let mut release: CanaryRelease =
            serde_norway::from_str(include_str!("../../examples/llm-rollout.yaml"))
                .unwrap_or_else(|e| panic!("examples/llm-rollout.yaml: {e}"));
        release.metadata.uid = Some(crate::reconcile::testing::UID.to_owned());
        release
    }

    fn checks_of(release: &CanaryRelease) -> Result<Vec<Check>, Problems> {
        let v = validate(release, "cluster.local")?;
        let Strategy::Automatic(automatic) = v.strategy else {
            panic!("not automatic");
        };
        Ok(automatic
            .plan
            .analysis
            .map(|a| a.checks)
            .unwrap_or_default())
    }

    #[test]
    fn built_in_checks_take_their_defaults_and_the_tuning_given() {
        let checks = checks_of(&llm_rollout()).unwrap_or_else(|p| panic!("{p}"));
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "error-rate",
                "rate-limited",
                "ttft-p95",
                "latency-p95",
                "tokens-per-second",
                "cost-per-request"
            ]
        );
        for check in &checks {
            let b = check
                .builtin
                .unwrap_or_else(|| panic!("{} is built in", check.name));
            assert_eq!(
                (check.bounds.clone(), check.action),
                (b.default_bounds(), b.default_action())
            );
        }
        let Rule::Cost {
            canary,
            stable,
            min_samples,
            ..
        } = &checks[5].rule
        else {
            panic!("cost-per-request is a cost rule: {:?}", checks[5].rule);
        };
        assert_eq!(
            (
                canary.output_per_million,
                stable.output_per_million,
                *min_samples
            ),
            (10.0, 8.0, 100)
        );

        // Tuning replaces a default one field at a time, and may rename the check.
        let mut release = llm_rollout();
        if let Some(a) = release.spec.analysis.as_mut() {
            a.checks[2].max = Some(1.0);
            a.checks[2].min_samples = Some(40);
            a.checks[2].action = Some(crate::api::CheckAction::Warn);
            a.checks[2].name = Some("first-token".to_owned());
        }
        let checks = checks_of(&release).unwrap_or_else(|p| panic!("{p}"));
        let ttft = &checks[2];
        assert_eq!(ttft.name, "first-token");
        assert_eq!(ttft.bounds.max, Some(1.0));
        assert_eq!(ttft.bounds.stable, Builtin::TtftP95.default_bounds().stable);
        assert_eq!(ttft.action, Action::Warn);
        assert!(matches!(
            ttft.rule,
            Rule::Sampled {
                min_samples: 40,
                ..
            }
        ));
    }

    /// Each case: what is wrong with a built-in check, the edit, the field and a fragment.
    #[test]
    fn rejects_bad_built_in_checks() {
        type Edit = fn(&mut CanaryRelease);
        fn checks(r: &mut CanaryRelease) -> &mut Vec<CheckSpec> {
            &mut r
                .spec
                .analysis
                .as_mut()
                .unwrap_or_else(|| panic!("no analysis"))
                .checks
        }
        let cases: [(&str, Edit, &str, &str); 6] = [
            (
                "builtin and query",
                |r| checks(r)[0].query = Some("up".to_owned()),
                "spec.analysis.checks[0]",
                "not both",
            ),
            (
                "no pricing",
                |r| canary_spec(r).pricing = None,
                "spec.canary.pricing",
                "needs each version's pricing",
            ),
            (
                "a floor on a rate",
                |r| checks(r)[1].min = Some(0.01),
                "spec.analysis.checks[1]",
                "min and minRatio do not apply",
            ),
            (
                "minSamples on a rate",
                |r| checks(r)[0].min_samples = Some(10),
                "spec.analysis.checks[0].minSamples",
                "exact interval",
            ),
            (
                "a share above 1",
                |r| checks(r)[0].max = Some(2.0),
                "spec.analysis.checks[0].max",
                "0.02 is 2%",
            ),
            (
                "the same built-in twice",
                |r| {
                    let c = checks(r)[0].clone();
                    checks(r).push(c);
                },
                "spec.analysis.checks[6].name",
                "used by an earlier check",
            ),
        ];
        for (what, edit, field, fragment) in cases {
            let mut release = llm_rollout();
            edit(&mut release);
            assert_problem(&release, what, field, fragment);
        }
    }

    /// `release` is refused with a problem at `field` whose message holds `fragment`.
    fn assert_problem(release: &CanaryRelease, what: &str, field: &str, fragment: &str) {
        let problems = match validate(release, "cluster.local") {
            Ok(_) => panic!("{what}: accepted"),
            Err(Problems(problems)) => problems,
        };
        assert!(
            problems
                .iter()
                .any(|p| p.field == field && p.message.contains(fragment)),
            "{what}: no problem at {field} mentioning {fragment:?} in {problems:?}"
        );
    }

    /// At least twelve bad inputs of the automatic mode, each reported with its field. The CRD
    /// refuses most of them at admission too (tests/rollout/admission.rs); these hold for a
    /// release that reaches the operator some other way.
    #[test]
    fn rejects_bad_automatic_specs() {
        use crate::api::{CheckSpec, ComparisonSpec, StepSpec};
        type Edit = fn(&mut CanaryRelease);
        let step = |weight, duration: &str| StepSpec {
            weight,
            duration: duration.to_owned(),
            approval: false,
        };
        fn steps(r: &mut CanaryRelease) -> &mut Vec<StepSpec> {
            &mut r
                .spec
                .strategy
                .as_mut()
                .unwrap_or_else(|| panic!("no strategy"))
                .steps
        }
        fn analysis(r: &mut CanaryRelease) -> &mut crate::api::AnalysisSpec {
            r.spec
                .analysis
                .as_mut()
                .unwrap_or_else(|| panic!("no analysis"))
        }
        fn check(r: &mut CanaryRelease) -> &mut CheckSpec {
            &mut analysis(r).checks[0]
        }
        let _ = step;
        let cases: Vec<(&str, Edit, &str, &str)> = vec![
            (
                "empty steps",
                |r| steps(r).clear(),
                "spec.strategy.steps",
                "at least one step",
            ),
            (
                "decreasing weights",
                |r| steps(r)[1].weight = 5,
                "spec.strategy.steps[1].weight",
                "strictly increasing",
            ),
            (
                "equal weights",
                |r| steps(r)[1].weight = 10,
                "spec.strategy.steps[1].weight",
                "strictly increasing",
            ),
            (
                "last weight not 100",
                |r| steps(r)[2].weight = 90,
                "spec.strategy.steps[2].weight",
                "not 100",
            ),
            (
                "weight zero",
                |r| steps(r)[0].weight = 0,
                "spec.strategy.steps[0].weight",
                "percent from 1 to 100",
            ),
            (
                "bad duration",
                |r| steps(r)[0].duration = "5 minutes".to_owned(),
                "spec.strategy.steps[0].duration",
                "not a duration",
            ),
            (
                "negative duration",
                |r| steps(r)[0].duration = "-5m".to_owned(),
                "spec.strategy.steps[0].duration",
                "negative",
            ),
            (
                "both weight and strategy",
                |r| r.spec.weight = Some(10),
                "spec.weight",
                "not both",
            ),
            (
                "neither weight nor strategy",
                |r| {
                    r.spec.strategy = None;
                    r.spec.analysis = None;
                },
                "spec.weight",
                "set weight",
            ),
            (
                "analysis without strategy",
                |r| {
                    r.spec.strategy = None;
                    r.spec.weight = Some(5);
                },
                "spec.analysis",
                "set strategy too",
            ),
            (
                "unknown placeholder",
                |r| check(r).query = Some("up{pod=\"{{pod}}\"}".to_owned()),
                "spec.analysis.checks[0].query",
                "unknown placeholder {{pod}}",
            ),
            (
                "address not a URL",
                |r| analysis(r).prometheus.address = "prometheus:9090".to_owned(),
                "spec.analysis.prometheus.address",
                "http://",
            ),
            (
                "address with a query",
                |r| analysis(r).prometheus.address = "http://p:9090/?x=1".to_owned(),
                "spec.analysis.prometheus.address",
                "base URL",
            ),
            (
                "min above max",
                |r| {
                    check(r).min = Some(1.0);
                    check(r).max = Some(0.5);
                },
                "spec.analysis.checks[0].min",
                "exceeds max",
            ),
            (
                "no bound",
                |r| {
                    check(r).max = None;
                    check(r).compare_to_stable = None;
                },
                "spec.analysis.checks[0]",
                "needs a bound",
            ),
            (
                "minRatio above maxRatio",
                |r| {
                    check(r).compare_to_stable = Some(ComparisonSpec {
                        min_ratio: Some(2.0),
                        max_ratio: Some(1.5),
                        max_increase: None,
                    })
                },
                "spec.analysis.checks[0].compareToStable.minRatio",
                "exceeds maxRatio",
            ),
            (
                "interval below the minimum",
                |r| analysis(r).interval = "1s".to_owned(),
                "spec.analysis.interval",
                "--min-analysis-interval",
            ),
            (
                "timeout longer than the interval",
                |r| analysis(r).prometheus.timeout = "2m".to_owned(),
                "spec.analysis.prometheus.timeout",
                "longer than the interval",
            ),
            (
                "zero timeout",
                |r| analysis(r).prometheus.timeout = "0s".to_owned(),
                "spec.analysis.prometheus.timeout",
                "longer than zero",
            ),
            (
                "duplicate check names",
                |r| {
                    let c = check(r).clone();
                    analysis(r).checks.push(c);
                },
                "spec.analysis.checks[2].name",
                "used by an earlier check",
            ),
            (
                "no checks",
                |r| analysis(r).checks.clear(),
                "spec.analysis.checks",
                "at least one check",
            ),
            (
                "errorLimit zero",
                |r| analysis(r).error_limit = 0,
                "spec.analysis.errorLimit",
                "below 1",
            ),
        ];
        assert!(cases.len() >= 12);
        for (what, edit, field, fragment) in cases {
            let mut release = progressive();
            edit(&mut release);
            assert_problem(&release, what, field, fragment);
        }
    }

    /// Each case: what is wrong, the edit that makes it so, the field reported and a fragment of the message.
    #[test]
    fn rejects_what_the_schema_cannot() {
        type Edit = fn(&mut CanaryRelease);
        let cases: [(&str, Edit, &str, &str); 35] = [
            (
                "not yet stored by the API server",
                |r| r.metadata.uid = None,
                "metadata.uid",
                "no uid yet",
            ),
            (
                "no name, only a prefix",
                |r| {
                    r.metadata.name = None;
                    r.metadata.generate_name = Some("chat".into());
                },
                "metadata.uid",
                "no uid yet",
            ),
            (
                "name not usable for a Service",
                |r| r.metadata.name = Some("9chat".into()),
                "metadata.name",
                "cannot name the release's Service",
            ),
            (
                "dotted name",
                |r| r.metadata.name = Some("chat.v1".into()),
                "metadata.name",
                "starting with a letter",
            ),
            (
                "model variable in config",
                |r| {
                    r.spec.config.insert("AZURE_MODEL_NAME".into(), "x".into());
                },
                "spec.config.AZURE_MODEL_NAME",
                "set from stable.model",
            ),
            (
                "API key in config",
                |r| {
                    r.spec.config.insert("AZURE_API_KEY".into(), "sk".into());
                },
                "spec.config.AZURE_API_KEY",
                "looks like a credential",
            ),
            (
                "password in a version's config",
                |r| {
                    canary_spec(r)
                        .config
                        .insert("DB_PASSWORD".into(), "x".into());
                },
                "spec.canary.config.DB_PASSWORD",
                "put it in a Secret",
            ),
            (
                "invalid variable name",
                |r| {
                    r.spec.config.insert("1BAD NAME".into(), "x".into());
                },
                "spec.config.1BAD NAME",
                "not a valid environment variable name",
            ),
            (
                "whitespace in image",
                |r| r.spec.image = "repo/app :1".into(),
                "spec.image",
                "whitespace",
            ),
            (
                "URL as host",
                |r| gw(r).hosts = vec!["http://chat.example.com".into()],
                "spec.gateway.hosts[0]",
                "not a host name",
            ),
            (
                "bad gateway reference",
                |r| {
                    gw(r).selector = None;
                    gw(r).existing = Some(vec!["a/b/c".into()]);
                },
                "spec.gateway.existing[0]",
                "NAMESPACE/NAME",
            ),
            (
                "bad selector value",
                |r| {
                    gw(r).selector = Some([("istio".to_owned(), "not a label!".to_owned())].into());
                },
                "spec.gateway.selector.istio",
                "label selector",
            ),
            (
                "mesh as an existing gateway",
                |r| {
                    gw(r).selector = None;
                    gw(r).existing = Some(vec!["mesh".into()]);
                },
                "spec.gateway.existing[0]",
                "traffic.mesh",
            ),
            (
                "no gateway and no mesh",
                |r| r.spec.gateway = None,
                "spec.gateway",
                "traffic.mesh: true",
            ),
            (
                "mesh with a wildcard host",
                |r| traffic(r).mesh = true,
                "spec.gateway.hosts[0]",
                "every call inside the mesh",
            ),
            (
                "gatewayAPI settings with istio",
                |r| traffic(r).gateway_api = Some(api_spec("public")),
                "spec.traffic.gatewayAPI",
                "provider gatewayAPI",
            ),
            (
                "gatewayAPI without its settings",
                |r| {
                    r.spec.gateway = None;
                    traffic(r).provider = TrafficProvider::GatewayApi;
                },
                "spec.traffic.gatewayAPI",
                "parentRefs",
            ),
            (
                "gatewayAPI with an Istio gateway",
                |r| {
                    traffic(r).provider = TrafficProvider::GatewayApi;
                    traffic(r).gateway_api = Some(api_spec("public"));
                },
                "spec.gateway",
                "istio provider",
            ),
            (
                "gatewayAPI with mesh",
                |r| {
                    r.spec.gateway = None;
                    traffic(r).provider = TrafficProvider::GatewayApi;
                    traffic(r).gateway_api = Some(api_spec("public"));
                    traffic(r).mesh = true;
                },
                "spec.traffic.mesh",
                "istio provider",
            ),
            (
                "no parentRefs",
                |r| gateway_api(r).parent_refs.clear(),
                "spec.traffic.gatewayAPI.parentRefs",
                "at least one Gateway",
            ),
            (
                "bad parent name",
                |r| gateway_api(r).parent_refs[0].name = "Public_GW".into(),
                "spec.traffic.gatewayAPI.parentRefs[0].name",
                "not a Gateway name",
            ),
            (
                "bad parent namespace",
                |r| gateway_api(r).parent_refs[0].namespace = Some("a/b".into()),
                "spec.traffic.gatewayAPI.parentRefs[0].namespace",
                "not a namespace",
            ),
            (
                "bad listener name",
                |r| gateway_api(r).parent_refs[0].section_name = Some("HTTP 80".into()),
                "spec.traffic.gatewayAPI.parentRefs[0].sectionName",
                "not a listener name",
            ),
            (
                "the same parent twice",
                |r| {
                    let first = gateway_api(r).parent_refs[0].clone();
                    gateway_api(r).parent_refs.push(first);
                },
                "spec.traffic.gatewayAPI.parentRefs[1]",
                "same Gateway",
            ),
            (
                "a lone * hostname",
                |r| gateway_api(r).hostnames = vec!["*".into()],
                "spec.traffic.gatewayAPI.hostnames[0]",
                "leave hostnames empty",
            ),
            (
                "an IP as hostname",
                |r| gateway_api(r).hostnames = vec!["10.0.0.1".into()],
                "spec.traffic.gatewayAPI.hostnames[0]",
                "not a host name",
            ),
            (
                "an uppercase hostname",
                |r| gateway_api(r).hostnames = vec!["Chat.example.com".into()],
                "spec.traffic.gatewayAPI.hostnames[0]",
                "lowercase",
            ),
            (
                "a version's Service name too long",
                |r| {
                    gateway_api(r);
                    r.spec.stable.name = format!("v{}", "1".repeat(60));
                },
                "spec.stable.name",
                "at most 63 characters",
            ),
            (
                "both cookie and header",
                |r| {
                    traffic(r).stickiness = Some(StickinessSpec {
                        cookie: Some(CookieStickiness {
                            name: "c".into(),
                            max_age: None,
                        }),
                        header: Some(HeaderStickiness { name: "x-c".into() }),
                    })
                },
                "spec.traffic.stickiness",
                "exactly one",
            ),
            (
                "neither cookie nor header",
                |r| traffic(r).stickiness = Some(StickinessSpec::default()),
                "spec.traffic.stickiness",
                "exactly one",
            ),
            (
                "bad cookie name",
                |r| {
                    traffic(r).stickiness = Some(StickinessSpec {
                        cookie: Some(CookieStickiness {
                            name: "my cookie;".into(),
                            max_age: None,
                        }),
                        header: None,
                    })
                },
                "spec.traffic.stickiness.cookie.name",
                "not a cookie name",
            ),
            (
                "bad cookie max age",
                |r| {
                    traffic(r).stickiness = Some(StickinessSpec {
                        cookie: Some(CookieStickiness {
                            name: "c".into(),
                            max_age: Some("a day".into()),
                        }),
                        header: None,
                    })
                },
                "spec.traffic.stickiness.cookie.maxAge",
                "not a duration",
            ),
            (
                "zero cookie max age",
                |r| {
                    traffic(r).stickiness = Some(StickinessSpec {
                        cookie: Some(CookieStickiness {
                            name: "c".into(),
                            max_age: Some("0s".into()),
                        }),
                        header: None,
                    })
                },
                "spec.traffic.stickiness.cookie.maxAge",
                "expire the cookie at once",
            ),
            (
                "bad header name",
                |r| {
                    traffic(r).stickiness = Some(StickinessSpec {
                        cookie: None,
                        header: Some(HeaderStickiness {
                            name: "X-Canary Model".into(),
                        }),
                    })
                },
                "spec.traffic.stickiness.header.name",
                "lowercase",
            ),
            (
                "a header that carries something else",
                |r| {
                    traffic(r).stickiness = Some(StickinessSpec {
                        cookie: None,
                        header: Some(HeaderStickiness {
                            name: "cookie".into(),
                        }),
                    })
                },
                "spec.traffic.stickiness.header.name",
                "carries something else",
            ),
        ];
        for (what, edit, field, fragment) in cases {
            let problems = problems_of(edit);
            assert!(
                problems
                    .iter()
                    .any(|p| p.field == field && p.message.contains(fragment)),
                "{what}: expected {field} / {fragment:?}, got {problems:?}"
            );
        }
    }

    /// Each case: the providers the operator runs with, the release's, and whether it is refused.
    #[test]
    fn a_provider_the_operator_does_not_run_is_refused_with_the_flag_to_set() {
        use TrafficProvider::{GatewayApi, Istio};
        let lab = validate(&lab_release(), "cluster.local").unwrap_or_else(|p| panic!("{p}"));
        let routed = crate::reconcile::testing::gateway_api_validated();
        let cases: [(&[TrafficProvider], &Validated, bool); 4] = [
            (&[Istio], &lab, false),
            (&[Istio], &routed, true),
            (&[GatewayApi], &lab, true),
            (&[Istio, GatewayApi], &routed, false),
        ];
        for (running, v, refused) in cases {
            let verdict = provider_enabled(v, running);
            assert_eq!(verdict.is_err(), refused, "{running:?}");
            if let Err(problems) = verdict {
                assert!(
                    problems
                        .to_string()
                        .contains("--traffic-providers including"),
                    "{problems}"
                );
            }
        }
    }

    /// The example: harmless-looking names with credentials in them, and the way out.
    #[test]
    fn credentials_by_value_and_the_not_secret_list() {
        let problems = problems_of(|r| {
            r.spec
                .config
                .insert("AUTH_HEADER".into(), "Bearer sk-proj-abc123".into());
            r.spec.config.insert("OPENAI_APIKEY2".into(), "sk-2".into());
        });
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.config.AUTH_HEADER", "spec.config.OPENAI_APIKEY2"],
            "{problems:?}"
        );
        assert!(
            problems[0].message.contains("Authorization header")
                && problems[0].message.contains("spec.notSecret"),
            "{problems:?}"
        );
        assert!(
            problems.iter().all(|p| !p.message.contains("sk-")),
            "a value is never repeated: {problems:?}"
        );

        let vouched = problems_of(|r| {
            canary_spec(r).config.insert(
                "CACHE_NAMESPACE".into(),
                "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6".into(),
            );
            r.spec.not_secret = vec!["CACHE_NAMESPACE".into()];
        });
        assert_eq!(vouched, [], "a vouched-for key passes");

        let typo = problems_of(|r| r.spec.not_secret = vec!["NO_SUCH_KEY".into()]);
        assert_eq!(typo.len(), 1, "{typo:?}");
        assert_eq!(typo[0].field, "spec.notSecret[0]");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let problems = problems_of(|r| {
            r.spec.image = "a b".into();
            r.spec.config.insert("API_TOKEN".into(), "x".into());
        });
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn hosts_and_references() {
        for host in ["*", "chat.example.com", "*.example.com", "localhost"] {
            assert!(is_host(host), "{host}");
        }
        for host in ["", "http://x", "a..b", "*.", "exa mple.com"] {
            assert!(!is_host(host), "{host}");
        }
        assert!(
            is_gateway_reference("istio-system/gw")
                && is_gateway_reference("gw")
                && is_gateway_reference("mesh")
        );
        assert!(
            !is_gateway_reference("/gw")
                && !is_gateway_reference("ns/")
                && !is_gateway_reference("A/b")
        );
    }
}
