//! What the bench puts in the cluster (namespaces, the demo Secret, fake nodes, releases) and how
//! it watches the releases converge: from its own caches, so that watching costs the apiserver no
//! polling.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use canary_operator::api::CanaryRelease;
use canary_operator::cache::{ChildStore, Token};
use canary_operator::context::{Child, Stores};
use canary_operator::controller::child_cache;
use canary_operator::reconcile::children::Children;
use canary_operator::reconcile::decide::{self, Decision, Observation};
use canary_operator::reconcile::validated::Validated;
use canary_operator::reconcile::{build, validate};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::examples;

/// Label on every namespace and node the bench creates, so leftovers of an aborted run are found.
pub const LABEL: &str = "canary-bench";

/// Field manager of the bench's own writes, distinct from the operator's.
const MANAGER: &str = "canary-bench";

/// The lab's release as `namespace/name`, with a host of its own on the shared ingress gateway,
/// as tenants of one gateway have (with `*` for all, istiod would merge every release's routes
/// into one virtual host, and Istio reports the Gateways as conflicting).
pub fn release(lab: &Value, namespace: &str, name: &str) -> Value {
    let mut release = lab.clone();
    release["metadata"] = json!({"name": name, "namespace": namespace});
    if let Some(gateway) = release["spec"]["gateway"].as_object_mut() {
        gateway.insert("hosts".to_owned(), json!([host(namespace, name)]));
    }
    release
}

/// The gateway host of release `namespace/name` in the bench.
pub fn host(namespace: &str, name: &str) -> String {
    format!("{name}.{namespace}.bench")
}

/// Deletes the namespaces and nodes the bench created (in this run or an aborted earlier one) and
/// waits (bounded) until the namespaces are gone. Nodes go last: a pod bound to a deleted node
/// waits for the pod garbage collector, which would keep its namespace terminating for minutes.
/// Returns false if namespaces were still terminating at the end of `timeout`.
pub async fn remove_leftovers(client: &Client, timeout: Duration) -> bool {
    let selector = ListParams::default().labels(&format!("{LABEL}=true"));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let found = namespaces
        .list_metadata(&selector)
        .await
        .expect("list namespaces");
    for ns in &found.items {
        let _ = namespaces
            .delete(&ns.name_any(), &DeleteParams::background())
            .await;
    }
    if !found.items.is_empty() {
        eprintln!(
            "bench: deleting {} namespaces labelled {LABEL}=true",
            found.items.len()
        );
    }
    let deadline = Instant::now() + timeout;
    let mut gone = found.items.is_empty();
    while !gone && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        gone = namespaces
            .list_metadata(&selector)
            .await
            .is_ok_and(|l| l.items.is_empty());
    }
    if !gone {
        return false;
    }
    for node in nodes
        .list_metadata(&selector)
        .await
        .expect("list nodes")
        .items
    {
        let _ = nodes
            .delete(&node.name_any(), &DeleteParams::background())
            .await;
    }
    true
}

/// Creates a namespace labelled as the bench's, with the Secret the releases read.
pub async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {LABEL: "true"}},
    }))
    .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    Api::<Secret>::namespaced(client.clone(), name)
        .create(&PostParams::default(), &examples::secret())
        .await
        .unwrap_or_else(|e| panic!("create the Secret in {name}: {e}"));
    // The ReplicaSet controller cannot create pods before the namespace's `default`
    // ServiceAccount exists; waiting here keeps that delay out of the measured phases.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    for _ in 0..600 {
        if accounts.get_opt("default").await.ok().flatten().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no ServiceAccount default in {name} after 60 s");
}

/// Fake nodes managed by the cluster's kwok, for the pods of N releases: the three nodes of
/// `hack/cluster.sh` hold 330 pods, and pods left Pending would leave releases not Ready.
pub async fn fake_nodes(client: &Client, count: usize, pods_each: usize) {
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..count {
        let name = format!("canary-bench-node-{i}");
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    LABEL: "true",
                    "type": "kwok",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/hostname": name,
                    "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
                },
            },
            "status": {
                "allocatable": {"cpu": "1000", "memory": "4Ti", "pods": pods_each.to_string()},
                "capacity": {"cpu": "1000", "memory": "4Ti", "pods": pods_each.to_string()},
                "phase": "Running",
            },
        });
        nodes
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&node),
            )
            .await
            .unwrap_or_else(|e| panic!("create node {name}: {e}"));
    }
}

