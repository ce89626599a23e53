//! The parts of Istio's `networking.istio.io/v1` API that the operator writes.
//!
//! Istio owns these CRDs, so no schema is derived here (`schema = "disabled"`); fields we do not
//! model are ignored when reading, which is harmless because drift is judged only on the fields we
//! write.

use std::collections::BTreeMap;

use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// Routing rules for a host: here, one HTTP route split by weight between two subsets.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "VirtualService",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
}

impl VirtualService {
    /// The split this VirtualService carries: each subset its catch-all routes (those without a
    /// match) name, with its weight, in route order. The one place where weights are read back
    /// from Istio's objects: status, `kubectl canary`, the bench and the tests all read the split
    /// through it. The match routes of a sticky release send a conversation back to its version
    /// and carry no share of new traffic.
    pub fn weights(&self) -> Vec<(String, i32)> {
        self.spec
            .http
            .iter()
            .filter(|route| route.match_.is_empty())
            .flat_map(|route| &route.route)
            .map(|r| (r.destination.subset.clone().unwrap_or_default(), r.weight))
            .collect()
    }

    /// The weight the catch-all routes give `subset`, if one names it.
    pub fn weight_of(&self, subset: &str) -> Option<i32> {
        self.weights()
            .into_iter()
            .find(|(name, _)| name == subset)
            .map(|(_, weight)| weight)
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Requests the route takes; every request when empty.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<HttpMatchRequest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
}

/// Request headers a route matches, by name (lowercase).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct HttpMatchRequest {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
}

/// Exactly one of its fields, as Istio's `StringMatch` oneof.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// RE2, matched against the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Headers added to the answers a destination gives.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct HeaderOperations {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct HttpRouteDestination {
    pub destination: Destination,
    /// Istio omits a zero weight when it serialises; absent means 0 only when there are several
    /// destinations, which is always the case for our routes.
    #[serde(default)]
    pub weight: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct Destination {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct PortSelector {
    pub number: u32,
}

/// Names the subsets of a host by pod labels.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "DestinationRule",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
pub struct DestinationRuleSpec {
    pub host: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct Subset {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A load balancer at the edge of the mesh: which ingress gateway pods listen on which port for which hosts.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Gateway",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
pub struct GatewaySpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct Server {
    pub port: ServerPort,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct ServerPort {
    pub number: u32,
    pub name: String,
    pub protocol: String,
}
