//! `status`: where a release stands, at a glance. Reading is in [`gather`]; the summary
//! ([`summarize`]) and its rendering are pure, so they are tested against fixtures.

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::Serialize;

use super::Error;
use super::cluster::Target;
use super::table;
use crate::api::{
    BuiltinCheck, CanaryRelease, RolloutStatus, StepSpec, VersionSpec, VersionStatus,
};
use crate::rollout::Unit;

/// Events shown in the text output; `kubectl describe` shows a similar handful.
const EVENTS_SHOWN: usize = 10;

/// The summary `status` prints, and emits with `-o json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub name: String,
    pub namespace: String,
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    /// `spec.weight`: percent asked for the canary (absent for an automatic release).
    pub weight: Option<i32>,
    /// The weight an automatic rollout gives the canary now, from `status.rollout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_weight: Option<i32>,
    /// An automatic release's steps, as declared.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepSpec>,
    /// Where its rollout stands, from `status.rollout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Each declared check's name and the unit its values are shown in.
    #[serde(skip)]
    pub checks: Vec<(String, Unit)>,
    pub versions: Vec<VersionSummary>,
    pub conditions: Vec<ConditionSummary>,
    /// Oldest first, at most the most recent few.
    pub events: Vec<EventSummary>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionSummary {
    /// `stable` or `canary`.
    pub role: &'static str,
    pub name: String,
    pub model: String,
    pub image: String,
    /// Percent of traffic the route (VirtualService or HTTPRoute) sends to this version, from `status`; absent until
    /// the operator has applied the split.
    pub weight: Option<i32>,
    pub desired_replicas: Option<i32>,
    pub ready_replicas: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionSummary {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: Time,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSummary {
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub count: i32,
    pub last_seen: Option<Time>,
}

/// Reads the release and its Events.
pub async fn gather(target: &Target, name: &str) -> Result<Summary, Error> {
    let release = target.release(name).await?;
    let events: Api<Event> = Api::namespaced(target.client.clone(), &target.namespace);
    // By uid rather than name: a release deleted and created again under the same name would
    // otherwise show its predecessor's history.
    let selector = match release.uid() {
        Some(uid) => format!("involvedObject.uid={uid}"),
        None => format!("involvedObject.kind=CanaryRelease,involvedObject.name={name}"),
    };
    let events = events
        .list(&ListParams::default().fields(&selector))
        .await?
        .items;
    Ok(summarize(&release, &events))
}

/// The summary of a release and the Events about it.
pub fn summarize(release: &CanaryRelease, events: &[Event]) -> Summary {
    let status = release.status.clone().unwrap_or_default();
    let spec = &release.spec;
    let version = |role: &'static str,
                   declared: &VersionSpec,
                   deployed: Option<&VersionStatus>,
                   weight: Option<i32>| {
        // What is deployed describes the version only while it is the one declared; after a
        // rename the status still shows the old version until the operator catches up.
        let deployed = deployed.filter(|d| d.name == declared.name);
        VersionSummary {
            role,
            name: declared.name.clone(),
            model: declared.model.clone(),
            image: deployed
                .map(|d| d.image.clone())
                .or_else(|| declared.image.clone())
                .unwrap_or_else(|| spec.image.clone()),
            weight,
            desired_replicas: deployed.map(|d| d.desired_replicas),
            ready_replicas: deployed.map(|d| d.ready_replicas),
        }
    };
    let mut events: Vec<EventSummary> = events.iter().map(event_summary).collect();
    events.sort_by_key(|e| e.last_seen.as_ref().map(|t| t.0));
    let skip = events.len().saturating_sub(EVENTS_SHOWN);
    Summary {
        name: release.name_any(),
        namespace: release.namespace().unwrap_or_default(),
        generation: release.metadata.generation,
        observed_generation: status.observed_generation,
        weight: spec.weight,
        rollout_weight: status.rollout.as_ref().map(|r| r.weight),
        steps: spec
            .strategy
            .as_ref()
            .map(|s| s.steps.clone())
            .unwrap_or_default(),
        rollout: status.rollout.clone(),
        checks: spec
            .analysis
            .iter()
            .flat_map(|a| &a.checks)
            .filter_map(|c| {
                let builtin = c.builtin.map(BuiltinCheck::builtin);
                let name = c.name.clone().or(builtin.map(|b| b.name().to_owned()))?;
                Some((name, builtin.map_or(Unit::Plain, |b| b.unit())))
            })
            .collect(),
        versions: std::iter::once(version(
            "stable",
            &spec.stable,
            status.stable.as_ref(),
            status.stable_weight,
        ))
        .chain(spec.canary.as_ref().map(|canary| {
            version(
                "canary",
                canary,
                status.canary.as_ref(),
                status.canary_weight,
            )
        }))
        .collect(),
        conditions: status
            .conditions
            .iter()
            .map(|c| ConditionSummary {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
            .collect(),
        events: events.into_iter().skip(skip).collect(),
    }
}

fn event_summary(event: &Event) -> EventSummary {
    // Events written through events.k8s.io carry their time in eventTime/series, those written
    // through core/v1 in lastTimestamp; the most recent one present is when it was last seen.
    let series_time = event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| Time(t.0));
    let last_seen = [
        series_time,
        event.last_timestamp.clone(),
        event.event_time.as_ref().map(|t| Time(t.0)),
        event.metadata.creation_timestamp.clone(),
    ]
    .into_iter()
    .flatten()
    .max_by_key(|t| t.0);
    EventSummary {
        type_: event.type_.clone().unwrap_or_default(),
        reason: event.reason.clone().unwrap_or_default(),
        message: event.message.clone().unwrap_or_default(),
        count: event
            .series
            .as_ref()
            .and_then(|s| s.count)
            .or(event.count)
            .unwrap_or(1),
        last_seen,
    }
}

/// `5s`, `3m`, `2h`, `4d`: kubectl's ages.
impl Summary {
    /// The steps as a progress list (done, current, to come) and the checks as last measured.
    fn render_rollout(&self, now: Timestamp) -> String {
        let mut out = String::new();
        let Some(r) = &self.rollout else {
            out.push_str("Rollout:     not started; is the operator running?\n");
            return out;
        };
        let phase = match &r.pause_reason {
            Some(why) => format!("{} ({why})", r.phase),
            None => r.phase.clone(),
        };
        out.push_str(&format!("Rollout:     {phase}, revision {}\n", r.revision));
        if !r.message.is_empty() {
            out.push_str(&format!("             {}\n", r.message));
        }
        let current = usize::try_from(r.step - 1).unwrap_or_default();
        let finished = matches!(r.phase.as_str(), "Promoted");
        let rows: Vec<Vec<String>> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let mark = match i.cmp(&current) {
                    _ if finished => "done",
                    std::cmp::Ordering::Less => "done",
                    std::cmp::Ordering::Equal => match r.phase.as_str() {
                        "Progressing" | "Paused" => "now",
                        "RolledBack" => "failed",
                        "Aborted" => "aborted",
                        _ => "",
                    },
                    std::cmp::Ordering::Greater => "",
                };
                let since = if i == current && mark == "now" {
                    match &r.weight_applied_time {
                        Some(t) => format!("for {}", age(Some(t), now)),
                        None => "waiting for replicas".to_owned(),
                    }
                } else {
                    String::new()
                };
                vec![
                    (i + 1).to_string(),
                    format!("{}%", step.weight),
                    step.duration.clone(),
                    if step.approval { "approval" } else { "" }.to_owned(),
                    mark.to_owned(),
                    since,
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["STEP", "WEIGHT", "DURATION", "GATE", "STATE", "SINCE"],
            &rows,
        ));
        if !r.checks.is_empty() {
            out.push_str(&format!(
                "\nChecks (measured {} ago):\n",
                age(r.last_measurement_time.as_ref(), now)
            ));
            let unit = |name: &str| {
                self.checks
                    .iter()
                    .find(|(check, _)| check == name)
                    .map_or(Unit::Plain, |(_, unit)| *unit)
            };
            let number = |v: Option<f64>, unit: Unit| v.map_or("-".to_owned(), |v| unit.show(v));
            let size = |n: Option<i64>| n.map_or("-".to_owned(), |n| n.to_string());
            let rows: Vec<Vec<String>> = r
                .checks
                .iter()
                .map(|c| {
                    let unit = unit(&c.name);
                    vec![
                        c.name.clone(),
                        number(c.stable_value, unit),
                        number(c.value, unit),
                        c.bound.clone(),
                        format!("{}/{}", size(c.stable_sample_size), size(c.sample_size)),
                        c.verdict.clone(),
                        format!(
                            "{}/{}/{}/{}",
                            c.passes, c.failures, c.inconclusive, c.errors
                        ),
                    ]
                })
                .collect();
            out.push_str(&table::render(
                &[
                    "CHECK",
                    "STABLE",
                    "CANARY",
                    "BOUND",
                    "SAMPLES (STABLE/CANARY)",
                    "VERDICT",
                    "PASS/FAIL/NODATA/ERR",
                ],
                &rows,
            ));
            for c in &r.checks {
                let warn = if c.action == "Warn" {
                    " (warn only)"
                } else {
                    ""
                };
                out.push_str(&format!("  {}{warn}: {}\n", c.name, c.message));
            }
        }
        out
    }
}

pub fn age(since: Option<&Time>, now: Timestamp) -> String {
    let Some(since) = since else {
        return "<unknown>".to_owned();
    };
    let secs = now.as_second().saturating_sub(since.0.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

impl Summary {
    /// The summary as a person reads it; `now` makes ages testable.
    pub fn render(&self, now: Timestamp) -> String {
        let mut out = String::new();
        let stable = self.versions.iter().find(|v| v.role == "stable");
        let canary = self.versions.iter().find(|v| v.role == "canary");
        out.push_str(&format!("Name:        {}\n", self.name));
        out.push_str(&format!("Namespace:   {}\n", self.namespace));
        let asked = self.weight.or(self.rollout_weight);
        let what = match self.weight {
            Some(_) => "spec.weight",
            None => "the rollout's weight",
        };
        let applied = match (
            stable.and_then(|v| v.weight),
            canary.and_then(|v| v.weight),
            asked,
        ) {
            (Some(s), Some(c), Some(a)) if c == a => format!("{s}% stable / {c}% canary"),
            (Some(s), Some(c), None) => format!("{s}% stable / {c}% canary"),
            (Some(s), Some(c), Some(a)) => {
                format!("{s}% stable / {c}% canary; {what} {a} is not applied yet")
            }
            (_, _, Some(a)) => format!("not applied yet ({what} {a}); is the operator running?"),
            (_, _, None) => "not applied yet; is the operator running?".to_owned(),
        };
        out.push_str(&format!("Traffic:     {applied}\n"));
        let generation = match (self.generation, self.observed_generation) {
            (Some(g), Some(o)) if g == o => format!("{g} (observed)"),
            (Some(g), Some(o)) => format!("{g} (operator has seen {o})"),
            (Some(g), None) => format!("{g} (not yet observed by the operator)"),
            (None, _) => "-".to_owned(),
        };
        out.push_str(&format!("Generation:  {generation}\n\n"));

        let rows: Vec<Vec<String>> = self
            .versions
            .iter()
            .map(|v| {
                vec![
                    v.name.clone(),
                    v.role.to_owned(),
                    v.model.clone(),
                    v.weight.map_or("-".into(), |w| format!("{w}%")),
                    match (v.ready_replicas, v.desired_replicas) {
                        (Some(r), Some(d)) => format!("{r}/{d}"),
                        _ => "-".into(),
                    },
                    v.image.clone(),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &["VERSION", "ROLE", "MODEL", "TRAFFIC", "READY", "IMAGE"],
            &rows,
        ));

        if !self.steps.is_empty() {
            out.push('\n');
            out.push_str(&self.render_rollout(now));
        }

        out.push('\n');
        if self.conditions.is_empty() {
            out.push_str("Conditions:  none yet\n");
        } else {
            let rows: Vec<Vec<String>> = self
                .conditions
                .iter()
                .map(|c| {
                    vec![
                        c.type_.clone(),
                        c.status.clone(),
                        c.reason.clone(),
                        age(Some(&c.last_transition_time), now),
                        c.message.clone(),
                    ]
                })
                .collect();
            out.push_str(&table::render(
                &["CONDITION", "STATUS", "REASON", "SINCE", "MESSAGE"],
                &rows,
            ));
        }

        out.push('\n');
        if self.events.is_empty() {
            out.push_str("Events:      none\n");
        } else {
            let rows: Vec<Vec<String>> = self
                .events
                .iter()
                .map(|e| {
                    let seen = age(e.last_seen.as_ref(), now);
                    vec![
                        if e.count > 1 {
                            format!("{seen} (x{})", e.count)
                        } else {
                            seen
                        },
                        e.type_.clone(),
                        e.reason.clone(),
                        e.message.clone(),
                    ]
                })
                .collect();
            out.push_str(&table::render(
                &["LAST SEEN", "TYPE", "REASON", "MESSAGE"],
                &rows,
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn release(status: serde_json::Value) -> CanaryRelease {
        let value = json!({
            "apiVersion": "canary.dev/v1alpha1",
            "kind": "CanaryRelease",
            "metadata": {"name": "azureopenaichat", "namespace": "azureopenai", "generation": 3, "uid": "u-1"},
            "spec": {
                "image": "registry.example/chat:1",
                "port": 5000,
                "stable": {"name": "v1", "model": "gpt-4.1"},
                "canary": {"name": "v2", "model": "gpt-4o", "image": "registry.example/chat:2"},
                "weight": 25,
                "gateway": {"existing": ["istio-system/ingress"]},
            },
            "status": status,
        });
        serde_json::from_value(value).unwrap_or_else(|e| panic!("fixture: {e}"))
    }

    fn event(reason: &str, time: &str, count: Option<i32>) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": format!("e-{reason}"), "namespace": "azureopenai"},
            "involvedObject": {"kind": "CanaryRelease", "name": "azureopenaichat"},
            "type": "Normal",
            "reason": reason,
            "message": format!("{reason} happened"),
            "count": count,
            "lastTimestamp": time,
        }))
        .unwrap_or_else(|e| panic!("event fixture: {e}"))
    }

    fn ready_status() -> serde_json::Value {
        json!({
            "observedGeneration": 3,
            "stableWeight": 75,
            "canaryWeight": 25,
            "stable": {"name": "v1", "model": "gpt-4.1", "image": "registry.example/chat:1", "desiredReplicas": 2, "readyReplicas": 2},
            "canary": {"name": "v2", "model": "gpt-4o", "image": "registry.example/chat:2", "desiredReplicas": 1, "readyReplicas": 0},
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "Available",
                "message": "75% to v1 (gpt-4.1), 25% to v2 (gpt-4o)",
                "lastTransitionTime": "2025-01-01T11:59:00Z", "observedGeneration": 3,
            }],
        })
    }

    #[test]
    fn a_ready_release_reads_at_a_glance() {
        let events = [
            event("DriftCorrected", "2025-01-01T11:50:00Z", Some(2)),
            event("Created", "2025-01-01T10:00:00Z", None),
        ];
        let summary = summarize(&release(ready_status()), &events);
        let text = summary.render(at("2025-01-01T12:00:00Z"));
        let expected = "\
Name:        azureopenaichat
Namespace:   azureopenai
Traffic:     75% stable / 25% canary
Generation:  3 (observed)

VERSION   ROLE     MODEL     TRAFFIC   READY   IMAGE
v1        stable   gpt-4.1   75%       2/2     registry.example/chat:1
v2        canary   gpt-4o    25%       0/1     registry.example/chat:2

CONDITION   STATUS   REASON      SINCE   MESSAGE
Ready       True     Available   60s     75% to v1 (gpt-4.1), 25% to v2 (gpt-4o)

LAST SEEN   TYPE     REASON           MESSAGE
2h          Normal   Created          Created happened
10m (x2)    Normal   DriftCorrected   DriftCorrected happened
";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_release_the_operator_has_not_seen_says_so() {
        let summary = summarize(&release(json!(null)), &[]);
        assert_eq!(summary.versions[1].image, "registry.example/chat:2");
        assert_eq!(summary.versions[0].ready_replicas, None);
        let text = summary.render(at("2025-01-01T12:00:00Z"));
        for expected in [
            "Traffic:     not applied yet (spec.weight 25); is the operator running?",
            "Generation:  3 (not yet observed by the operator)",
            "v1        stable   gpt-4.1   -         -       registry.example/chat:1",
            "Conditions:  none yet",
            "Events:      none",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn a_pending_weight_change_is_visible() {
        let mut status = ready_status();
        status["observedGeneration"] = json!(2);
        let mut r = release(status);
        r.spec.weight = Some(50);
        let text = summarize(&r, &[]).render(at("2025-01-01T12:00:00Z"));
        assert!(
            text.contains(
                "Traffic:     75% stable / 25% canary; spec.weight 50 is not applied yet"
            ),
            "{text}"
        );
        assert!(
            text.contains("Generation:  3 (operator has seen 2)"),
            "{text}"
        );
    }

    #[test]
    fn json_output_names_fields_like_the_api() {
        let summary = summarize(&release(ready_status()), &[]);
        let value = serde_json::to_value(&summary).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(value["weight"], 25);
        assert_eq!(value["observedGeneration"], 3);
        assert_eq!(value["versions"][1]["role"], "canary");
        assert_eq!(value["versions"][1]["readyReplicas"], 0);
        assert_eq!(value["versions"][0]["weight"], 75);
        assert_eq!(value["conditions"][0]["type"], "Ready");
        assert_eq!(
            value["conditions"][0]["lastTransitionTime"],
            "2025-01-01T11:59:00Z"
        );
    }

    #[test]
    fn ages_follow_kubectl() {
        let now = at("2025-01-03T00:00:00Z");
        let since = |t: &str| Time(at(t));
        assert_eq!(age(Some(&since("2025-01-02T23:59:05Z")), now), "55s");
        assert_eq!(age(Some(&since("2025-01-02T23:50:00Z")), now), "10m");
        assert_eq!(age(Some(&since("2025-01-02T21:00:00Z")), now), "3h");
        assert_eq!(age(Some(&since("2024-12-30T00:00:00Z")), now), "4d");
        assert_eq!(age(None, now), "<unknown>");
    }

    /// An automatic release: its steps as a progress list and its checks as last measured.
    #[test]
    fn a_rollout_shows_its_steps_and_checks() {
        let mut r: CanaryRelease =
            serde_norway::from_str(include_str!("../../examples/progressive.yaml"))
                .unwrap_or_else(|e| panic!("{e}"));
        r.status = serde_json::from_value(json!({
            "canaryWeight": 50, "stableWeight": 50,
            "rollout": {
                "phase": "Paused", "pauseReason": "AwaitingApproval", "revision": "abc",
                "message": "step 2 passed; waiting for approval", "step": 2, "steps": 3, "weight": 50,
                "stepStartTime": "2026-11-30T17:00:00Z", "weightAppliedTime": "2026-11-30T17:00:05Z",
                "lastMeasurementTime": "2026-11-30T17:09:00Z",
                "checks": [{"name": "error-rate", "verdict": "Pass", "value": 0.004, "stableValue": 0.005,
                            "message": "canary 0.004; at most 0.02; 0.8 × stable 0.005", "passes": 9,
                            "bound": "≤ 0.02 and ≤ 1.5 × stable"}]
            }
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let text = summarize(&r, &[]).render(at("2026-11-30T17:10:00Z"));
        for line in [
            "Traffic:     50% stable / 50% canary",
            "Rollout:     Paused (AwaitingApproval), revision abc",
            "1      10%      5m                    done",
            "2      50%      10m        approval   now     for 9m",
            "3      100%     5m",
            "Checks (measured 60s ago):",
            "error-rate   0.005    0.004    ≤ 0.02 and ≤ 1.5 × stable   -/-                       Pass      9/0/0/0",
            "  error-rate: canary 0.004; at most 0.02",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    /// Built-in checks print in their units, with both sample sizes and the bound.
    #[test]
    fn built_in_checks_print_as_a_table_in_their_units() {
        let mut r: CanaryRelease =
            serde_norway::from_str(include_str!("../../examples/llm-rollout.yaml"))
                .unwrap_or_else(|e| panic!("{e}"));
        r.status = serde_json::from_value(json!({
            "rollout": {
                "phase": "Progressing", "revision": "abc", "step": 1, "steps": 4, "weight": 10,
                "stepStartTime": "2026-11-30T17:00:00Z",
                "checks": [
                    {"name": "error-rate", "verdict": "Inconclusive", "value": 0.1, "stableValue": 0.0,
                     "sampleSize": 10, "stableSampleSize": 90, "bound": "≤ 2% and ≤ stable + 1 point",
                     "message": "canary 10% (1 of 10 requests) ...", "action": "Rollback"},
                    {"name": "ttft-p95", "verdict": "Fail", "value": 1.7, "stableValue": 0.2,
                     "sampleSize": 400, "stableSampleSize": 1200, "bound": "≤ 2s and ≤ 1.3 × stable",
                     "message": "m", "action": "Rollback"},
                    {"name": "cost-per-request", "verdict": "Pass", "value": 0.75, "stableValue": 0.6,
                     "message": "cheaper", "action": "Warn"}
                ]
            }
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let text = summarize(&r, &[]).render(at("2026-11-30T17:10:00Z"));
        for words in [
            "CHECK              STABLE",
            "error-rate         0%",
            "10%",
            "90/10",
            "ttft-p95           0.2s",
            "1.7s",
            "1200/400",
            "0.6 per 1k requests",
            "  cost-per-request (warn only): cheaper",
        ] {
            assert!(text.contains(words), "missing {words:?} in:\n{text}");
        }
    }
}
