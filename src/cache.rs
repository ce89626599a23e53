//! Compact copies of the children, as the caches keep them.
//!
//! At 1,000 releases the caches hold about 10,000 children. Kept as typed k8s-openapi objects they
//! took about 50 KB per release: every optional field of a Deployment is stored inline, and the
//! server adds defaults, status conditions with long messages and timestamps. The reconciler needs
//! far less of a child: who it is (name, uid, resourceVersion, owner, generation) to find it,
//! guard ownership and wait for its own writes, and the fields it compares with what it wants.
//!
//! So a cached child is its identity as typed metadata plus the rest as one compact JSON string,
//! without the fields the server fills in and the operator never sets. The reconciler turns it
//! back into the typed object when it compares, which costs microseconds per child.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::istio::{DestinationRule, Gateway, VirtualService};

/// A kind whose objects can be cached compactly: it names what the server adds to them.
pub trait Compact: Resource<DynamicType = ()> + Serialize + DeserializeOwned {
    /// Paths (`*` stands for every element of a list) the server fills in or defaults and the
    /// operator never sets, so they never take part in a comparison. A path listed here that a
    /// builder did set would make every comparison fail; `tests::built_children_survive_the_cache`
    /// guards against that.
    const SERVER_FIELDS: &'static [&'static [&'static str]];
}

/// Metadata fields every object carries that only the server sets.
const SERVER_METADATA: &[&[&str]] = &[
    &["metadata", "creationTimestamp"],
    &["metadata", "managedFields"],
    &["metadata", "selfLink"],
    &[
        "metadata",
        "annotations",
        "kubectl.kubernetes.io/last-applied-configuration",
    ],
];

/// Identity fields kept in the typed metadata, so the JSON does not hold them twice.
const IDENTITY: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "ownerReferences",
    "deletionTimestamp",
];

impl Compact for ConfigMap {
    const SERVER_FIELDS: &'static [&'static [&'static str]] = &[];
}

impl Compact for Deployment {
    // The status conditions go; the replica counts and observedGeneration stay, as the release's
    // status is computed from them.
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
        &["status", "conditions"],
    ];
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

/// A child as the cache keeps it; see the module documentation.
pub struct Cached<K> {
    metadata: ObjectMeta,
    /// The object without its identity and without [`Compact::SERVER_FIELDS`], as compact JSON.
    body: Box<str>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Compact> Cached<K> {
    pub fn new(object: &K) -> Self {
        let meta = object.meta();
        let metadata = ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            generation: meta.generation,
            owner_references: meta.owner_references.clone(),
            deletion_timestamp: meta.deletion_timestamp.clone(),
            ..ObjectMeta::default()
        };
        // Serializing a typed object cannot fail in practice; if it did, the empty body fails to
        // parse in `object`, and that reconcile fails and retries instead of comparing against
        // nothing.
        let body = match serde_json::to_value(object) {
            Ok(mut value) => {
                if let Some(Value::Object(m)) = value.get_mut("metadata") {
                    for field in IDENTITY {
                        m.remove(*field);
                    }
                }
                for path in SERVER_METADATA.iter().chain(K::SERVER_FIELDS) {
                    remove(&mut value, path);
                }
                value.to_string()
            }
            Err(_) => String::new(),
        };
        Cached {
            metadata,
            body: body.into_boxed_str(),
            kind: PhantomData,
        }
    }

    /// Whether `other` (a later copy of the same object) differs in nothing the reconciler reads.
    pub fn same_content(&self, other: &Self) -> bool {
        let (a, b) = (&self.metadata, &other.metadata);
        self.body == other.body
            && a.uid == b.uid
            && a.generation == b.generation
            && a.owner_references == b.owner_references
            && a.deletion_timestamp == b.deletion_timestamp
    }

    /// The typed object again, without the fields the cache left out.
    pub fn object(&self) -> Result<K, serde_json::Error> {
        let mut object: K = serde_json::from_str(&self.body)?;
        let meta = object.meta_mut();
        meta.name.clone_from(&self.metadata.name);
        meta.namespace.clone_from(&self.metadata.namespace);
        meta.uid.clone_from(&self.metadata.uid);
        meta.resource_version
            .clone_from(&self.metadata.resource_version);
        meta.generation = self.metadata.generation;
        meta.owner_references
            .clone_from(&self.metadata.owner_references);
        meta.deletion_timestamp
            .clone_from(&self.metadata.deletion_timestamp);
        Ok(object)
    }
}

/// Removes the field at `path` (and below), where a `*` segment means every element of a list.
fn remove(value: &mut Value, path: &[&str]) {
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

// Written out because a derive would require `K: Clone`, which a phantom does not need.
impl<K> Clone for Cached<K> {
    fn clone(&self) -> Self {
        Cached {
            metadata: self.metadata.clone(),
            body: self.body.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: Resource<DynamicType = ()>> fmt::Debug for Cached<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("kind", &K::kind(&()))
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("resource_version", &self.metadata.resource_version)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Cached<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        K::kind(&())
    }

    fn group(_: &()) -> Cow<'_, str> {
        K::group(&())
    }

    fn version(_: &()) -> Cow<'_, str> {
        K::version(&())
    }

    fn api_version(_: &()) -> Cow<'_, str> {
        K::api_version(&())
    }

