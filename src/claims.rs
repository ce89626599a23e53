//! Who claims which host on which gateway, and who claimed it first: what keeps two releases (or
//! a release and someone else's route) from silently sharing a route.
//!
//! Istio merges every VirtualService for a host on one gateway workload into one virtual host, in
//! the order the objects were created, and the Gateway API resolves two routes for one host on
//! one listener the same way (oldest first, then by name). A release whose route overlaps an older
//! claim gets either nothing or some other release's backends, while both say `Ready`. So each
//! object that routes states its claims ([`Bind`]), the index keeps them by where they apply, and
//! [`Index::conflict`] names the oldest overlapping claim of anybody else. Judging by creation
//! time, as the data planes do, means that withholding the younger route never changes where
//! any request goes.
//!
//! Pure and free of any Kubernetes type: the caches and the release watch turn objects into
//! binds (`route_claims`), and the tests here are tables of plain values.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// Shared text: a host, a selector or a name held once however many claims and buckets name it.
/// At 10,000 releases the index holds about 40,000 such names.
pub type Text = Arc<str>;

/// What one object says it serves. Gateways are named `namespace/name`, hosts in lowercase,
/// without the `namespace/` prefix a Gateway server's hosts may carry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bind {
    /// A server of an Istio Gateway: the pods its selector picks (`k=v,k2=v2`, keys sorted)
    /// listen on `port` for `host`. Two of these that overlap are what `istioctl analyze` calls
    /// conflicting gateways (IST0145).
    Listener {
        gateway: Text,
        selector: Text,
        port: u32,
        host: Text,
    },
    /// A route (a VirtualService) for `host` through the Istio Gateway `gateway`. It applies to
    /// the workloads and ports of that Gateway's servers for the host.
    Route { gateway: Text, host: Text },
    /// A route (an HTTPRoute) for `host` attached to the Gateway API Gateway `gateway`: to its
    /// listener `section` and `port` where named, to all of them otherwise.
    ParentRoute {
        gateway: Text,
        section: Option<Text>,
        port: Option<i32>,
        host: Text,
    },
    /// A route for `host` (a Service's name, fully qualified) for calls inside the mesh.
    MeshRoute { host: Text },
}

/// The kind of object a claim comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    CanaryRelease,
    Gateway,
    VirtualService,
    HTTPRoute,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::CanaryRelease => "CanaryRelease",
            Kind::Gateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::HTTPRoute => "HTTPRoute",
        }
    }
}

/// One object that claims: its kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: Kind,
    pub namespace: Text,
    pub name: Text,
}

impl Key {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Key {
        Key {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// Where a claim applies: claims conflict only within one place.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Place {
    /// Istio Gateway servers on the pods of a selector, at a port.
    Listeners {
        selector: Text,
        port: u32,
    },
    /// Routes served by the pods of a selector at a port.
    Routes {
        selector: Text,
        port: u32,
    },
    /// Routes through an Istio Gateway the index has no servers for (not cached, or not yet):
    /// judged by the Gateway's name alone.
    Unresolved {
        gateway: Text,
    },
    /// Routes attached to a Gateway API Gateway.
    Parent {
        gateway: Text,
    },
    Mesh,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Listeners { selector, port } => write!(
                f,
                "an Istio Gateway server on the ingress pods {selector}, port {port}"
            ),
            Place::Routes { selector, port } => {
                write!(f, "the ingress pods {selector}, port {port}")
            }
            Place::Unresolved { gateway } => write!(f, "Istio Gateway {gateway}"),
            Place::Parent { gateway } => write!(f, "Gateway {gateway}"),
            Place::Mesh => f.write_str("calls inside the mesh"),
        }
    }
}

/// The listener of a Gateway API parent a route is attached to; `None` parts match any.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Listener {
    section: Option<Text>,
    port: Option<i32>,
}

