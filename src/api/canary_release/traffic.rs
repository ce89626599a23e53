//! How requests reach the versions: the traffic provider and its settings, the Istio gateway,
//! and sticky conversations.

// Printer columns and rules repeat attributes, which this lint takes for duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How requests reach the versions.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.provider == 'gatewayAPI') == has(self.gatewayAPI)").message("traffic.gatewayAPI is set with provider gatewayAPI, and only then"))]
#[x_kube(validation = Rule::new("!has(self.mesh) || !self.mesh || self.provider == 'istio'").message("traffic.mesh applies to the istio provider"))]
pub struct TrafficSpec {
    /// What the operator writes to route requests: `istio` (a DestinationRule with a subset per
    /// version and a VirtualService splitting between them, as in the lab) or `gatewayAPI` (a
    /// Service per version, named `<release>-<version>`, and an HTTPRoute splitting between them,
    /// for any Gateway API implementation). Changing it on a live release creates the new objects
    /// before the old ones are removed.
    #[serde(default)]
    pub provider: TrafficProvider,

    /// Istio: also split calls made inside the mesh to the release's Service (the VirtualService
    /// is bound to `mesh` and names the Service's host). Without `gateway`, only those are split.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mesh: bool,

    /// Gateway API: the Gateways the HTTPRoute attaches to, and the host names it serves.
    #[serde(
        default,
        rename = "gatewayAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiSpec>,

    /// Keeps a conversation on the version that answered its first request: each answer of the
    /// split carries the version (a cookie, or a response header for API clients), and a request
    /// that carries it back goes to that version while it has a share of the traffic. Without it
    /// every request is split anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stickiness: Option<StickinessSpec>,
}

/// Who routes requests to the versions.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum TrafficProvider {
    /// Istio's DestinationRule and VirtualService.
    #[default]
    #[serde(rename = "istio")]
    Istio,
    /// The Kubernetes Gateway API's HTTPRoute.
    #[serde(rename = "gatewayAPI")]
    GatewayApi,
}

impl TrafficProvider {
    pub const ALL: [TrafficProvider; 2] = [TrafficProvider::Istio, TrafficProvider::GatewayApi];

    /// The name written in the spec and in `--traffic-providers`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficProvider::Istio => "istio",
            TrafficProvider::GatewayApi => "gatewayAPI",
        }
    }

    pub fn parse(text: &str) -> Option<TrafficProvider> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

/// The Gateway API's side of a release.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiSpec {
    /// The Gateways (or their listeners) the HTTPRoute attaches to. A Gateway in another namespace
    /// must allow routes from this one (its listener's `allowedRoutes`); a route no parent accepts
    /// makes the release not Ready, with the Gateway's reason.
    #[schemars(length(min = 1, max = 32))]
    pub parent_refs: Vec<ParentRefSpec>,

    /// Host names the HTTPRoute serves, such as chat.example.com or *.example.com; empty serves
    /// every host name of the listeners it attaches to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub hostnames: Vec<String>,
}

/// A Gateway, or one listener of it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentRefSpec {
    /// The Gateway's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// The Gateway's namespace; the release's own when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,

    /// One listener of the Gateway, by name; all of its listeners that allow the route when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,

    /// The listeners of the Gateway on this port only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// How a conversation is kept on one version. Set exactly one of `cookie` and `header`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.cookie) != has(self.header)").message("set exactly one of stickiness.cookie (browsers) or stickiness.header (API clients)"))]
pub struct StickinessSpec {
    /// For browsers: each answer of the split sets this cookie to the version that gave it, and
    /// the browser sends it back with every later request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieStickiness>,

    /// For API clients: each answer of the split carries this header with the version that gave
    /// it; a client that sends the header (with that value) on later requests of the conversation
    /// reaches the same version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderStickiness>,
}

/// The cookie that carries a conversation's version.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CookieStickiness {
    /// The cookie's name, for example `canary-model`.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub name: String,

    /// How long the browser keeps the cookie, as a duration (`30m`, `24h`); a session cookie,
    /// kept until the browser closes, when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// The header that carries a conversation's version.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderStickiness {
    /// The header's name, in lower case, for example `x-canary-model`.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9][a-z0-9-]*$"))]
    pub name: String,
}

/// Where traffic enters. Set `selector` to have the operator create a Gateway named after the
/// release, or `existing` to bind to gateways managed elsewhere; not both.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.selector) != has(self.existing)").message("set exactly one of gateway.selector (create a Gateway) or gateway.existing (use existing gateways)"))]
#[x_kube(validation = Rule::new("!has(self.existing) || !has(self.port)").message("gateway.port applies only to a Gateway the operator creates (gateway.selector)"))]
pub struct IngressSpec {
    /// Labels of the ingress gateway pods the created Gateway binds to, for example
    /// `istio: aks-istio-ingressgateway-external`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub selector: Option<BTreeMap<String, String>>,

    /// Port the created Gateway listens on for HTTP (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// Existing gateways to bind the VirtualService to, as `name` (same namespace) or `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub existing: Option<Vec<String>>,

    /// Host names the VirtualService (and a created Gateway) accepts; `*` accepts any Host header.
    #[serde(default = "default_hosts")]
    #[schemars(length(min = 1))]
    pub hosts: Vec<String>,
}

fn default_hosts() -> Vec<String> {
    vec!["*".to_owned()]
}
