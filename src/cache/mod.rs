//! The operator's caches of its children, kept compact.
//!
//! At 1,000 releases the caches hold about 10,000 children. Kept as typed k8s-openapi objects in
//! kube's reflector stores they took about 50 KB per release: every optional field of a Deployment
//! is stored inline, and the server adds defaults, status conditions with long messages and
//! timestamps; the store's keys and typed metadata added about 1 KB per object more. The
//! reconciler needs far less of a child: who it is (uid, resourceVersion, controlling owner) to
//! guard ownership and wait for its own writes, and the fields it compares with what it wants.
//!
//! So a cached child is an [`Entry`]: its identity in a few strings, and the rest as one compact
//! JSON string without the fields the server fills in and the operator never sets. The reconciler
//! turns it back into the typed object when it compares, which costs microseconds per child.
//!
//! The children of one kind are alike: the same keys, labels and structure, built by the same
//! code, with names and values that differ. Each JSON string is compressed against a
//! [`Dictionary`], the first such string of its kind, so what they share is held once: the eight
//! children of a light lab release went from 5.8 to 3.5 KB (a counting allocator over 2,000).

mod compact;
mod entry;
mod token;

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};
use kube::runtime::watcher;

use crate::labels;

pub use self::compact::{Compact, says_pods_are_missing};
use self::entry::Dictionary;
pub use self::entry::{DecodeError, Entry, controller_of};
pub use self::token::Token;

/// Key of an entry: `namespace/name`, one allocation.
fn key(namespace: &str, name: &str) -> Box<str> {
    format!("{namespace}/{name}").into_boxed_str()
}

/// The objects of one kind, as far as the watch has told.
#[derive(Default)]
struct Objects {
    /// Objects labelled as the operator's, in the order of their keys: a release's children, whose
    /// names all begin with the release's name, sit together (see [`ChildStore::controlled_by`]).
    ours: BTreeMap<Box<str>, Entry>,
    /// The others, by key, with their controller if they have one: objects that could be in the
    /// way of a child of the same name.
    others: HashMap<Box<str>, Option<Box<OwnerReference>>>,
}

impl Objects {
    /// Files an object under ours or the others. Returns the previous entry when it was ours.
    fn insert<K: Compact>(
        &mut self,
        object: &K,
        dictionary: &Dictionary,
    ) -> (Box<str>, Option<Entry>) {
        let k = key_of(object);
        if is_ours(object) {
            self.others.remove(&k);
            let previous = self.ours.insert(k.clone(), Entry::new(object, dictionary));
            (k, previous)
        } else {
            let previous = self.ours.remove(&k);
            let controller = controller_of(object.meta());
            self.others
                .insert(k.clone(), controller.cloned().map(Box::new));
            (k, previous)
        }
    }
}

#[derive(Default)]
struct State {
    objects: Objects,
    /// Objects of a (re)list in progress; they replace `objects` once it is complete.
    listing: Option<Objects>,
    /// Set once the first list is complete.
    listed: bool,
}

/// A cache of one kind of child, fed by a watch of every object of that kind in the watched
/// namespaces (see `controller::child_cache`). Objects labelled as ours are kept as [`Entry`]s;
/// of the others only the name and controller are kept. So a child missing from the cache is known
/// to be absent and is created without asking the apiserver first (1,000 new releases: 10,000
/// reads fewer, and no `get` permission needed), and one in the way is known to be someone else's.
/// Cloning the store is cheap and every clone reads the same cache.
pub struct ChildStore<K> {
    state: Arc<RwLock<State>>,
    dictionary: Arc<Dictionary>,
    kind: PhantomData<fn() -> K>,
}

