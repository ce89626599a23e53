//! What the operator says when it cannot start: an API it needs is not served, or RBAC does not
//! let it read one. The test cluster always has every CRD, so for the first a second
//! kube-apiserver is started on its etcd under an etcd prefix of its own (`hack/cluster.sh
//! bare-apiserver`): a real API server that has never seen a CRD. For the second, the operator
//! runs with the token of a ServiceAccount that may read one namespace only.
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::host::{free_port, skip};
use common::operator::install_crd_on;
use common::process::Spawn;
use common::{setup, wait_for};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

/// The same prefix every run, so a reused development cluster's etcd does not collect one copy of
/// the bare apiserver's bootstrap objects per run.
const ETCD_PREFIX: &str = "/canary-operator-tests-bare";

/// A kube-apiserver process with no CRDs; stopped when dropped.
struct BareApiserver {
    process: Child,
    kubeconfig: PathBuf,
    log: PathBuf,
    client: Client,
}

impl Drop for BareApiserver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

impl BareApiserver {
    /// Starts it beside the cluster that `cluster_kubeconfig` (in the cluster's run dir) names.
    async fn start(cluster_kubeconfig: &Path) -> BareApiserver {
        let run_dir = cluster_kubeconfig.parent().expect("run dir");
        let port = free_port();
        let log = run_dir.join("logs/bare-apiserver.log");
        let log_file = std::fs::File::create(&log).expect("create the bare apiserver's log");
        let process = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/cluster.sh"))
            .args(["bare-apiserver", &port.to_string(), ETCD_PREFIX])
            .env("CANARY_RUN_DIR", run_dir)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("start hack/cluster.sh bare-apiserver");

        // The cluster's admin kubeconfig with the other port; the certificates are the same.
        let text = std::fs::read_to_string(cluster_kubeconfig).expect("read KUBECONFIG");
        let text: String = text
            .lines()
            .map(|line| {
                let indent = &line[..line.len() - line.trim_start().len()];
                match line.trim_start().strip_prefix("server:") {
                    Some(_) => format!("{indent}server: https://127.0.0.1:{port}\n"),
                    None => format!("{line}\n"),
                }
            })
            .collect();
        let kubeconfig = run_dir.join(format!("bare-apiserver-{port}.kubeconfig"));
        std::fs::write(&kubeconfig, text).expect("write the bare apiserver's kubeconfig");
        let config = Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kubeconfig).expect("parse kubeconfig"),
            &KubeConfigOptions::default(),
        )
        .await
        .expect("kubeconfig");
        let client = Client::try_from(config).expect("client");
        let mut bare = BareApiserver {
            process,
            kubeconfig,
            log,
            client,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if bare.client.apiserver_version().await.is_ok() {
                break;
            }
            let exited = bare.process.try_wait().expect("poll the bare apiserver");
            if exited.is_some() || Instant::now() >= deadline {
                panic!(
                    "the bare apiserver did not come up ({}); its log:\n{}",
                    exited.map_or("timed out after 90s".into(), |s| s.to_string()),
                    std::fs::read_to_string(&bare.log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bare
    }

    fn run_operator(&self) -> (Option<i32>, String) {
        run_operator(&self.kubeconfig, &[])
    }

    async fn delete_our_crd(&self) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let _ = crds
            .delete("canaryreleases.canary.dev", &DeleteParams::default())
            .await;
        wait_for(
            "the CRD to be gone",
            Duration::from_secs(60),
            async || match crds.get_opt("canaryreleases.canary.dev").await {
                Ok(None) => Some(()),
                _ => None,
            },
        )
        .await;
    }
}

/// Runs the operator binary with `kubeconfig` and `args` until it exits (bounded): exit code and
/// stderr (its text log).
fn run_operator(kubeconfig: &Path, args: &[&str]) -> (Option<i32>, String) {
    let exit = Spawn::new()
        .kubeconfig(kubeconfig)
        .args(args)
        .text_log()
        .spawn()
        .finish(Duration::from_secs(30));
    (exit.code, exit.log)
}

#[tokio::test]
async fn the_operator_names_a_missing_crd_and_how_to_install_it() {
    // Only for the skip-or-fail rule when there is no cluster; the namespace is not used.
    let Some(_ns) = setup("start_errors").await else {
        return;
    };
    let Some(cluster_kubeconfig) = std::env::var_os("KUBECONFIG").map(PathBuf::from) else {
        skip(
            "start_errors",
            "KUBECONFIG is not set, so the cluster's run dir is unknown",
            "eval $(make -s cluster-env)",
        );
        return;
    };
    let bare = BareApiserver::start(&cluster_kubeconfig).await;
    // A run before this one may have left our CRD under the same prefix.
    bare.delete_our_crd().await;

    let (code, stderr) = bare.run_operator();
    assert_eq!(
        code,
        Some(2),
        "without the CRD the operator should stop with exit code 2; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("the CanaryRelease CRD (canaryreleases.canary.dev) is not installed")
            && stderr.contains("kubectl apply --server-side -f crd/canaryrelease.yaml"),
        "the message should name the CRD and how to install it; stderr:\n{stderr}"
    );

    install_crd_on(&bare.client).await;
    let (code, stderr) = bare.run_operator();
    assert_eq!(
        code,
        Some(2),
        "with our CRD but not Istio's the operator should stop with exit code 2; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("Istio's networking CRDs")
            && stderr.contains("are not installed: install Istio, or its CRDs, first")
            && !stderr.contains("canary.dev) is not installed"),
        "the message should name Istio's CRDs, and only them; stderr:\n{stderr}"
    );

    // Leave the prefix as this test found it.
    bare.delete_our_crd().await;
}

/// Started for all namespaces with a grant for one: the operator says which verb on which resource
/// in which scope it lacks, and the two ways out, instead of "cannot reach the Kubernetes API".
#[tokio::test]
async fn a_missing_grant_is_named_with_the_way_to_fix_it() {
    let Some(ns) = setup("start-forbidden").await else {
        return;
    };
    let name = "operator-one-namespace";
    let objects = [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name},
            "rules": [{"apiGroups": ["canary.dev"], "resources": ["canaryreleases"], "verbs": ["list", "watch"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns.name}],
        }),
    ];
    for object in objects {
        let object: DynamicObject = serde_json::from_value(object).expect("object");
        let types = object.types.clone().expect("types");
        let resource = ApiResource::from_gvk(&GroupVersionKind::try_from(&types).expect("gvk"));
        Api::<DynamicObject>::namespaced_with(ns.client.clone(), &ns.name, &resource)
            .create(&PostParams::default(), &object)
            .await
            .expect("create RBAC");
    }
    let token = common::service_account_token(&ns, name).await;
    let kubeconfig = std::env::temp_dir().join(format!("{}.kubeconfig", ns.name));
    std::fs::write(&kubeconfig, common::token_kubeconfig(&token, &ns.name)).expect("kubeconfig");

    let (code, stderr) = run_operator(&kubeconfig, &[]);
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    for fragment in [
        "not allowed to list canaryreleases.canary.dev in all namespaces",
        "--namespace",
        "watchNamespaces",
    ] {
        assert!(
            stderr.contains(fragment),
            "{fragment:?} missing; stderr:\n{stderr}"
        );
    }
    assert!(!stderr.contains("cannot reach"), "stderr:\n{stderr}");

    // Scoped to its namespace, it can read releases but none of Istio's kinds: the next grant
    // missing, the first of them in the order they are applied.
    let (code, stderr) = run_operator(&kubeconfig, &["--namespace", &ns.name]);
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    let expected = format!(
        "not allowed to list destinationrules.networking.istio.io in namespace {}",
        ns.name
    );
    assert!(stderr.contains(&expected), "stderr:\n{stderr}");
    let _ = std::fs::remove_file(&kubeconfig);
}
