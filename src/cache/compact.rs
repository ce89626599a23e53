//! What the cache keeps of each kind: the fields the server fills in and the operator never sets
//! are dropped before an object is stored ([`Compact`]).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::gateway_api::HTTPRoute;
use crate::api::istio::{DestinationRule, Gateway, VirtualService};

/// A kind whose objects can be cached compactly: it names what the server adds to them.
pub trait Compact: Resource<DynamicType = ()> + Serialize + DeserializeOwned {
    /// Paths (`*` stands for every element of a list) the server fills in or defaults and the
    /// operator never sets, so they never take part in a comparison. A path listed here that a
    /// builder did set would make every comparison fail; `tests::built_children_survive_the_cache`
    /// guards against that.
    const SERVER_FIELDS: &'static [&'static [&'static str]];

    /// Trims what the server reports down to what the operator reads, in the JSON form, after
    /// [`Self::SERVER_FIELDS`] are gone. A change in what is left triggers a reconcile.
    fn trim(_value: &mut Value) {}
}

/// Metadata fields every object carries that only the server sets.
pub(super) const SERVER_METADATA: &[&[&str]] = &[
    &["metadata", "creationTimestamp"],
    &["metadata", "managedFields"],
    &["metadata", "selfLink"],
    &[
        "metadata",
        "annotations",
        "kubectl.kubernetes.io/last-applied-configuration",
    ],
];

/// Identity fields the entry holds apart (or as its key), so the JSON does not hold them twice.
pub(super) const IDENTITY: &[&str] = &["name", "namespace", "uid", "resourceVersion", "generation"];

impl Compact for ConfigMap {
    const SERVER_FIELDS: &'static [&'static [&'static str]] = &[];
}

impl Compact for Deployment {
    // The replica counts and observedGeneration stay, as the release's status is computed from
    // them; of the conditions only those that say why pods are missing (see `trim`).
    const SERVER_FIELDS: &'static [&'static [&'static str]] = &[
        &[
            "metadata",
            "annotations",
            "deployment.kubernetes.io/revision",
        ],
        &["spec", "progressDeadlineSeconds"],
        &["spec", "revisionHistoryLimit"],
        &["spec", "strategy"],
        &["spec", "template", "metadata", "creationTimestamp"],
        &["spec", "template", "spec", "dnsPolicy"],
        &["spec", "template", "spec", "restartPolicy"],
        &["spec", "template", "spec", "schedulerName"],
        &["spec", "template", "spec", "securityContext"],
        &["spec", "template", "spec", "terminationGracePeriodSeconds"],
        &[
            "spec",
            "template",
            "spec",
            "containers",
            "*",
            "terminationMessagePath",
        ],
        &[
            "spec",
            "template",
            "spec",
            "containers",
            "*",
            "terminationMessagePolicy",
        ],
        &[
            "spec",
            "template",
            "spec",
            "containers",
            "*",
            "imagePullPolicy",
        ],
    ];

    /// Keeps the conditions that say why pods are missing (`ReplicaFailure` true, `Progressing`
    /// false), which a rollout waiting for its canary quotes, without their times: a healthy
    /// Deployment keeps none, and their timestamps would trigger reconciles that change nothing.
    fn trim(value: &mut Value) {
        let Some(status) = value.get_mut("status").and_then(Value::as_object_mut) else {
            return;
        };
        let kept: Vec<Value> = status
            .remove("conditions")
            .and_then(|c| match c {
                Value::Array(all) => Some(all),
                _ => None,
            })
            .unwrap_or_default()
            .into_iter()
            .filter(|c| says_pods_are_missing(c["type"].as_str(), c["status"].as_str()))
            .map(|mut c| {
                if let Some(m) = c.as_object_mut() {
                    m.retain(|k, _| matches!(k.as_str(), "type" | "status" | "reason" | "message"));
                }
                c
            })
            .collect();
        if !kept.is_empty() {
            status.insert("conditions".to_owned(), Value::Array(kept));
        }
    }
}

/// Whether a Deployment condition (its type and status) says why pods are missing: a pod it could
/// not create (`ReplicaFailure` true) or a rollout past its own deadline (`Progressing` false).
/// The cache keeps these and no others; `reconcile::deployment_state` quotes them.
pub fn says_pods_are_missing(type_: Option<&str>, status: Option<&str>) -> bool {
    matches!(
        (type_, status),
        (Some("ReplicaFailure"), Some("True")) | (Some("Progressing"), Some("False"))
    )
}

impl Compact for HorizontalPodAutoscaler {
    const SERVER_FIELDS: &'static [&'static [&'static str]] = &[&["status"]];
}

impl Compact for Service {
    const SERVER_FIELDS: &'static [&'static [&'static str]] = &[
        &["spec", "clusterIP"],
        &["spec", "clusterIPs"],
        &["spec", "internalTrafficPolicy"],
        &["spec", "ipFamilies"],
        &["spec", "ipFamilyPolicy"],
        &["spec", "sessionAffinity"],
        &["status"],
    ];
}

impl Compact for DestinationRule {
    const SERVER_FIELDS: &'static [&'static [&'static str]] = &[&["status"]];
}

impl Compact for Gateway {
    const SERVER_FIELDS: &'static [&'static [&'static str]] = &[&["status"]];
}

impl Compact for VirtualService {
    const SERVER_FIELDS: &'static [&'static [&'static str]] = &[&["status"]];
}

// The status stays: it is where the Gateways say whether they accepted the route.
impl Compact for HTTPRoute {
    const SERVER_FIELDS: &'static [&'static [&'static str]] = &[];
}

/// Removes the field at `path` (and below), where a `*` segment means every element of a list.
pub(super) fn remove(value: &mut Value, path: &[&str]) {
    match (path, value) {
        ([last], Value::Object(map)) => {
            map.remove(*last);
        }
        (["*", rest @ ..], Value::Array(items)) => {
            for item in items {
                remove(item, rest);
            }
        }
        ([first, rest @ ..], Value::Object(map)) => {
            if let Some(child) = map.get_mut(*first) {
                remove(child, rest);
            }
        }
        _ => {}
    }
}
