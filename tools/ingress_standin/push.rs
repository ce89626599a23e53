//! What `xdsroutes` prints, one JSON line per push of istiod: the shape of the data only, so that
//! the plan can be made from it without running anything.

/// One push of `xdsroutes`: the gateway's virtual hosts and their routes, as
/// hack/tools/istio/xdsroutes/main.go describes them. Absent fields are what a route without
/// conditions or headers leaves out.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Push {
    pub(crate) virtual_hosts: Vec<PushedHost>,
}

#[derive(serde::Deserialize)]
pub(crate) struct PushedHost {
    pub(crate) domains: Vec<String>,
    pub(crate) routes: Vec<PushedRoute>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PushedRoute {
    pub(crate) name: String,
    pub(crate) clusters: Vec<PushedCluster>,
    pub(crate) direct_response: u32,
    #[serde(rename = "match")]
    pub(crate) conditions: PushedMatch,
    pub(crate) response_headers_to_add: Vec<PushedHeader>,
    pub(crate) response_headers_to_remove: Vec<String>,
    pub(crate) redirect: bool,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PushedMatch {
    pub(crate) prefix: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) regex: Option<String>,
    pub(crate) path_separated_prefix: Option<String>,
    pub(crate) case_sensitive: Option<bool>,
    pub(crate) headers: Vec<PushedHeaderMatch>,
    pub(crate) other: Vec<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PushedHeaderMatch {
    pub(crate) name: String,
    pub(crate) exact: Option<String>,
    pub(crate) regex: Option<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) suffix: Option<String>,
    pub(crate) contains: Option<String>,
    pub(crate) present: Option<bool>,
    pub(crate) other: Option<String>,
    pub(crate) ignore_case: bool,
    pub(crate) invert: bool,
    pub(crate) treat_missing_as_empty: bool,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PushedCluster {
    pub(crate) name: String,
    pub(crate) weight: u32,
    #[serde(default)]
    pub(crate) response_headers_to_add: Vec<PushedHeader>,
    #[serde(default)]
    pub(crate) response_headers_to_remove: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PushedHeader {
    pub(crate) name: String,
    pub(crate) value: String,
    #[serde(default)]
    pub(crate) append_action: String,
}
