//! The index of route claims ([`crate::claims`]) kept from the watches the operator already has:
//! the releases' (from their specs, computed by the controller) and every Istio Gateway,
//! VirtualService and HTTPRoute that is not ours (from the child caches' watches, which see every
//! object of their kinds). A reconcile asks it whether an older claim overlaps its release's
//! ([`RouteClaims::conflict`]): a lookup in memory, no request.
//!
//! When a claim changes, the releases whose verdict may change with it are reconciled again,
//! through the channel each controller subscribes ([`RouteClaims::subscribe`]): a release that
//! lost its host gets it back within moments of the winner's deletion.
//!
//! It sits below the context, which holds it; the controller feeds it.

use std::any::Any;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::channel::mpsc;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::api::CanaryRelease;
use crate::api::gateway_api::HTTPRoute;
use crate::api::istio::{Gateway, VirtualService};
use crate::cache::is_ours;
use crate::claims::{Bind, Conflict, Index, Key, Kind, Text, gateway_ref};

/// One watch's list: of one kind, in one scope (a namespace, or all when `None`).
type List = (Kind, Option<String>);

/// A controller's namespace (all when `None`) and where to send its releases to look at again.
type Subscriber = (
    Option<String>,
    mpsc::UnboundedSender<ObjectRef<CanaryRelease>>,
);

/// The index, shared by every controller of one operator (one per watched namespace), so that
/// claims in one watched namespace are judged against those in the others.
pub struct RouteClaims {
    index: Mutex<Index>,
    /// Keys seen by a list in progress, per kind and watched scope (a namespace, or all): what it
    /// does not show in its scope is gone. Controllers of other namespaces list at the same time.
    listing: Mutex<HashMap<List, HashSet<Key>>>,
    /// The scopes whose releases have been listed once.
    releases_listed: Mutex<HashSet<Option<String>>>,
    subscribers: Mutex<Vec<Subscriber>>,
    /// DNS suffix of Services, to write short mesh hosts as Istio reads them.
    cluster_domain: String,
}

impl RouteClaims {
    pub fn new(cluster_domain: &str) -> RouteClaims {
        RouteClaims {
            index: Mutex::default(),
            listing: Mutex::default(),
            releases_listed: Mutex::default(),
            subscribers: Mutex::default(),
            cluster_domain: cluster_domain.to_owned(),
        }
    }

    /// The releases of `namespace` (all when `None`) to reconcile again because a claim that
    /// overlaps theirs changed.
    pub fn subscribe(
        &self,
        namespace: Option<String>,
    ) -> mpsc::UnboundedReceiver<ObjectRef<CanaryRelease>> {
        let (sender, receiver) = mpsc::unbounded();
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((namespace, sender));
        receiver
    }

    /// The oldest claim that overlaps one of `release`'s and is not its own.
    pub fn conflict(&self, release: &CanaryRelease) -> Option<Conflict> {
        let key = Key::new(
            Kind::CanaryRelease,
            &release.namespace().unwrap_or_default(),
            &release.name_any(),
        );
        self.lock().conflict(&key)
    }

    /// Waits (bounded) until the releases of `scope` (a namespace, or all) have been listed once:
    /// before that an older release may not be known yet, and a younger one would take its host
    /// for a moment.
    pub async fn wait_listed(&self, scope: Option<&str>) {
        let limit = tokio::time::Instant::now() + Duration::from_secs(30);
        let listed = || {
            self.releases_listed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&scope.map(str::to_owned))
        };
        while !listed() && tokio::time::Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Takes a watch event of the releases of `scope`; `binds` says what a release claims
    /// (nothing when its spec is invalid: it routes nothing).
    pub fn observe_release(
        &self,
        event: &watcher::Event<CanaryRelease>,
        scope: Option<&str>,
        binds: impl Fn(&CanaryRelease) -> Vec<Bind>,
    ) {
        self.observe(Kind::CanaryRelease, event, scope, |release| {
            Some(binds(release))
        });
        if matches!(event, watcher::Event::InitDone) {
            self.releases_listed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(scope.map(str::to_owned));
        }
    }

    /// Takes a watch event of a child kind in `scope`: the claims of objects that are not ours.
    /// Kinds that route nothing are passed over.
    pub fn observe_child<K: Resource + Any>(&self, event: &watcher::Event<K>, scope: Option<&str>) {
        if let Some(kind) = claiming_kind::<K>() {
            self.observe(kind, event, scope, |object| {
                (!is_ours(object)).then(|| foreign_binds(object, &self.cluster_domain))
            });
        }
    }

