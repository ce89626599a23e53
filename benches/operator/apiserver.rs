//! The apiserver's own request counts (`apiserver_request_total`), so that the operator's figures
//! do not rest on its own bookkeeping. The apiserver counts every client, so each figure says whose
//! requests it may include.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use canary_operator::api::TrafficProvider;
use kube::{Client, Resource};
use serde_json::{Value, json};

/// Every child kind's plural (the one list, `canary_operator::with_child_kinds!`), with whether
/// it is a traffic provider's kind. Events are left out: the controller-manager records them too
/// (the HPA controller, for one, every time it cannot read metrics), so they say nothing about
/// the operator.
static CHILD_KINDS: LazyLock<Vec<(String, bool)>> = LazyLock::new(|| {
    macro_rules! plurals {
        ($($field:ident: $kind:ty => $policy:ident),* $(,)?) => {
            vec![$((
                <$kind as Resource>::plural(&()).into_owned(),
                TrafficProvider::of_group(&<$kind as Resource>::group(&())).is_some(),
            ),)*]
        };
    }
    canary_operator::with_child_kinds!(plurals)
});

/// Kinds the operator writes: its release (with the status subresource) and every child kind.
fn is_operator_kind(resource: &str) -> bool {
    resource == "canaryreleases" || CHILD_KINDS.iter().any(|(plural, _)| plural == resource)
}

/// Kinds nothing but the operator (and, in the weight-shift phase, the bench's own edits) writes:
/// its release, and the traffic providers' kinds (their status, which a gateway's controller
/// writes, aside).
fn is_exclusive(series: &Series) -> bool {
    series.resource == "canaryreleases"
        || (series.subresource.is_empty()
            && CHILD_KINDS
                .iter()
                .any(|(plural, routing)| *routing && *plural == series.resource))
}

/// The apiserver's names for writes: APPLY is a server-side apply PATCH.
const WRITE_VERBS: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

/// One series of `apiserver_request_total`, summed over response codes and versions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    verb: String,
    resource: String,
    subresource: String,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot(BTreeMap<Series, f64>);

/// Reads the apiserver's `/metrics` (the admin user may). `None` if it cannot.
pub async fn snapshot(client: &Client) -> Option<Snapshot> {
    let request = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = client.request_text(request).await.ok()?;
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let labels = parse_labels(labels);
        let label = |key: &str| labels.get(key).cloned().unwrap_or_default();
        let series = Series {
            verb: label("verb"),
            resource: label("resource"),
            subresource: label("subresource"),
        };
        *counts.entry(series).or_insert(0.0) += value;
    }
    Some(Snapshot(counts))
}

/// `a="x",b="y"` into a map; values are Prometheus-escaped (`\"`, `\\`, `\n`).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                other => value.push(other),
            }
        }
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// Request counts between two snapshots.
#[derive(Clone, Debug, Default)]
pub struct Delta(BTreeMap<Series, u64>);

impl Snapshot {
    pub fn since(&self, before: &Snapshot) -> Delta {
        let mut delta = BTreeMap::new();
        for (series, value) in &self.0 {
            let old = before.0.get(series).copied().unwrap_or(0.0);
            let n = (value - old).round();
            if n > 0.0 {
                delta.insert(series.clone(), n as u64);
            }
        }
        Delta(delta)
    }
}

impl Delta {
    fn sum(&self, keep: impl Fn(&Series) -> bool) -> u64 {
        self.0.iter().filter(|(s, _)| keep(s)).map(|(_, n)| n).sum()
    }

    /// Writes to the kinds the operator writes. The operator never writes a child's status, so
    /// status writes (the deployment and HPA controllers') are left out; what remains may still
    /// include the deployment controller's revision annotation on new Deployments.
    pub fn operator_kind_writes(&self) -> u64 {
        self.sum(|s| {
            is_write(s)
                && is_operator_kind(&s.resource)
                && (s.subresource.is_empty() || s.resource == "canaryreleases")
        })
    }

    /// Writes to CanaryReleases and the traffic providers' kinds, which only the operator (and the bench's own
    /// weight edits) write.
    pub fn exclusive_kind_writes(&self) -> u64 {
        self.sum(|s| is_write(s) && is_exclusive(s))
    }

    /// GETs and LISTs of the kinds the operator reads (from any client). Subresources are left
    /// out: the operator reads none, and the HPA controller reads `deployments/scale` of every
    /// HPA's target every 15 s.
    pub fn operator_kind_reads(&self) -> u64 {
        self.sum(|s| {
            (s.verb == "GET" || s.verb == "LIST")
                && s.subresource.is_empty()
                && is_operator_kind(&s.resource)
        })
    }

    pub fn all_writes(&self) -> u64 {
        self.sum(is_write)
    }

    /// Writes to `resource`'s `subresource` ("" for the object itself), by any client.
    pub fn writes_to(&self, resource: &str, subresource: &str) -> u64 {
        self.sum(|s| is_write(s) && s.resource == resource && s.subresource == subresource)
    }

    /// Objects of `resource` created, by any client.
    pub fn creates(&self, resource: &str) -> u64 {
        self.sum(|s| s.verb == "POST" && s.resource == resource && s.subresource.is_empty())
    }

    /// Every non-zero series, as `{"VERB resource[/subresource]": n}`.
    pub fn to_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        for (s, n) in &self.0 {
            let resource = if s.resource.is_empty() {
                "(non-resource)".to_owned()
            } else if s.subresource.is_empty() {
                s.resource.clone()
            } else {
                format!("{}/{}", s.resource, s.subresource)
            };
            map.insert(format!("{} {resource}", s.verb), json!(n));
        }
        Value::Object(map)
    }
}

fn is_write(s: &Series) -> bool {
    WRITE_VERBS.contains(&s.verb.as_str())
}