impl Listener {
    fn overlaps(&self, other: &Listener) -> bool {
        fn either<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
            a.is_none() || b.is_none() || a == b
        }
        either(&self.section, &other.section) && either(&self.port, &other.port)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Claim {
    place: Place,
    host: Text,
    listener: Listener,
}

/// The claims of one place, by host: most hosts are exact, and one hash lookup finds who else
/// claims them; the few wildcards are compared one by one.
#[derive(Debug, Default)]
struct Claimants {
    exact: HashMap<Text, Vec<(Key, Listener)>>,
    wildcards: BTreeMap<Key, Vec<(Text, Listener)>>,
}

impl Claimants {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcards.is_empty()
    }
}

#[derive(Debug)]
struct Entry {
    /// Seconds since the epoch when the object was created.
    created: i64,
    binds: Box<[Bind]>,
    claims: Box<[Claim]>,
}

/// The overlapping claim of an object created earlier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// Who holds it.
    pub holder: Key,
    /// The host both claim, as the narrower of the two claims writes it.
    pub host: String,
    /// Where: a gateway workload and port, a Gateway, or the mesh.
    pub place: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host {:?} on {} is claimed by {}, created earlier",
            self.host, self.place, self.holder
        )
    }
}

/// Who came first: creation time, then name, namespace and kind.
type Order<'a> = (i64, &'a str, &'a str, Kind);

fn order(created: i64, key: &Key) -> Order<'_> {
    (created, &key.name, &key.namespace, key.kind)
}

/// Every claim the operator knows of, by place and host.
#[derive(Debug, Default)]
pub struct Index {
    entries: HashMap<Key, Entry>,
    places: HashMap<Place, Claimants>,
    /// The servers of each Istio Gateway (from the listener binds): where its routes apply.
    servers: HashMap<Text, Vec<(Text, u32, Text)>>,
    /// Who routes through each Istio Gateway of someone else: their claims move when its
    /// servers change. (A release's routes through the Gateway it creates move with it.)
    routed_through: HashMap<Text, Vec<Key>>,
    /// Every selector once: thousands of releases name the same few gateway workloads.
    selectors: HashSet<Text>,
}

impl Index {
    /// Sets what `key` (created at `created`) claims. Returns the others whose verdict may have
    /// changed: the later ones whose claims overlap what `key` claimed before or claims now, and
    /// those whose routes go through a Gateway whose servers changed. Nothing when nothing
    /// changed.
    pub fn set(&mut self, key: Key, created: i64, mut binds: Vec<Bind>) -> BTreeSet<Key> {
        binds.sort();
        binds.dedup();
        if self
            .entries
            .get(&key)
            .is_some_and(|e| e.created == created && *e.binds == *binds)
        {
            return BTreeSet::new();
        }
        for bind in &mut binds {
            if let Bind::Listener { selector, .. } = bind {
                *selector = self.intern(selector);
            }
        }
        // The Gateways whose servers this changes, before and after: routes through them move.
        let mut gateways = (self.entries.get(&key))
            .map(|e| listener_gateways(&e.binds))
            .unwrap_or_default();
        let own = listener_gateways(&binds);
        gateways.extend(own.iter().cloned());
        let earliest = self.entries.get(&key).map_or(created, |e| e.created);
        let mut touched = self.take(&key);
        for bind in &binds {
            match bind {
                Bind::Listener {
                    gateway,
                    selector,
                    port,
                    host,
                } => {
                    let servers = self.servers.entry(gateway.clone()).or_default();
                    let server = (selector.clone(), *port, host.clone());
                    if !servers.contains(&server) {
                        servers.push(server);
                    }
                }
                Bind::Route { gateway, .. } if !own.contains(gateway) => {
                    let keys = self.routed_through.entry(gateway.clone()).or_default();
                    if !keys.contains(&key) {
                        keys.push(key.clone());
                    }
                }
                _ => {}
            }
        }
        let claims = self.resolve(&binds);
        self.add(&key, &claims);
        touched.extend(self.overlapping(&key, &claims));
        self.entries.insert(
            key.clone(),
            Entry {
                created,
                binds: binds.into_boxed_slice(),
                claims,
            },
        );
        touched = self.later(&key, earliest.min(created), touched);
        for gateway in gateways {
            touched.extend(self.reroute(&gateway, &key));
        }
        touched.remove(&key);
        touched
    }