    fn observe<K: Resource>(
        &self,
        kind: Kind,
        event: &watcher::Event<K>,
        scope: Option<&str>,
        binds: impl Fn(&K) -> Option<Vec<Bind>>,
    ) {
        let list = (kind, scope.map(str::to_owned));
        let key = |object: &K| {
            Key::new(
                kind,
                object.meta().namespace.as_deref().unwrap_or_default(),
                object.meta().name.as_deref().unwrap_or_default(),
            )
        };
        let touched = match event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                let key = key(object);
                let binds = binds(object);
                // Only claimants are remembered through a relist: ours (the operator's own
                // routes, claimed by their releases) are thousands and hold nothing here.
                if binds.is_some() && matches!(event, watcher::Event::InitApply(_)) {
                    self.listing
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(list)
                        .or_default()
                        .insert(key.clone());
                }
                let mut index = self.lock();
                match binds {
                    Some(binds) => index.set(key, created(object.meta()), binds),
                    None => index.remove(&key),
                }
            }
            watcher::Event::Delete(object) => self.lock().remove(&key(object)),
            watcher::Event::Init => {
                self.listing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(list, HashSet::new());
                BTreeSet::new()
            }
            watcher::Event::InitDone => {
                let seen = self
                    .listing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&list)
                    .unwrap_or_default();
                let mut index = self.lock();
                let gone: Vec<Key> = index
                    .keys_of(kind)
                    .into_iter()
                    .filter(|k| scope.is_none_or(|ns| *k.namespace == *ns) && !seen.contains(k))
                    .collect();
                gone.iter().flat_map(|k| index.remove(k)).collect()
            }
        };
        self.trigger(touched);
    }

    fn trigger(&self, touched: BTreeSet<Key>) {
        if touched.is_empty() {
            return;
        }
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|(_, sender)| !sender.is_closed());
        for key in touched.iter().filter(|k| k.kind == Kind::CanaryRelease) {
            tracing::debug!(release = %key, "a claim overlapping the release's changed");
            let release = ObjectRef::new(&key.name).within(&key.namespace);
            for (namespace, sender) in subscribers.iter() {
                if namespace.as_deref().is_none_or(|ns| ns == &*key.namespace) {
                    let _ = sender.unbounded_send(release.clone());
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Seconds since the epoch of the object's creation; 0 when it has none (never from a server).
fn created(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> i64 {
    meta.creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second())
}

/// The claims index's kind for child kind `K`, if its objects route.
fn claiming_kind<K: Any>() -> Option<Kind> {
    let kind = std::any::TypeId::of::<K>();
    [
        (std::any::TypeId::of::<Gateway>(), Kind::Gateway),
        (
            std::any::TypeId::of::<VirtualService>(),
            Kind::VirtualService,
        ),
        (std::any::TypeId::of::<HTTPRoute>(), Kind::HTTPRoute),
    ]
    .into_iter()
    .find_map(|(t, k)| (t == kind).then_some(k))
}

/// What an object the operator did not create claims.
fn foreign_binds<K: Resource + Any>(object: &K, cluster_domain: &str) -> Vec<Bind> {
    let any = object as &dyn Any;
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    let name = object.meta().name.clone().unwrap_or_default();
    if let Some(gateway) = any.downcast_ref::<Gateway>() {
        gateway_binds(&namespace, &name, gateway)
    } else if let Some(vs) = any.downcast_ref::<VirtualService>() {
        virtual_service_binds(&namespace, vs, cluster_domain)
    } else if let Some(route) = any.downcast_ref::<HTTPRoute>() {
        http_route_binds(&namespace, route)
    } else {
        Vec::new()
    }
}

fn gateway_binds(namespace: &str, name: &str, gateway: &Gateway) -> Vec<Bind> {
    let selector: Text = crate::claims::selector_text(&gateway.spec.selector).into();
    let gateway_name: Text = format!("{namespace}/{name}").into();
    let mut binds = Vec::new();
    for server in &gateway.spec.servers {
        for host in &server.hosts {
            // `namespace/host` restricts which VirtualServices may bind; the host is what it serves.
            let host = host.rsplit('/').next().unwrap_or(host);
            binds.push(Bind::Listener {
                gateway: gateway_name.clone(),
                selector: selector.clone(),
                port: server.port.number,
                host: host.to_ascii_lowercase().into(),
            });
        }
    }
    binds
}

fn virtual_service_binds(namespace: &str, vs: &VirtualService, cluster_domain: &str) -> Vec<Bind> {
    // Without gateways a VirtualService applies to the mesh.
    let mesh_only = ["mesh".to_owned()];
    let gateways = match vs.spec.gateways.as_slice() {
        [] => &mesh_only[..],
        gateways => gateways,
    };
    let mut binds = Vec::new();
    for gateway in gateways {
        for host in &vs.spec.hosts {
            let host = host.to_ascii_lowercase();
            binds.push(if gateway == "mesh" {
                Bind::MeshRoute {
                    host: mesh_host(&host, namespace, cluster_domain).into(),
                }
            } else {
                Bind::Route {
                    gateway: gateway_ref(gateway, namespace),
                    host: host.into(),
                }
            });
        }
    }
    binds
}

fn http_route_binds(namespace: &str, route: &HTTPRoute) -> Vec<Bind> {
    let any_host = ["*".to_owned()];
    let hosts = match route.spec.hostnames.as_slice() {
        [] => &any_host[..],
        hosts => hosts,
    };
    let mut binds = Vec::new();
    for parent in &route.spec.parent_refs {
        let is_gateway = parent.kind.as_deref().is_none_or(|k| k == "Gateway")
            && parent
                .group
                .as_deref()
                .is_none_or(|g| g == "gateway.networking.k8s.io");
        if !is_gateway {
            continue;
        }
        for host in hosts {
            binds.push(Bind::ParentRoute {
                gateway: format!(
                    "{}/{}",
                    parent.namespace.as_deref().unwrap_or(namespace),
                    parent.name
                )
                .into(),
                section: parent.section_name.as_deref().map(Text::from),
                port: parent.port,
                host: host.to_ascii_lowercase().into(),
            });
        }
    }
    binds
}

/// A mesh host as Istio resolves it: a short name relative to the route's namespace.
fn mesh_host(host: &str, namespace: &str, cluster_domain: &str) -> String {
    if host.starts_with('*') {
        return host.to_owned();
    }
    match host.matches('.').count() {
        0 => format!("{host}.{namespace}.svc.{cluster_domain}"),
        1 => format!("{host}.svc.{cluster_domain}"),
        _ => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn from<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("fixture: {e}"))
    }

    #[test]
    fn foreign_objects_claim_what_their_routers_serve() {
        let gateway: Gateway = from(json!({
            "metadata": {"name": "public", "namespace": "istio-ingress"},
            "spec": {
                "selector": {"istio": "ingressgateway", "app": "gw"},
                "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["./Chat.Example.com", "*/*.example.org"]}],
            },
        }));
        assert_eq!(
            foreign_binds(&gateway, "cluster.local"),
            [
                Bind::Listener {
                    gateway: "istio-ingress/public".into(),
                    selector: "app=gw,istio=ingressgateway".into(),
                    port: 80,
                    host: "chat.example.com".into(),
                },
                Bind::Listener {
                    gateway: "istio-ingress/public".into(),
                    selector: "app=gw,istio=ingressgateway".into(),
                    port: 80,
                    host: "*.example.org".into(),
                },
            ]
        );
        let vs: VirtualService = from(json!({
            "metadata": {"name": "chat", "namespace": "team"},
            "spec": {"hosts": ["chat.example.com"], "gateways": ["public", "istio-ingress/public", "mesh"]},
        }));
        assert_eq!(
            foreign_binds(&vs, "cluster.local"),
            [
                Bind::Route {
                    gateway: "team/public".into(),
                    host: "chat.example.com".into()
                },
                Bind::Route {
                    gateway: "istio-ingress/public".into(),
                    host: "chat.example.com".into()
                },
                Bind::MeshRoute {
                    host: "chat.example.com".into()
                },
            ]
        );
        let mesh: VirtualService = from(json!({
            "metadata": {"name": "reviews", "namespace": "team"},
            "spec": {"hosts": ["reviews", "ratings.other", "*.svc.cluster.local"]},
        }));
        let hosts: Vec<Bind> = [
            "reviews.team.svc.cluster.local",
            "ratings.other.svc.cluster.local",
            "*.svc.cluster.local",
        ]
        .iter()
        .map(|h| Bind::MeshRoute { host: (*h).into() })
        .collect();
        assert_eq!(
            foreign_binds(&mesh, "cluster.local"),
            hosts,
            "no gateways: the mesh"
        );
        let route: HTTPRoute = from(json!({
            "metadata": {"name": "chat", "namespace": "team"},
            "spec": {"parentRefs": [
                {"name": "shared", "namespace": "gw", "sectionName": "http"},
                {"name": "local"},
                {"name": "svc", "kind": "Service", "group": ""},
            ]},
        }));
        assert_eq!(
            foreign_binds(&route, "cluster.local"),
            [
                Bind::ParentRoute {
                    gateway: "gw/shared".into(),
                    section: Some("http".into()),
                    port: None,
                    host: "*".into()
                },
                Bind::ParentRoute {
                    gateway: "team/local".into(),
                    section: None,
                    port: None,
                    host: "*".into()
                },
            ],
            "no hostnames: every host; a Service parent is the mesh's (GAMMA), not judged"
        );
        let config_map = k8s_openapi::api::core::v1::ConfigMap::default();
        assert!(foreign_binds(&config_map, "cluster.local").is_empty());
        assert_eq!(
            claiming_kind::<k8s_openapi::api::core::v1::ConfigMap>(),
            None
        );
        assert_eq!(claiming_kind::<HTTPRoute>(), Some(Kind::HTTPRoute));
    }

    fn release(namespace: &str, name: &str, second: i64) -> CanaryRelease {
        from(json!({
            "apiVersion": "canary.dev/v1alpha1", "kind": "CanaryRelease",
            "metadata": {
                "name": name, "namespace": namespace,
                "creationTimestamp": k8s_openapi::jiff::Timestamp::from_second(second).map(|t| t.to_string()).unwrap_or_default(),
            },
            "spec": {"image": "app", "port": 80, "stable": {"name": "v1", "model": "m"}},
        }))
    }

    /// A release's claims come from the spec (here all the same, through a closure): the
    /// younger one of two is told when the older goes, even by a relist that misses it.
    #[tokio::test]
    async fn releases_are_told_when_an_overlapping_claim_goes() {
        let claims = RouteClaims::new("cluster.local");
        let mut lab = claims.subscribe(Some("lab".to_owned()));
        let mut all = claims.subscribe(None);
        let binds = |_: &CanaryRelease| {
            vec![Bind::Route {
                gateway: "gw/public".into(),
                host: "*".into(),
            }]
        };
        let (older, younger) = (release("team", "older", 10), release("lab", "younger", 20));
        claims.observe_release(&watcher::Event::Init, None, binds);
        claims.observe_release(&watcher::Event::InitApply(younger.clone()), None, binds);
        assert!(lab.try_recv().is_err(), "nobody to tell yet");
        claims.observe_release(&watcher::Event::InitApply(older.clone()), None, binds);
        claims.observe_release(&watcher::Event::InitDone, None, binds);
        claims.wait_listed(None).await;
        assert_eq!(claims.conflict(&older), None);
        let conflict = claims.conflict(&younger).map(|c| c.holder.to_string());
        assert_eq!(conflict.as_deref(), Some("CanaryRelease team/older"));
        // The older one, listed second, took the host from the younger: lab's subscriber and
        // the one of every namespace heard of it.
        assert_eq!(
            lab.try_recv().ok().map(|r| r.name),
            Some("younger".to_owned())
        );
        assert_eq!(
            all.try_recv().ok().map(|r| r.name),
            Some("younger".to_owned())
        );
        // A relist without the older one: it was deleted while the watch was down.
        claims.observe_release(&watcher::Event::Init, None, binds);
        claims.observe_release(&watcher::Event::InitApply(younger.clone()), None, binds);
        claims.observe_release(&watcher::Event::InitDone, None, binds);
        assert_eq!(claims.conflict(&younger), None);
        assert_eq!(
            lab.try_recv().ok().map(|r| r.name),
            Some("younger".to_owned())
        );
        assert!(lab.try_recv().is_err(), "nothing more");
    }

    /// Two controllers of one operator (namespaces a and b) list at the same time: the end of
    /// one's list forgets nothing of the other's.
    #[tokio::test]
    async fn lists_of_other_namespaces_do_not_forget_each_other() {
        let claims = RouteClaims::new("cluster.local");
        let binds = |r: &CanaryRelease| {
            vec![Bind::MeshRoute {
                host: format!("{}.example.com", r.name_any()).into(),
            }]
        };
        let (a, b) = (release("a", "one", 1), release("b", "two", 2));
        claims.observe_release(&watcher::Event::Init, Some("a"), binds);
        claims.observe_release(&watcher::Event::InitApply(a.clone()), Some("a"), binds);
        claims.observe_release(&watcher::Event::Init, Some("b"), binds);
        claims.observe_release(&watcher::Event::InitApply(b.clone()), Some("b"), binds);
        claims.observe_release(&watcher::Event::InitDone, Some("a"), binds);
        claims.observe_release(&watcher::Event::InitDone, Some("b"), binds);
        claims.wait_listed(Some("a")).await;
        let keys = claims.lock().keys_of(Kind::CanaryRelease);
        assert_eq!(keys.len(), 2, "{keys:?}");
    }
}
