//! Helm as a user runs it: the chart rendered (never reaching a cluster) or installed into a test
//! namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde::Deserialize;
use serde_json::Value;

use crate::common::host::skip;
use crate::common::{TestNs, WAIT, wait_for};
use crate::{CHART, RENDER_NAMESPACE, RENDER_RELEASE};

/// The helm binary: on PATH after `eval $(make -s cluster-env)`, else where hack/build-tools.sh
/// caches it.
pub fn helm_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("helm"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let cache = std::env::var_os("CANARY_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/canary-operator"))
            })?;
        let helm = cache.join("bin/helm");
        helm.is_file().then_some(helm)
    })
}

pub fn helm_or_skip(test_name: &str) -> Option<PathBuf> {
    let helm = helm_binary();
    if helm.is_none() {
        skip(
            test_name,
            "helm not found",
            "run `make tools` (it builds helm) and `eval $(make -s cluster-env)`",
        );
    }
    helm
}

pub fn run_helm(helm: &Path, args: &[&str]) -> Output {
    Command::new(helm)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running helm {args:?}: {e}"))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `--set` arguments for helm, one pair per value.
pub fn set_args(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| ["--set".to_owned(), (*v).to_owned()])
        .collect()
}

/// Renders the chart with `values`; the error is helm's stderr.
pub fn render(helm: &Path, values: &[&str]) -> Result<Vec<Value>, String> {
    let mut args = vec![
        "template",
        RENDER_RELEASE,
        CHART,
        "--namespace",
        RENDER_NAMESPACE,
    ];
    let sets = set_args(values);
    args.extend(sets.iter().map(String::as_str));
    let out = run_helm(helm, &args);
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    Ok(parse_documents(&text(&out.stdout)))
}

pub fn parse_documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).expect("rendered YAML parses"))
        .filter(|document| !document.is_null())
        .collect()
}

pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

pub fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

pub fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// A Helm release in a test namespace; uninstalled when dropped (before the namespace goes,
/// since it is declared after it), which removes its cluster-scoped objects too.
pub struct HelmRelease {
    helm: PathBuf,
    pub name: String,
    namespace: String,
    /// The name of the chart's objects (`<release>-canary-operator`).
    pub fullname: String,
}

impl HelmRelease {
    pub fn install(helm: &Path, ns: &TestNs, values: &[&str]) -> HelmRelease {
        // The namespace's name is unique per run, and so are the cluster-scoped names.
        let name = ns.name.clone();
        let mut args = vec![
            "install",
            &name,
            CHART,
            "--namespace",
            &ns.name,
            "--wait",
            "--timeout",
            "120s",
        ];
        let sets = set_args(values);
        args.extend(sets.iter().map(String::as_str));
        let started = Instant::now();
        let out = run_helm(helm, &args);
        assert!(
            out.status.success(),
            "helm install failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let notes = text(&out.stdout);
        assert!(notes.contains("kubectl -n NAMESPACE get crel"), "{notes}");
        eprintln!("helm install {name}: {:?}", started.elapsed());
        HelmRelease {
            helm: helm.to_owned(),
            fullname: format!("{name}-canary-operator"),
            name,
            namespace: ns.name.clone(),
        }
    }
}

impl Drop for HelmRelease {
    fn drop(&mut self) {
        let out = Command::new(&self.helm)
            .args([
                "uninstall",
                &self.name,
                "--namespace",
                &self.namespace,
                "--wait",
                "--timeout",
                "60s",
            ])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: helm uninstall {}: {}",
                self.name,
                text(&out.stderr)
            ),
            Err(e) => eprintln!("warning: helm uninstall {}: {e}", self.name),
        }
    }
}

/// Waits until the chart's operator pod is Running (kwok plays the kubelet: no container runs).
pub async fn wait_pod_running(ns: &TestNs, release: &HelmRelease) -> Pod {
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let selector = format!("app.kubernetes.io/instance={}", release.name);
    wait_for("the operator pod Running", WAIT, async || {
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await
}