    /// The one copy of `selector`.
    fn intern(&mut self, selector: &Text) -> Text {
        match self.selectors.get(selector) {
            Some(known) => known.clone(),
            None => {
                self.selectors.insert(selector.clone());
                selector.clone()
            }
        }
    }

    /// Forgets `key`. Returns the later ones whose claims overlapped its own: they may be free.
    pub fn remove(&mut self, key: &Key) -> BTreeSet<Key> {
        let mut touched = BTreeSet::new();
        if let Some(entry) = self.entries.get(key) {
            let (gateways, created) = (listener_gateways(&entry.binds), entry.created);
            touched = self.take(key);
            touched = self.later(key, created, touched);
            for gateway in gateways {
                touched.extend(self.reroute(&gateway, key));
            }
        }
        touched.remove(key);
        touched
    }

    /// Every key of `kind`, to find those a relist no longer shows.
    pub fn keys_of(&self, kind: Kind) -> Vec<Key> {
        self.entries
            .keys()
            .filter(|k| k.kind == kind)
            .cloned()
            .collect()
    }

    /// The oldest claim of anybody else that overlaps one of `key`'s and was made earlier
    /// (creation time, then name, namespace and kind): `key` must not route while it stands.
    pub fn conflict(&self, key: &Key) -> Option<Conflict> {
        let entry = self.entries.get(key)?;
        let mine = order(entry.created, key);
        let mut oldest: Option<(Order, Conflict)> = None;
        for claim in &entry.claims {
            for (other, host) in self.claimants(claim) {
                let (Some((holder, theirs)), Some(overlap)) = (
                    self.entries.get_key_value(&other),
                    overlap(&claim.host, &host),
                ) else {
                    continue;
                };
                if holder == key {
                    continue;
                }
                let theirs = order(theirs.created, holder);
                if theirs < mine && oldest.as_ref().is_none_or(|(o, _)| theirs < *o) {
                    oldest = Some((
                        theirs,
                        Conflict {
                            holder: holder.clone(),
                            host: overlap.to_owned(),
                            place: claim.place.to_string(),
                        },
                    ));
                }
            }
        }
        oldest.map(|(_, conflict)| conflict)
    }

    /// Those of `others` that come after `key` created at `created`: only their verdict can
    /// change with `key`'s claims.
    fn later(&self, key: &Key, created: i64, others: BTreeSet<Key>) -> BTreeSet<Key> {
        let mine = order(created, key);
        others
            .into_iter()
            .filter(|k| {
                self.entries
                    .get(k)
                    .is_some_and(|e| order(e.created, k) > mine)
            })
            .collect()
    }

    /// Removes `key`'s entry and its claims; returns the others its claims overlapped.
    fn take(&mut self, key: &Key) -> BTreeSet<Key> {
        let Some(entry) = self.entries.remove(key) else {
            return BTreeSet::new();
        };
        let touched = self.overlapping(key, &entry.claims);
        self.drop_claims(key, &entry.claims);
        for bind in &entry.binds {
            match bind {
                Bind::Listener {
                    gateway,
                    selector,
                    port,
                    host,
                } => {
                    if let Some(servers) = self.servers.get_mut(gateway) {
                        servers.retain(|s| (&s.0, s.1, &s.2) != (selector, *port, host));
                        if servers.is_empty() {
                            self.servers.remove(gateway);
                        }
                    }
                }
                Bind::Route { gateway, .. } => {
                    if let Some(keys) = self.routed_through.get_mut(gateway) {
                        keys.retain(|k| k != key);
                        if keys.is_empty() {
                            self.routed_through.remove(gateway);
                        }
                    }
                }
                _ => {}
            }
        }
        touched
    }