    fn plural(_: &()) -> Cow<'_, str> {
        K::plural(&())
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::reconcile::build::{Children, build};
    use crate::reconcile::diff::contains;
    use crate::reconcile::testing::examples;

    fn survives<K: Compact>(built: &K) {
        let cached = Cached::new(built);
        let back = cached.object().map(|o| serde_json::to_value(&o));
        let (Ok(Ok(back)), Ok(built_json)) = (back, serde_json::to_value(built)) else {
            panic!("{} did not round-trip through the cache", K::kind(&()));
        };
        assert!(
            contains(&back, &built_json),
            "the cache dropped a field the operator sets:\nbuilt:  {built_json}\ncached: {back}"
        );
    }

    /// Every field a builder sets, for every example, is still there after the cache: otherwise
    /// the comparison would fail forever and every reconcile would write.
    #[test]
    fn built_children_survive_the_cache() {
        let all = examples();
        assert!(all.len() >= 5, "expected the examples, found {}", all.len());
        for (file, validated) in all {
            let Children {
                config_maps,
                deployments,
                autoscalers,
                service,
                destination_rule,
                gateway,
                virtual_service,
            } = build(&validated);
            eprintln!("{file}");
            config_maps.iter().for_each(survives);
            deployments.iter().for_each(survives);
            autoscalers.iter().for_each(survives);
            survives(&service);
            survives(&destination_rule);
            gateway.iter().for_each(survives);
            survives(&virtual_service);
        }
    }

    /// Status conditions are invisible to the reconciler, replica counts are not.
    #[test]
    fn only_changes_the_reconciler_reads_count() {
        let deployment = |ready: i32, message: &str, version: &str| -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"name": "chat-v1", "namespace": "lab", "uid": "u-1", "resourceVersion": version},
                "spec": {"selector": {}, "template": {}},
                "status": {
                    "readyReplicas": ready,
                    "conditions": [{"type": "Available", "status": "True", "message": message}],
                },
            }))
            .unwrap_or_else(|e| panic!("fixture: {e}"))
        };
        let first = Cached::new(&deployment(0, "waiting", "1"));
        assert!(first.same_content(&Cached::new(&deployment(0, "still waiting", "2"))));
        assert!(!first.same_content(&Cached::new(&deployment(1, "waiting", "3"))));
        let mut recreated = deployment(0, "waiting", "4");
        recreated.metadata.uid = Some("u-2".to_owned());
        assert!(!first.same_content(&Cached::new(&recreated)));
    }

    #[test]
    fn server_fields_and_identity_leave_the_body() {
        let deployment: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "chat-v1",
                "namespace": "lab",
                "uid": "u-1",
                "resourceVersion": "42",
                "generation": 3,
                "creationTimestamp": "2026-11-28T09:45:38Z",
                "labels": {"app": "chat"},
                "annotations": {"deployment.kubernetes.io/revision": "1", "canary.dev/applied-hash": "abc"},
                "ownerReferences": [{"apiVersion": "canary.dev/v1alpha1", "kind": "CanaryRelease", "name": "chat", "uid": "r-1", "controller": true}],
            },
            "spec": {
                "selector": {"matchLabels": {"app": "chat"}},
                "strategy": {"type": "RollingUpdate"},
                "template": {"spec": {
                    "dnsPolicy": "ClusterFirst",
                    "containers": [{"name": "chat", "image": "i", "terminationMessagePath": "/dev/termination-log"}],
                }},
            },
            "status": {
                "readyReplicas": 1,
                "observedGeneration": 3,
                "conditions": [{"type": "Available", "status": "True", "message": "long"}],
            },
        }))
        .unwrap_or_else(|e| panic!("fixture: {e}"));
        let cached = Cached::new(&deployment);
        let body: Value =
            serde_json::from_str(&cached.body).unwrap_or_else(|e| panic!("body: {e}"));
        assert_eq!(
            body,
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "labels": {"app": "chat"},
                    "annotations": {"canary.dev/applied-hash": "abc"},
                },
                "spec": {
                    "selector": {"matchLabels": {"app": "chat"}},
                    "template": {"spec": {"containers": [{"name": "chat", "image": "i"}]}},
                },
                "status": {"readyReplicas": 1, "observedGeneration": 3},
            })
        );
        let back = cached.object().unwrap_or_else(|e| panic!("object: {e}"));
        assert_eq!(back.metadata.name.as_deref(), Some("chat-v1"));
        assert_eq!(back.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(back.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(back.metadata.generation, Some(3));
        assert_eq!(
            back.metadata.owner_references,
            deployment.metadata.owner_references
        );
        assert_eq!(cached.meta().resource_version.as_deref(), Some("42"));
        assert_eq!(Cached::<Deployment>::kind(&()), "Deployment");
    }
}