// Written out because a derive would require `K: Clone`, which a phantom does not need.
impl<K> Clone for ChildStore<K> {
    fn clone(&self) -> Self {
        ChildStore {
            state: self.state.clone(),
            dictionary: self.dictionary.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> Default for ChildStore<K> {
    fn default() -> Self {
        ChildStore {
            state: Arc::default(),
            dictionary: Arc::default(),
            kind: PhantomData,
        }
    }
}

impl<K> ChildStore<K> {
    /// A cache of a kind the operator does not watch (a traffic provider it was not started
    /// with): listed, and empty for good, so a reconcile never waits for it.
    pub fn unwatched() -> Self {
        let store = ChildStore::default();
        store
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .listed = true;
        store
    }
}

impl<K: Compact> ChildStore<K> {
    /// The cached object, decoded; `None` when nothing of that name is cached.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Result<K, DecodeError>> {
        self.read(|state| {
            let entry = state.objects.ours.get(&key(namespace, name))?;
            Some(entry.object(&self.dictionary, namespace, name))
        })
    }

    /// Applies `f` to the cached entry of that name (`None` when there is none).
    pub fn inspect<T>(
        &self,
        namespace: &str,
        name: &str,
        f: impl FnOnce(Option<&Entry>) -> T,
    ) -> T {
        self.read(|state| f(state.objects.ours.get(&key(namespace, name))))
    }

    /// An object of that name that is not labelled as ours, if one exists: `Some` of its
    /// controller (`None` when it has none).
    pub fn other(&self, namespace: &str, name: &str) -> Option<Option<OwnerReference>> {
        self.read(|state| {
            let controller = state.objects.others.get(&key(namespace, name))?;
            Some(controller.as_deref().cloned())
        })
    }

    /// Names and uids of the cached objects in `namespace` whose controlling owner has `owner_uid`,
    /// among those whose names begin with `prefix`: the release's name, with which every child's
    /// name begins (a build test holds that). Only the keys in that range are read, not every
    /// object of the kind: with 10,000 releases a walk through all of them in every reconcile
    /// made a cold start quadratic.
    pub fn controlled_by(
        &self,
        namespace: &str,
        prefix: &str,
        owner_uid: &str,
    ) -> Vec<(String, String)> {
        let namespace_prefix = format!("{namespace}/");
        let owner = Token::new(owner_uid);
        let start = format!("{namespace_prefix}{prefix}");
        self.read(|state| {
            state
                .objects
                .ours
                .range::<str, _>((Bound::Included(start.as_str()), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(&start))
                .filter(|(_, e)| e.controller_uid.as_ref() == Some(&owner))
                .filter_map(|(k, e)| {
                    Some((
                        k.strip_prefix(&namespace_prefix)?.to_owned(),
                        e.uid.to_string(),
                    ))
                })
                .collect()
        })
    }

    /// Whether the first list is complete.
    pub fn listed(&self) -> bool {
        self.read(|state| state.listed)
    }

    /// Whether the cache has listed and is not listing again.
    pub fn current(&self) -> bool {
        self.read(|state| state.listed && state.listing.is_none())
    }

    pub fn len(&self) -> usize {
        self.read(|state| state.objects.ours.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes one watch event into the cache. Returns the object to reconcile its owner for, if
    /// the event is one the reconciler should see: a change it cannot see (a Deployment's status
    /// conditions other than a failure, an HPA's status, anything about objects that are not ours) updates the cache
    /// and triggers nothing. An object of ours that loses our label triggers, to be restored.
    pub fn apply(&self, event: watcher::Event<K>) -> Option<PartialObjectMeta<K>> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Apply(object) => {
                let (k, previous) = state.objects.insert(&object, &self.dictionary);
                let unchanged = match (previous, state.objects.ours.get(&k)) {
                    (Some(old), Some(new)) => old.same_content(new),
                    (None, None) => true,
                    _ => false,
                };
                (!unchanged).then(|| trigger(object))
            }
            watcher::Event::Delete(object) => {
                let k = key_of(&object);
                state.objects.others.remove(&k);
                let was_ours = state.objects.ours.remove(&k).is_some();
                was_ours.then(|| trigger(object))
            }
            watcher::Event::Init => {
                state.listing = Some(Objects::default());
                None
            }
            watcher::Event::InitApply(object) => {
                state
                    .listing
                    .get_or_insert_default()
                    .insert(&object, &self.dictionary);
                is_ours(&object).then(|| trigger(object))
            }
            watcher::Event::InitDone => {
                let mut listed = state.listing.take().unwrap_or_default();
                listed.others.shrink_to_fit();
                state.objects = listed;
                state.listed = true;
                None
            }
        }
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Whether the object carries the label of the operator's children.
pub fn is_ours<K: Resource>(object: &K) -> bool {
    object
        .meta()
        .labels
        .as_ref()
        .and_then(|labels| labels.get(labels::MANAGED_BY))
        .is_some_and(|value| value == labels::MANAGED_BY_VALUE)
}

fn key_of<K: Resource>(object: &K) -> Box<str> {
    let meta = object.meta();
    key(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// What the controller needs of a changed child to find the release to reconcile: its name and
/// owner references.
fn trigger<K: Resource<DynamicType = ()>>(object: K) -> PartialObjectMeta<K> {
    let meta = object.meta();
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        owner_references: meta.owner_references.clone(),
        ..ObjectMeta::default()
    }
    .into_request_partial::<K>()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::{Value, json};

    use crate::api::CanaryRelease;

    use super::*;
    use crate::reconcile::diff::contains;
    use crate::reconcile::testing::{built, examples, lab_validated};

    fn survives<K: Compact + Clone>(built: &K) {
        let store = ChildStore::<K>::default();
        store.apply(watcher::Event::Apply(built.clone()));
        let (namespace, name) = (built.meta().namespace.clone(), built.meta().name.clone());
        let back = store
            .get(
                namespace.as_deref().unwrap_or_default(),
                name.as_deref().unwrap_or_default(),
            )
            .map(|o| o.map(|o| serde_json::to_value(&o)));
        let (Some(Ok(Ok(back))), Ok(built_json)) = (back, serde_json::to_value(built)) else {
            panic!(
                "{} {name:?} did not round-trip through the cache",
                K::kind(&())
            );
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
            let children = built(&validated);
            eprintln!("{file}");
            macro_rules! survive_all {
                ($($field:ident: $kind:ty => $policy:ident),* $(,)?) => {
                    $(children.$field.iter().for_each(survives);)*
                };
            }
            crate::with_child_kinds!(survive_all);
        }
    }

    fn deployment(uid: &str, version: &str, ready: i32, message: &str) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {
                "name": "chat-v1",
                "namespace": "lab",
                "uid": uid,
                "resourceVersion": version,
                "labels": {"app.kubernetes.io/managed-by": "canary-operator"},
                "ownerReferences": [{"apiVersion": "canary.dev/v1alpha1", "kind": "CanaryRelease", "name": "chat", "uid": "r-1", "controller": true}],
            },
            "spec": {"selector": {}, "template": {}},
            "status": {
                "readyReplicas": ready,
                "conditions": [{"type": "Available", "status": "True", "message": message}],
            },
        }))
        .unwrap_or_else(|e| panic!("fixture: {e}"))
    }

    /// Status conditions are invisible to the reconciler and trigger nothing, except the ones that
    /// say why pods are missing; replica counts, a recreated object and a deletion do. Every
    /// change updates the cache all the same.
    #[test]
    fn only_changes_the_reconciler_reads_trigger() {
        let store = ChildStore::<Deployment>::default();
        let apply = |d| store.apply(watcher::Event::Apply(d)).is_some();
        let version = || {
            store.inspect("lab", "chat-v1", |e| {
                e.map(|e| e.resource_version.to_string())
            })
        };
        assert!(apply(deployment("u-1", "1", 0, "waiting")));
        assert!(!apply(deployment("u-1", "2", 0, "still waiting")));
        assert_eq!(version().as_deref(), Some("2"));
        assert!(apply(deployment("u-1", "3", 1, "still waiting")));
        let mut quota = deployment("u-1", "4", 1, "still waiting");
        let time = |text: &str| {
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                text.parse().unwrap_or_else(|e| panic!("{e}")),
            )
        };
        let failed = |at: &str| k8s_openapi::api::apps::v1::DeploymentCondition {
            type_: Some("ReplicaFailure".to_owned()),
            status: Some("True".to_owned()),
            reason: Some("FailedCreate".to_owned()),
            message: Some("exceeded quota".to_owned()),
            last_update_time: Some(time(at)),
            ..Default::default()
        };
        if let Some(status) = quota.status.as_mut() {
            status
                .conditions
                .get_or_insert_default()
                .push(failed("2026-12-07T23:00:00Z"));
        }
        assert!(apply(quota.clone()), "a failure to create pods triggers");
        if let Some(status) = quota.status.as_mut() {
            status.conditions = Some(vec![failed("2026-12-07T23:00:05Z")]);
            quota.metadata.resource_version = Some("5".to_owned());
        }
        assert!(!apply(quota), "its time alone does not");
        assert!(apply(deployment("u-2", "6", 1, "still waiting")));
        let trigger = store.apply(watcher::Event::Delete(deployment("u-2", "7", 1, "")));
        let owners = trigger.and_then(|t| t.metadata.owner_references);
        assert_eq!(owners.map(|o| o[0].uid.clone()).as_deref(), Some("r-1"));
        assert!(store.is_empty());
    }

    /// Of an object not labelled as ours only the name is kept; losing or gaining the label
    /// moves it across, and losing it triggers its owner (to put the label back).
    #[test]
    fn objects_not_labelled_as_ours_are_names_only() {
        let store = ChildStore::<Deployment>::default();
        let mut theirs = deployment("u-1", "1", 0, "");
        theirs.metadata.labels = None;
        assert!(store.apply(watcher::Event::Apply(theirs.clone())).is_none());
        let controller = store.other("lab", "chat-v1").flatten();
        assert_eq!(controller.map(|o| o.uid).as_deref(), Some("r-1"));
        assert!(store.get("lab", "chat-v1").is_none());
        assert!(
            store
                .apply(watcher::Event::Apply(deployment("u-1", "2", 0, "")))
                .is_some()
        );
        assert!(store.other("lab", "chat-v1").is_none());
        assert!(store.get("lab", "chat-v1").is_some());
        theirs.metadata.resource_version = Some("3".to_owned());
        assert!(store.apply(watcher::Event::Apply(theirs.clone())).is_some());
        assert!(store.other("lab", "chat-v1").is_some() && store.is_empty());
        assert!(store.apply(watcher::Event::Delete(theirs)).is_none());
        assert!(store.other("lab", "chat-v1").is_none());
    }

    /// A (re)list replaces the cache only once complete, and drops what was not listed again.
    #[test]
    fn a_relist_replaces_the_cache_when_complete() {
        let store = ChildStore::<Deployment>::default();
        assert!(!store.listed());
        store.apply(watcher::Event::Init);
        assert!(
            store
                .apply(watcher::Event::InitApply(deployment("u-1", "1", 0, "")))
                .is_some()
        );
        assert!(
            store.is_empty(),
            "listed objects wait for the end of the list"
        );
        store.apply(watcher::Event::InitDone);
        assert!(store.listed());
        assert_eq!(
            store.controlled_by("lab", "chat", "r-1"),
            vec![("chat-v1".to_owned(), "u-1".to_owned())]
        );
        assert!(store.controlled_by("other", "chat", "r-1").is_empty());
        assert!(
            store.controlled_by("lab", "chat-v2", "r-1").is_empty(),
            "only names with the prefix"
        );
        assert_eq!(store.controlled_by("lab", "chat-", "r-1").len(), 1);
        assert!(store.controlled_by("lab", "chat", "r-2").is_empty());
        store.apply(watcher::Event::Init);
        store.apply(watcher::Event::InitDone);
        assert!(
            store.is_empty(),
            "an object gone while the watch was down leaves the cache"
        );
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
        let dictionary = Dictionary::default();
        let entry = Entry::new(&deployment, &dictionary);
        let body: Value = entry
            .json(&dictionary)
            .map(|json| serde_json::from_slice(&json))
            .unwrap_or_else(|e| panic!("body: {e}"))
            .unwrap_or_else(|e| panic!("body: {e}"));
        assert_eq!(
            body,
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "labels": {"app": "chat"},
                    "annotations": {"canary.dev/applied-hash": "abc"},
                    "ownerReferences": [{"apiVersion": "canary.dev/v1alpha1", "kind": "CanaryRelease", "name": "chat", "uid": "r-1", "controller": true}],
                },
                "spec": {
                    "selector": {"matchLabels": {"app": "chat"}},
                    "template": {"spec": {"containers": [{"name": "chat", "image": "i"}]}},
                },
                "status": {"readyReplicas": 1, "observedGeneration": 3},
            })
        );
        assert_eq!(entry.controller_uid, Some(Token::new("r-1")));
        assert_eq!(entry.resource_version, Token::Number(42));
        let back: Deployment = entry
            .object(&dictionary, "lab", "chat-v1")
            .unwrap_or_else(|e| panic!("object: {e}"));
        assert_eq!(back.metadata.name.as_deref(), Some("chat-v1"));
        assert_eq!(back.metadata.namespace.as_deref(), Some("lab"));
        assert_eq!(back.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(back.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(back.metadata.generation, Some(3));
        assert_eq!(
            back.metadata.owner_references,
            deployment.metadata.owner_references
        );
    }

    fn body_text(entry: &Entry, dictionary: &Dictionary) -> String {
        let json = entry
            .json(dictionary)
            .unwrap_or_else(|e| panic!("body: {e}"));
        String::from_utf8(json).unwrap_or_else(|e| panic!("body: {e}"))
    }

    /// The owner reference the operator sets is held as the release's name; any other stays.
    #[test]
    fn the_operators_owner_reference_leaves_the_body() {
        // Each owner reference must come back as it was; only the operator's own leaves the body.
        let round_trip = |owner: OwnerReference, in_body: bool| {
            let mut config_map = ConfigMap::default();
            config_map.metadata.owner_references = Some(vec![owner]);
            let dictionary = Dictionary::default();
            let entry = Entry::new(&config_map, &dictionary);
            assert_eq!(
                body_text(&entry, &dictionary).contains("ownerReferences"),
                in_body
            );
            assert_eq!(entry.controller_uid, Some(Token::new("r-1")));
            let back: ConfigMap = entry
                .object(&dictionary, "lab", "chat-v1")
                .unwrap_or_else(|e| panic!("object: {e}"));
            assert_eq!(
                back.metadata.owner_references,
                config_map.metadata.owner_references
            );
        };
        round_trip(CanaryRelease::child_owner_reference("chat", "r-1"), false);
        let mut other = CanaryRelease::child_owner_reference("chat", "r-1");
        other.block_owner_deletion = None;
        round_trip(other, true);
    }

    /// A body is held against the first of its kind: objects alike take a fraction of the bytes,
    /// each reads back as it was, and one unlike the first still does.
    #[test]
    fn bodies_of_one_kind_share_a_dictionary() {
        let deployments = built(&lab_validated()).deployments;
        let [first, second] = deployments.as_slice() else {
            panic!("the lab builds two Deployments");
        };
        let dictionary = Dictionary::default();
        Entry::new(first, &dictionary);
        let shared = Entry::new(second, &dictionary);
        let json = shared
            .json(&dictionary)
            .unwrap_or_else(|e| panic!("body: {e}"));
        let alone = lz4_flex::block::compress_prepend_size(&json).len();
        assert!(
            shared.body.len() * 2 < alone,
            "{} bytes against the first, {alone} alone",
            shared.body.len(),
        );
        let back: Deployment = shared
            .object(&dictionary, "azureopenai", "unused")
            .unwrap_or_else(|e| panic!("object: {e}"));
        assert_eq!(back.spec, second.spec);
        assert_eq!(back.metadata.labels, second.metadata.labels);

        let unlike = ConfigMap {
            data: Some([("k".to_owned(), "x".repeat(20_000))].into()),
            ..ConfigMap::default()
        };
        let entry = Entry::new(&unlike, &dictionary);
        let back: ConfigMap = entry
            .object(&dictionary, "lab", "big")
            .unwrap_or_else(|e| panic!("object: {e}"));
        assert_eq!(back.data, unlike.data);
    }

    /// A token reads back as exactly the text it was made from; only the forms that do are packed.
    #[test]
    fn tokens_read_back_as_the_text_they_were_made_from() {
        let uuid = "8d3b5c1e-0000-4000-8000-00000000000f";
        let cases: &[(&str, &str)] = &[
            (uuid, "uuid"),
            ("8D3B5C1E-0000-4000-8000-00000000000F", "text"),
            ("8d3b5c1e00004000800000000000000f", "text"),
            ("8d3b5c1e-0000-4000-8000-00000000000g", "text"),
            ("8d3b5c1e-0000-4000-8000-00000000000", "text"),
            ("8d3b5c1e-0000-4000-8000-00000000000ff", "text"),
            ("8d3b5c1e-0000-4000-80-0000000000000ff", "text"),
            ("12345", "number"),
            ("0", "number"),
            ("18446744073709551615", "number"),
            ("18446744073709551616", "text"),
            ("012", "text"),
            ("+12", "text"),
            ("", "text"),
            ("u-1", "text"),
        ];
        for &(text, form) in cases {
            let token = Token::new(text);
            let packed = match token {
                Token::Uuid(_) => "uuid",
                Token::Number(_) => "number",
                Token::Text(_) => "text",
            };
            assert_eq!(
                (packed, token.to_string().as_str()),
                (form, text),
                "{text:?}"
            );
        }
        assert_ne!(
            Token::new(uuid),
            Token::new("8d3b5c1e-0000-4000-8000-00000000000e")
        );
        assert_ne!(Token::new("12"), Token::new("13"));
    }
}