    /// Resolves again the claims of everybody routing through `gateway` (but `except`, done by
    /// the caller), whose servers changed. Returns them and whom their claims overlapped.
    fn reroute(&mut self, gateway: &str, except: &Key) -> BTreeSet<Key> {
        let mut touched = BTreeSet::new();
        let keys: Vec<Key> = self
            .routed_through
            .get(gateway)
            .map(|k| k.iter().filter(|k| *k != except).cloned().collect())
            .unwrap_or_default();
        for key in keys {
            let Some(entry) = self.entries.get(&key) else {
                continue;
            };
            let (old, binds) = (entry.claims.clone(), entry.binds.clone());
            let new = self.resolve(&binds);
            if new == old {
                continue;
            }
            touched.extend(self.overlapping(&key, &old));
            self.drop_claims(&key, &old);
            self.add(&key, &new);
            touched.extend(self.overlapping(&key, &new));
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.claims = new;
            }
            touched.insert(key);
        }
        touched
    }

    /// The claims `binds` make, with routes through Istio Gateways placed on their servers'
    /// workloads and ports.
    fn resolve(&self, binds: &[Bind]) -> Box<[Claim]> {
        let mut claims = Vec::new();
        let mut claim = |place, host: &Text, listener| {
            claims.push(Claim {
                place,
                host: host.clone(),
                listener,
            })
        };
        for bind in binds {
            match bind {
                Bind::Listener {
                    selector,
                    port,
                    host,
                    ..
                } => claim(
                    Place::Listeners {
                        selector: selector.clone(),
                        port: *port,
                    },
                    host,
                    Listener::default(),
                ),
                Bind::Route { gateway, host } => {
                    let mut placed = false;
                    for (selector, port, served) in self.servers.get(gateway).into_iter().flatten()
                    {
                        if overlap(served, host).is_some() {
                            placed = true;
                            claim(
                                Place::Routes {
                                    selector: selector.clone(),
                                    port: *port,
                                },
                                host,
                                Listener::default(),
                            );
                        }
                    }
                    if !placed {
                        claim(
                            Place::Unresolved {
                                gateway: gateway.clone(),
                            },
                            host,
                            Listener::default(),
                        );
                    }
                }
                Bind::ParentRoute {
                    gateway,
                    section,
                    port,
                    host,
                } => claim(
                    Place::Parent {
                        gateway: gateway.clone(),
                    },
                    host,
                    Listener {
                        section: section.clone(),
                        port: *port,
                    },
                ),
                Bind::MeshRoute { host } => claim(Place::Mesh, host, Listener::default()),
            }
        }
        claims.sort();
        claims.dedup();
        claims.into_boxed_slice()
    }

    fn add(&mut self, key: &Key, claims: &[Claim]) {
        for c in claims {
            let claimants = self.places.entry(c.place.clone()).or_default();
            if is_wildcard(&c.host) {
                claimants
                    .wildcards
                    .entry(key.clone())
                    .or_default()
                    .push((c.host.clone(), c.listener.clone()));
            } else {
                // Most hosts have one claimant: no room for more until a second comes.
                claimants
                    .exact
                    .entry(c.host.clone())
                    .or_insert_with(|| Vec::with_capacity(1))
                    .push((key.clone(), c.listener.clone()));
            }
        }
    }

    fn drop_claims(&mut self, key: &Key, claims: &[Claim]) {
        for c in claims {
            let Some(claimants) = self.places.get_mut(&c.place) else {
                continue;
            };
            if is_wildcard(&c.host) {
                claimants.wildcards.remove(key);
            } else if let Some(keys) = claimants.exact.get_mut(&c.host) {
                keys.retain(|(k, _)| k != key);
                if keys.is_empty() {
                    claimants.exact.remove(&c.host);
                }
            }
            if claimants.is_empty() {
                self.places.remove(&c.place);
            }
        }
    }

    /// Whoever else claims a host overlapping one of `claims`.
    fn overlapping(&self, key: &Key, claims: &[Claim]) -> BTreeSet<Key> {
        claims
            .iter()
            .flat_map(|c| self.claimants(c))
            .map(|(k, _)| k)
            .filter(|k| k != key)
            .collect()
    }

    /// Everybody with a claim overlapping `claim` (`key` itself included), with the host they
    /// claim.
    fn claimants(&self, claim: &Claim) -> Vec<(Key, Text)> {
        let Some(claimants) = self.places.get(&claim.place) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut take = |key: &Key, host: &Text, listener: &Listener| {
            if claim.listener.overlaps(listener) && overlap(&claim.host, host).is_some() {
                found.push((key.clone(), host.clone()));
            }
        };
        if is_wildcard(&claim.host) {
            for (host, keys) in &claimants.exact {
                for (key, listener) in keys {
                    take(key, host, listener);
                }
            }
        } else if let Some(keys) = claimants.exact.get(&claim.host) {
            for (key, listener) in keys {
                take(key, &claim.host, listener);
            }
        }
        for (key, hosts) in &claimants.wildcards {
            for (host, listener) in hosts {
                take(key, host, listener);
            }
        }
        found
    }
}

