//! Connecting the way kubectl does, so that a plugin invoked as `kubectl canary ...` talks to the
//! same cluster, as the same user, in the same namespace as the `kubectl` next to it: `KUBECONFIG`
//! or `~/.kube/config`, the current context unless `--context` names another, and the context's
//! namespace unless `-n` names one.

use std::path::PathBuf;

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::fmt::rfc2822::DateTimeParser;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::Error;
use crate::api::CanaryRelease;

/// kubectl's connection flags, as given on the command line.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

/// A client and the namespace commands act in.
#[derive(Clone)]
pub struct Target {
    pub client: Client,
    pub namespace: String,
}

pub async fn connect(options: &ConnectOptions) -> Result<Target, Error> {
    let kube_options = KubeConfigOptions {
        context: options.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&options.kubeconfig, &options.context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(file, &kube_options).await?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&kube_options).await?,
        // Also covers running inside a pod, as kubectl does.
        (None, None) => kube::Config::infer().await?,
    };
    let namespace = options
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)?;
    Ok(Target { client, namespace })
}

impl Target {
    /// A merge patch of release `name` as the user, with the plugin's field manager, as `kubectl
    /// patch --type merge` (and `kubectl edit`) send: only the fields it names change, whoever
    /// manages the rest.
    pub async fn merge_patch(
        &self,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<CanaryRelease, kube::Error> {
        let params = kube::api::PatchParams {
            field_manager: Some(super::FIELD_MANAGER.to_owned()),
            ..kube::api::PatchParams::default()
        };
        self.releases()
            .patch(name, &params, &kube::api::Patch::Merge(patch))
            .await
    }

    /// The API server's clock, from the `Date` header of its answer to `GET /version` (which every
    /// authenticated user may read): the operator judges a request's stamp by a clock in the
    /// cluster, and the laptop's may be wrong. `None` when the server sends no readable date.
    pub async fn server_time(&self) -> Option<Timestamp> {
        let request = http::Request::get("/version")
            .body(kube::client::Body::from(Vec::new()))
            .ok()?;
        let response = self.client.send(request).await.ok()?;
        let date = response.headers().get(http::header::DATE)?.to_str().ok()?;
        http_date(date)
    }

    pub fn releases(&self) -> kube::Api<CanaryRelease> {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The release, or [`Error::NotFound`] naming what was looked for (a 404 alone does not
    /// say which namespace the plugin looked in, which is the usual mistake).
    pub async fn release(&self, name: &str) -> Result<CanaryRelease, Error> {
        self.releases()
            .get_opt(name)
            .await?
            .ok_or_else(|| Error::NotFound {
                name: name.to_owned(),
                namespace: self.namespace.clone(),
            })
    }
}

/// An HTTP `Date` header (`Mon, 07 Dec 2026 23:00:09 GMT`, RFC 9110), which RFC 2822 parsing reads.
pub fn http_date(text: &str) -> Option<Timestamp> {
    DateTimeParser::new().parse_timestamp(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_read() {
        let cases = [
            (
                "Mon, 07 Dec 2026 23:00:09 GMT",
                Some("2026-12-07T23:00:09Z"),
            ),
            (
                "Mon, 07 Dec 2026 23:00:09 +0000",
                Some("2026-12-07T23:00:09Z"),
            ),
            ("yesterday", None),
        ];
        for (header, expected) in cases {
            assert_eq!(
                http_date(header).map(|t| t.to_string()).as_deref(),
                expected,
                "{header}"
            );
        }
    }
}
