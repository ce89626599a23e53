//! Pure: turns a `CanaryRelease` into the one value decide and build read ([`Validated`], free of
//! Kubernetes types), or into the list of problems the schema could not catch. No I/O.
//!
//! The apiserver already enforces ranges, patterns and the CEL rules in the CRD; what is checked
//! here needs knowledge the schema lacks (which names the children get, what the model variable is
//! called, what looks like a secret).

mod rollout;
mod traffic;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use self::rollout::strategy_plan;
use self::traffic::{stickiness, traffic};
use super::credentials;
use super::decide::{Automatic, Strategy};
use super::names::{is_dns1035_label, is_env_var_name};
use super::validated::{Autoscaling, Claim, Resources, Role, Validated, Version};
use crate::api::{AutoscalingSpec, CanaryRelease, TrafficProvider, VersionSpec};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CheckSpec;
    use crate::api::{
        CookieStickiness, GatewayApiSpec, HeaderStickiness, IngressSpec, ParentRefSpec,
        StickinessSpec, TrafficSpec,
    };
    use crate::reconcile::names::*;
    use crate::rollout::*;

    fn gw(r: &mut CanaryRelease) -> &mut IngressSpec {
        r.spec.gateway.get_or_insert_with(|| IngressSpec {
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
            serde_norway::from_str(include_str!("../../../examples/progressive.yaml"))
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
            serde_norway::from_str(include_str!("../../../examples/llm-rollout.yaml"))
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