/// The Istio Gateways whose servers `binds` declare.
fn listener_gateways(binds: &[Bind]) -> BTreeSet<Text> {
    binds
        .iter()
        .filter_map(|b| match b {
            Bind::Listener { gateway, .. } => Some(gateway.clone()),
            _ => None,
        })
        .collect()
}

/// A label selector as `kubectl -l` takes it, `k=v,k2=v2` (keys sorted, as a BTreeMap gives
/// them): how a Gateway's workload is named in claims and messages.
pub fn selector_text(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `namespace/name` of an Istio Gateway that a route (a VirtualService, or a release's
/// `gateway.existing`) names, relative to the route's namespace as Istio reads it.
pub fn gateway_ref(gateway: &str, namespace: &str) -> Text {
    match gateway.split_once('/') {
        Some(_) => gateway.into(),
        None => format!("{namespace}/{gateway}").into(),
    }
}

fn is_wildcard(host: &str) -> bool {
    host.starts_with('*')
}

/// The hosts both `a` and `b` match, as the narrower of the two writes them; `None` when none.
/// `*` matches every host, `*.example.com` every host that ends in `.example.com` (not
/// `example.com` itself), as Istio and the Gateway API read them.
pub fn overlap<'a>(a: &'a str, b: &'a str) -> Option<&'a str> {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (None, None) => (a == b).then_some(a),
        (Some(suffix), None) => (b.len() > suffix.len() && b.ends_with(suffix)).then_some(b),
        (None, Some(suffix)) => (a.len() > suffix.len() && a.ends_with(suffix)).then_some(a),
        (Some(sa), Some(sb)) if sa.ends_with(sb) => Some(a),
        (Some(sa), Some(sb)) if sb.ends_with(sa) => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_overlap_as_the_routers_match_them() {
        let cases = [
            (
                "*",
                "chat.example.com",
                Some("chat.example.com"),
                "* matches all",
            ),
            ("*", "*", Some("*"), "both everything"),
            (
                "*",
                "*.example.com",
                Some("*.example.com"),
                "the narrower wildcard",
            ),
            (
                "*.example.com",
                "chat.example.com",
                Some("chat.example.com"),
                "a host under the wildcard",
            ),
            (
                "*.example.com",
                "a.b.example.com",
                Some("a.b.example.com"),
                "any depth",
            ),
            (
                "*.example.com",
                "example.com",
                None,
                "not the domain itself",
            ),
            ("*.example.com", "chat.example.org", None, "another domain"),
            (
                "*.example.com",
                "*.b.example.com",
                Some("*.b.example.com"),
                "nested wildcards",
            ),
            ("*.example.com", "*.example.org", None, "disjoint wildcards"),
            (
                "chat.example.com",
                "chat.example.com",
                Some("chat.example.com"),
                "equal",
            ),
            ("chat.example.com", "chat2.example.com", None, "distinct"),
            (
                "a.example.com",
                "ba.example.com",
                None,
                "a suffix is not a subdomain",
            ),
        ];
        for (a, b, expected, what) in cases {
            assert_eq!(overlap(a, b), expected, "{what}: {a} ~ {b}");
            assert_eq!(overlap(b, a), expected, "{what}, reversed: {b} ~ {a}");
        }
    }

    #[test]
    fn selector_text_is_what_kubectl_takes() {
        let selector: BTreeMap<String, String> = [
            ("istio".to_owned(), "ingressgateway".to_owned()),
            ("app".to_owned(), "gw".to_owned()),
        ]
        .into();
        assert_eq!(selector_text(&selector), "app=gw,istio=ingressgateway");
    }

    const SELECTOR: &str = "istio=ingressgateway";

    fn release(ns: &str, name: &str) -> Key {
        Key::new(Kind::CanaryRelease, ns, name)
    }

    /// What a release that creates its Gateway claims: the server, and the route through it.
    fn created(ns: &str, name: &str, port: u32, hosts: &[&str]) -> Vec<Bind> {
        let gateway: Text = format!("{ns}/{name}").into();
        hosts
            .iter()
            .flat_map(|h| {
                [
                    Bind::Listener {
                        gateway: gateway.clone(),
                        selector: SELECTOR.into(),
                        port,
                        host: (*h).into(),
                    },
                    Bind::Route {
                        gateway: gateway.clone(),
                        host: (*h).into(),
                    },
                ]
            })
            .collect()
    }

    /// A server of the platform's Gateway `istio-ingress/public`, someone else's.
    fn public_server(port: u32, host: &str) -> Vec<Bind> {
        vec![Bind::Listener {
            gateway: "istio-ingress/public".into(),
            selector: SELECTOR.into(),
            port,
            host: host.into(),
        }]
    }

    fn parent(gateway: &str, section: Option<&str>, host: &str) -> Bind {
        Bind::ParentRoute {
            gateway: gateway.into(),
            section: section.map(Text::from),
            port: None,
            host: host.into(),
        }
    }

    fn route(gateway: &str, host: &str) -> Bind {
        Bind::Route {
            gateway: gateway.into(),
            host: host.into(),
        }
    }

    type Holding = (Key, i64, Vec<Bind>);

    /// Each case: what is held (key, creation second, binds), and for the last one the holder of
    /// the conflict it has, if any.
    #[test]
    fn the_oldest_overlapping_claim_wins() {
        let first = || release("lab", "first");
        let second = || release("team", "second");
        let foreign_gateway = || Key::new(Kind::Gateway, "istio-ingress", "public");
        let foreign_vs = || Key::new(Kind::VirtualService, "other", "chat");
        let cases: Vec<(&str, Vec<Holding>, Option<Key>)> = vec![
            (
                "two releases with * on one gateway: the later loses",
                vec![
                    (first(), 10, created("lab", "first", 80, &["*"])),
                    (second(), 20, created("team", "second", 80, &["*"])),
                ],
                Some(first()),
            ),
            (
                "the earlier one does not lose, whatever order it is set in",
                vec![
                    (second(), 20, created("team", "second", 80, &["*"])),
                    (first(), 10, created("lab", "first", 80, &["*"])),
                ],
                None,
            ),
            (
                "a wildcard overlaps a host under it",
                vec![
                    (first(), 10, created("lab", "first", 80, &["*.example.com"])),
                    (
                        second(),
                        20,
                        created("team", "second", 80, &["chat.example.com"]),
                    ),
                ],
                Some(first()),
            ),
            (
                "distinct hosts",
                vec![
                    (first(), 10, created("lab", "first", 80, &["a.example.com"])),
                    (
                        second(),
                        20,
                        created("team", "second", 80, &["b.example.com"]),
                    ),
                ],
                None,
            ),
            (
                "another port of the same pods",
                vec![
                    (first(), 10, created("lab", "first", 80, &["*"])),
                    (second(), 20, created("team", "second", 8080, &["*"])),
                ],
                None,
            ),
            (
                "same second: the name decides",
                vec![
                    (first(), 10, created("lab", "first", 80, &["*"])),
                    (second(), 10, created("team", "second", 80, &["*"])),
                ],
                Some(first()),
            ),
            (
                "a route through an existing Gateway on the same pods and port",
                vec![
                    (
                        // Younger than both: its own `*` server would overlap second's otherwise.
                        foreign_gateway(),
                        30,
                        public_server(80, "*"),
                    ),
                    (
                        first(),
                        10,
                        vec![route("istio-ingress/public", "chat.example.com")],
                    ),
                    (
                        second(),
                        20,
                        created("team", "second", 80, &["chat.example.com"]),
                    ),
                ],
                Some(first()),
            ),
            (
                "binding to an existing Gateway is no conflict with the Gateway itself",
                vec![
                    (foreign_gateway(), 1, public_server(80, "*")),
                    (
                        first(),
                        10,
                        vec![route("istio-ingress/public", "chat.example.com")],
                    ),
                ],
                None,
            ),
            (
                "creating a Gateway server an older foreign one has (IST0145)",
                vec![
                    (foreign_gateway(), 1, public_server(80, "chat.example.com")),
                    (
                        first(),
                        10,
                        created("lab", "first", 80, &["chat.example.com"]),
                    ),
                ],
                Some(foreign_gateway()),
            ),
            (
                "a foreign VirtualService through a Gateway it is not told of yet",
                vec![
                    (foreign_vs(), 5, vec![route("lab/gw", "chat.example.com")]),
                    (first(), 10, vec![route("lab/gw", "*")]),
                ],
                Some(foreign_vs()),
            ),
            (
                "Gateway API: one parent, overlapping hostnames",
                vec![
                    (first(), 10, vec![parent("gw/shared", None, "*")]),
                    (
                        second(),
                        20,
                        vec![parent("gw/shared", None, "chat.example.com")],
                    ),
                ],
                Some(first()),
            ),
            (
                "Gateway API: two listeners of one parent",
                vec![
                    (first(), 10, vec![parent("gw/shared", Some("http"), "*")]),
                    (second(), 20, vec![parent("gw/shared", Some("https"), "*")]),
                ],
                None,
            ),
            (
                "Gateway API: a route to every listener meets one to a listener",
                vec![
                    (first(), 10, vec![parent("gw/shared", Some("http"), "*")]),
                    (second(), 20, vec![parent("gw/shared", None, "*")]),
                ],
                Some(first()),
            ),
            (
                "Gateway API: another parent",
                vec![
                    (first(), 10, vec![parent("gw/a", None, "*")]),
                    (second(), 20, vec![parent("gw/b", None, "*")]),
                ],
                None,
            ),
            (
                "the mesh: a foreign VirtualService for the Service's host",
                vec![
                    (
                        foreign_vs(),
                        5,
                        vec![Bind::MeshRoute {
                            host: "chat.lab.svc.cluster.local".into(),
                        }],
                    ),
                    (
                        first(),
                        10,
                        vec![Bind::MeshRoute {
                            host: "chat.lab.svc.cluster.local".into(),
                        }],
                    ),
                ],
                Some(foreign_vs()),
            ),
            (
                "the mesh and a gateway are different places",
                vec![
                    (
                        foreign_vs(),
                        5,
                        vec![Bind::MeshRoute {
                            host: "*.example.com".into(),
                        }],
                    ),
                    (
                        first(),
                        10,
                        created("lab", "first", 80, &["chat.example.com"]),
                    ),
                ],
                None,
            ),
        ];
        for (what, held, expected) in cases {
            let mut index = Index::default();
            let Some((last, _, _)) = held.last().cloned() else {
                panic!("{what}: no holders")
            };
            for (key, created, binds) in held {
                index.set(key, created, binds);
            }
            assert_eq!(index.conflict(&last).map(|c| c.holder), expected, "{what}");
        }
    }

    #[test]
    fn a_conflict_names_the_holder_the_host_and_the_place() {
        let mut index = Index::default();
        index.set(
            release("lab", "first"),
            10,
            created("lab", "first", 80, &["*"]),
        );
        index.set(
            release("team", "second"),
            20,
            created("team", "second", 80, &["chat.example.com"]),
        );
        let conflict = index.conflict(&release("team", "second"));
        let text = conflict.map(|c| c.to_string()).unwrap_or_default();
        assert!(text.contains("CanaryRelease lab/first"), "{text}");
        assert!(text.contains("\"chat.example.com\""), "{text}");
        assert!(text.contains(SELECTOR), "{text}");
        assert!(text.contains("port 80"), "{text}");
    }

    /// Each change tells whom to look at again: the release that lost, when the winner goes or
    /// moves; nobody when nothing changed.
    #[test]
    fn changes_name_whom_they_touch() {
        let mut index = Index::default();
        let (a, b, c) = (
            release("lab", "a"),
            release("lab", "b"),
            release("lab", "c"),
        );
        assert!(
            index
                .set(b.clone(), 2, created("lab", "b", 80, &["chat.example.com"]))
                .is_empty()
        );
        let touched = index.set(a.clone(), 1, created("lab", "a", 80, &["*"]));
        assert_eq!(
            touched,
            BTreeSet::from([b.clone()]),
            "b is younger: it lost"
        );
        index.set(
            c.clone(),
            3,
            created("lab", "c", 80, &["other.example.com"]),
        );
        assert_eq!(
            index.set(b.clone(), 2, created("lab", "b", 80, &["chat.example.com"])),
            BTreeSet::new(),
            "the same claims again: nothing to look at"
        );
        assert!(index.conflict(&b).is_some() && index.conflict(&c).is_some());
        // a leaves: b and c are free again, and are told.
        assert_eq!(index.remove(&a), BTreeSet::from([b.clone(), c.clone()]));
        assert_eq!(index.conflict(&b), None);
        assert_eq!(index.conflict(&c), None);
        // b moves to c's host: c (younger) loses; both are told.
        let touched = index.set(
            b.clone(),
            2,
            created("lab", "b", 80, &["other.example.com"]),
        );
        assert_eq!(touched, BTreeSet::from([c.clone()]));
        assert_eq!(index.conflict(&c).map(|x| x.holder), Some(b.clone()));
        assert_eq!(index.keys_of(Kind::CanaryRelease).len(), 2);
        assert!(index.remove(&release("lab", "never")).is_empty());
    }

    /// A route through an existing Gateway is placed on its servers' pods once the Gateway is
    /// known, and moves with them.
    #[test]
    fn routes_follow_their_gateways_servers() {
        let mut index = Index::default();
        let gateway = Key::new(Kind::Gateway, "istio-ingress", "public");
        let server = |port| public_server(port, "*");
        let (bound, creator) = (release("lab", "bound"), release("team", "creator"));
        index.set(
            bound.clone(),
            1,
            vec![route("istio-ingress/public", "chat.example.com")],
        );
        index.set(
            creator.clone(),
            2,
            created("team", "creator", 80, &["chat.example.com"]),
        );
        assert_eq!(
            index.conflict(&creator),
            None,
            "the Gateway is not known yet"
        );
        // Created after both: its own server overlaps the creator's, but it is the younger.
        let touched = index.set(gateway.clone(), 5, server(80));
        assert!(touched.contains(&bound), "{touched:?}");
        assert!(touched.contains(&creator), "{touched:?}");
        assert_eq!(
            index.conflict(&creator).map(|c| c.holder),
            Some(bound.clone())
        );
        index.set(gateway.clone(), 5, server(8080));
        assert_eq!(index.conflict(&creator), None, "the Gateway moved to 8080");
        index.set(gateway.clone(), 5, server(80));
        assert!(index.conflict(&creator).is_some());
        index.remove(&gateway);
        assert_eq!(index.conflict(&creator), None, "the Gateway is gone");
        assert!(index.places.values().all(|p| !p.is_empty()));
        index.remove(&bound);
        index.remove(&creator);
        assert!(index.places.is_empty() && index.servers.is_empty());
        assert!(index.routed_through.is_empty() && index.entries.is_empty());
    }
}
