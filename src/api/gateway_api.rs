//! The part of the Kubernetes Gateway API (`gateway.networking.k8s.io/v1`) that the operator writes:
//! an `HTTPRoute`, and what its parents (the Gateways) say about it in its status.
//!
//! The Gateway API's CRDs are installed by the cluster's owner, so no schema is derived here
//! (`schema = "disabled"`); fields we do not model are ignored when reading, which is harmless
//! because drift is judged only on the fields we write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// Requests for some host names, from some Gateways, sent to Services by rule.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    plural = "httproutes",
    namespaced,
    schema = "disabled",
    status = "RouteStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RouteRule>,
}

impl HTTPRoute {
    /// The weight of every Service the route's catch-all rules name, in rule order. The one
    /// place where weights are read back from an HTTPRoute, as `VirtualService::weights` is for
    /// Istio. The header-matching rules of a sticky release send a conversation back to its
    /// version and carry no share of new traffic.
    pub fn weights(&self) -> Vec<(String, i32)> {
        self.spec
            .rules
            .iter()
            .filter(|rule| rule.matches.iter().all(|m| m.headers.is_empty()))
            .flat_map(|rule| &rule.backend_refs)
            .map(|b| (b.name.clone(), b.weight.unwrap_or(1)))
            .collect()
    }

    /// The weight the catch-all rules give `service`, if one names it.
    pub fn weight_of(&self, service: &str) -> Option<i32> {
        self.weights()
            .into_iter()
            .find(|(name, _)| name == service)
            .map(|(_, weight)| weight)
    }
}

/// A Gateway (or a listener of one) the route asks to be attached to.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
}

/// The server fills in a path match (prefix `/`) when a rule has none.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// `Exact` (the server's default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    pub name: String,
    pub value: String,
}

/// A Service the rule sends requests to, with its share.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// The server defaults it to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<RouteFilter>,
}

/// Only the filter the operator writes: headers added to the answers of one backend.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteFilter {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
}

/// What the route's parents say about it: written by the Gateways' controllers, never by us.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct RouteStatus {
    #[serde(default)]
    pub parents: Vec<RouteParentStatus>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    pub parent_ref: ParentReference,
    #[serde(default)]
    pub controller_name: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