/// Applies releases (server-side, as `kubectl apply --server-side` would) with `concurrency`
/// requests in flight; returns the time it took.
pub async fn apply_releases(client: &Client, releases: Vec<Value>, concurrency: usize) -> Duration {
    let start = Instant::now();
    stream::iter(releases)
        .map(|release| async move {
            let namespace = release["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default();
            let name = release["metadata"]["name"].as_str().unwrap_or_default();
            Api::<CanaryRelease>::namespaced(client.clone(), namespace)
                .patch(
                    name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&release),
                )
                .await
                .map(|_| ())
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
        .expect("apply a release");
    start.elapsed()
}

/// How far the releases in the bench's namespaces are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub releases: usize,
    /// Every child exists and is controlled by the release, and `status.observedGeneration` equals
    /// `metadata.generation`.
    pub converged: usize,
    /// Converged, and the `Ready` condition is `True`.
    pub ready: usize,
}

/// The bench's own caches of releases and of the operator's children.
pub struct Observer {
    releases: Store<CanaryRelease>,
    children: Stores,
    /// The children each release should have, by release uid, built by the operator's own pure
    /// build step so that the bench and the operator cannot disagree on names.
    expected: HashMap<String, Option<Expected>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

macro_rules! expected {
    ($($field:ident: $kind:ty => $policy:ident),* $(,)?) => {
        /// The children of one release, by kind, as references (see `canary_operator::kinds`).
        struct Expected {
            $($field: Vec<ObjectRef<$kind>>,)*
        }

        impl Expected {
            fn of(release: &CanaryRelease) -> Option<Expected> {
                let validated = validate::validate(release, "cluster.local").ok()?;
                let children = build::build(&validated, &decided(&validated));
                Some(Expected {
                    $($field: children.$field.iter().map(ObjectRef::from).collect(),)*
                })
            }

            fn present(&self, stores: &Stores, uid: &str) -> bool {
                true $(&& all(stores, &self.$field, uid))*
            }
        }

        /// Applies every child of `children`, kind by kind in the operator's order: objects
        /// applied and failed.
        async fn apply_children(client: &Client, children: Children) -> (u64, u64) {
            let mut totals = (0, 0);
            $(
                let (ok, failed) = apply_all(client, children.$field).await;
                totals = (totals.0 + ok, totals.1 + failed);
            )*
            totals
        }
    };
}
canary_operator::with_child_kinds!(expected);

fn all<K: Child>(stores: &Stores, refs: &[ObjectRef<K>], uid: &str) -> bool {
    let owner = Token::new(uid);
    refs.iter().all(|r| owned(stores, r, &owner))
}

fn owned<K: Child>(stores: &Stores, key: &ObjectRef<K>, owner: &Token) -> bool {
    let namespace = key.namespace.as_deref().unwrap_or_default();
    K::store(stores).inspect(namespace, &key.name, |cached| {
        cached.is_some_and(|c| c.controller_uid.as_ref() == Some(owner))
    })
}

/// A cache of one kind of child, kept as the operator keeps its own, by a task added to `tasks`.
fn children_cache<K: Child>(
    client: &Client,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> ChildStore<K> {
    let readiness = std::sync::Arc::new(canary_operator::readiness::Readiness::default());
    let claims = std::sync::Arc::new(canary_operator::route_claims::RouteClaims::new(
        "cluster.local",
    ));
    let (store, stream) = child_cache::<K>(client, None, &readiness, claims);
    tasks.push(tokio::spawn(stream.for_each(|_| std::future::ready(()))));
    store
}

/// The cache of every release, kept current by a task.
fn release_cache(client: &Client) -> (Store<CanaryRelease>, tokio::task::JoinHandle<()>) {
    let (reader, writer) = reflector::store();
    let stream = watcher(
        Api::<CanaryRelease>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|object| object.managed_fields_mut().clear())
    .reflect(writer);
    let task = tokio::spawn(stream.for_each(|_| std::future::ready(())));
    (reader, task)
}

impl Observer {
    /// Starts the caches and waits (bounded) until each has listed once.
    pub async fn start(client: &Client) -> Observer {
        let mut tasks = Vec::new();
        let (releases, t) = release_cache(client);
        tasks.push(t);
        let config_maps = children_cache(client, &mut tasks);
        let deployments = children_cache(client, &mut tasks);
        let autoscalers = children_cache(client, &mut tasks);
        let services = children_cache(client, &mut tasks);
        let destination_rules = children_cache(client, &mut tasks);
        let gateways = children_cache(client, &mut tasks);
        let virtual_services = children_cache(client, &mut tasks);
        let children = Stores {
            config_maps,
            deployments,
            autoscalers,
            services,
            destination_rules,
            gateways,
            virtual_services,
            // The bench's releases are routed by Istio.
            http_routes: ChildStore::unwatched(),
        };
        children.wait_ready().await;
        let _ = tokio::time::timeout(Duration::from_secs(30), releases.wait_until_ready()).await;
        Observer {
            releases,
            children,
            expected: HashMap::new(),
            tasks,
        }
    }

    /// Every release in the cache, as the last watch event left it.
    pub fn releases(&self) -> Vec<std::sync::Arc<CanaryRelease>> {
        self.releases.state()
    }

    /// Counts the releases in `namespaces` by how far they are.
    pub fn progress(&mut self, namespaces: &HashSet<String>) -> Progress {
        let mut progress = Progress::default();
        for release in self.releases.state() {
            if !release
                .namespace()
                .is_some_and(|ns| namespaces.contains(&ns))
            {
                continue;
            }
            progress.releases += 1;
            let uid = release.uid().unwrap_or_default();
            let expected = self
                .expected
                .entry(uid.clone())
                .or_insert_with(|| Expected::of(&release));
            let Some(status) = &release.status else {
                continue;
            };
            let current = status.observed_generation.is_some()
                && status.observed_generation == release.metadata.generation;
            if !current
                || !expected
                    .as_ref()
                    .is_some_and(|e| e.present(&self.children, &uid))
            {
                continue;
            }
            progress.converged += 1;
            if status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
            {
                progress.ready += 1;
            }
        }
        progress
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The apiserver's write ceiling for a trivial writer: `workers` tasks, each sending
/// `per_worker` server-side applies of new, tiny ConfigMaps one after the other, all through one
/// client like the operator's. Returns (writes that succeeded, failures, seconds).
pub async fn write_ceiling(
    client: &Client,
    namespace: &str,
    run: &str,
    workers: usize,
    per_worker: usize,
) -> (u64, u64, f64) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let start = Instant::now();
    let results: Vec<(u64, u64)> = stream::iter(0..workers)
        .map(|worker| {
            let api = api.clone();
            async move {
                let (mut ok, mut failed) = (0, 0);
                for j in 0..per_worker {
                    let name = format!("{run}-{worker}-{j}");
                    let object = json!({
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": name},
                        "data": {"k": "v"},
                    });
                    match api
                        .patch(
                            &name,
                            &PatchParams::apply(MANAGER).force(),
                            &Patch::Apply(&object),
                        )
                        .await
                    {
                        Ok(_) => ok += 1,
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            }
        })
        .buffer_unordered(workers.max(1))
        .collect()
        .await;
    let seconds = start.elapsed().as_secs_f64();
    let ok = results.iter().map(|r| r.0).sum();
    let failed = results.iter().map(|r| r.1).sum();
    (ok, failed, seconds)
}

/// The operator's writes without the operator: the children of `n` releases, built by the
/// operator's own build step and applied by `workers` writers at once, each writing one release's
/// children in the operator's order, with no reads, no waits for caches and no status. Nothing owns
/// them (there is no release), so they carry no owner reference. Everything the apiserver,
/// controller-manager and kwok do in response (ReplicaSets, pods, endpoints) happens as it does
/// when the operator writes. Returns (writes, failed writes, seconds).
pub async fn write_children(
    client: &Client,
    lab: &Value,
    namespaces: &[String],
    n: usize,
    workers: usize,
) -> (u64, u64, f64) {
    let start = Instant::now();
    let results: Vec<(u64, u64)> =
        stream::iter(0..n)
            .map(|i| {
                let ns = &namespaces[i % namespaces.len()];
                let mut release: CanaryRelease =
                    serde_json::from_value(release(lab, ns, &format!("plain-{i:05}")))
                        .expect("the lab example is a CanaryRelease");
                release.metadata.uid = Some(format!("00000000-0000-4000-8000-{i:012}"));
                let validated = validate::validate(&release, "cluster.local")
                    .expect("the lab example is valid");
                async move {
                    apply_children(client, build::build(&validated, &decided(&validated))).await
                }
            })
            .buffer_unordered(workers.max(1))
            .collect()
            .await;
    let seconds = start.elapsed().as_secs_f64();
    (
        results.iter().map(|r| r.0).sum(),
        results.iter().map(|r| r.1).sum(),
        seconds,
    )
}

/// Server-side applies `objects` one after another, without owner references; (ok, failed).
async fn apply_all<K: Child>(client: &Client, objects: Vec<K>) -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
    for mut object in objects {
        object.meta_mut().owner_references = None;
        let api: Api<K> = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
        let params = PatchParams::apply(MANAGER).force();
        match api
            .patch(&object.name_any(), &params, &Patch::Apply(&object))
            .await
        {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    (ok, failed)
}

/// Deletes a namespace and waits (bounded) until it is gone.
pub async fn delete_namespace(client: &Client, name: &str, timeout: Duration) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(name, &DeleteParams::background()).await;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if matches!(namespaces.get_opt(name).await, Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("bench: warning: namespace {name} still terminating after {timeout:?}");
}

/// The split the operator would apply for `validated`: its spec's.
fn decided(validated: &Validated) -> Decision {
    decide::decide(&validated.strategy, &Observation::default())
}
