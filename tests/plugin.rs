//! `kubectl canary` as a user runs it: the built binary against two example chat backends behind
//! nginx on 127.0.0.1 (`verify`), and against the real control plane with the operator running in
//! this process (`status`, `set-weight`).
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

mod backend;
mod common;

use std::time::Duration;

use backend::{Backend, Splitter, free_port, nginx, start_backend, start_splitter};
use canary_operator::api::CanaryRelease;
use canary_operator::api::istio::VirtualService;
use common::examples::example;
use common::gateway_api;
use common::host;
use common::operator::{install_crd, start_operator};
use common::{TestNs, WAIT, lab, setup, wait_for};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kubectl-canary");
/// Longest any one plugin run may take; verify's own --timeout is well inside it.
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// One run of the plugin.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

async fn kubectl_canary(args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(BIN);
    command.args(args).kill_on_drop(true);
    // The requests go to 127.0.0.1; a proxy from the developer's shell must not intercept them.
    for proxy in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(proxy);
    }
    let output = tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("kubectl-canary {args:?} ran longer than {RUN_LIMIT:?}"))
        .expect("run kubectl-canary");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Two offline chat backends, gpt-4.1 and gpt-4o, behind nginx with upstream weights
/// `stable:canary`. `None` when nginx is not installed (and the test was reported as skipped).
async fn lab_behind_splitter(
    test: &str,
    stable: u32,
    canary: u32,
) -> Option<(Splitter, Backend, Backend)> {
    let nginx = nginx(test)?;
    let v1 = start_backend(&[("AZURE_MODEL_NAME", "gpt-4.1")]).await;
    let v2 = start_backend(&[("AZURE_MODEL_NAME", "gpt-4o")]).await;
    let splitter = start_splitter(&nginx, &[(v1.addr, stable), (v2.addr, canary)]).await;
    Some((splitter, v1, v2))
}

fn offline_flags(weight: &str) -> Vec<String> {
    [
        "--stable-model",
        "gpt-4.1",
        "--canary-model",
        "gpt-4o",
        "--expect-weight",
        weight,
        "--timeout",
        "60s",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn args(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn verify_says_consistent_for_25_behind_a_3_to_1_split() {
    let Some((splitter, _v1, _v2)) = lab_behind_splitter("verify 3:1", 3, 1).await else {
        return;
    };
    let mut list = vec!["verify".to_owned(), "--url".to_owned(), splitter.url()];
    list.extend(offline_flags("25"));
    list.extend(["-o".to_owned(), "json".to_owned()]);
    let run = kubectl_canary(&args(&list)).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let report = run.json();
    assert_eq!(report["verdict"], "consistent", "{report}");
    assert_eq!(report["tally"]["completed"], 400);
    // nginx's weighted round robin is exact: one request in four goes to the second upstream.
    assert_eq!(report["tally"]["stable"], 300, "{report}");
    assert_eq!(report["tally"]["canary"], 100, "{report}");
    assert_eq!(report["canaryShare"], 0.25);
    assert_eq!(report["interval"]["method"], "clopper-pearson");
    let (low, high) = (
        report["interval"]["low"].as_f64().expect("low"),
        report["interval"]["high"].as_f64().expect("high"),
    );
    assert!(low < 0.25 && 0.25 < high, "{report}");
    assert!(report["pValue"].as_f64().expect("p") >= 0.05, "{report}");

    // The same, as a person reads it.
    let mut list = vec!["verify".to_owned(), "--url".to_owned(), splitter.url()];
    list.extend(offline_flags("25"));
    let run = kubectl_canary(&args(&list)).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    for expected in [
        "gpt-4.1   stable    300       75.0%",
        "gpt-4o    canary    100       25.0%",
        "Canary share:   25.0% (100 of 400), 95% confidence interval",
        "(Clopper-Pearson)",
        "Result:         consistent",
    ] {
        assert!(
            run.stdout.contains(expected),
            "missing {expected:?}: {run:?}"
        );
    }
    assert!(
        !run.stderr.contains('\r'),
        "no progress bar when stderr is not a terminal: {run:?}"
    );
}

#[tokio::test]
async fn verify_says_inconsistent_for_25_behind_a_1_to_1_split() {
    let Some((splitter, _v1, _v2)) = lab_behind_splitter("verify 1:1", 1, 1).await else {
        return;
    };
    let mut list = vec![
        "verify".to_owned(),
        "--url".to_owned(),
        format!("{}/chat", splitter.url()),
        "--concurrency".to_owned(),
        "16".to_owned(),
    ];
    list.extend(offline_flags("25"));
    let run = kubectl_canary(&args(&list)).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout.contains("gpt-4o    canary    200       50.0%"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("INCONSISTENT: the canary does not get 25% of the traffic"),
        "{run:?}"
    );
    list.extend(["-o".to_owned(), "json".to_owned()]);
    let report = kubectl_canary(&args(&list)).await.json();
    assert_eq!(report["verdict"], "inconsistent");
    let p = report["pValue"].as_f64().expect("p");
    assert!(p < 1e-10, "200 of 400 against 25% is far out: p = {p}");
}

#[tokio::test]
async fn verify_exits_2_when_nothing_listens() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut list = vec!["verify".to_owned(), "--url".to_owned(), url.clone()];
    list.extend(offline_flags("25"));
    let run = kubectl_canary(&args(&list)).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("error: could not measure:"), "{run:?}");
    assert!(run.stderr.contains("cannot connect"), "{run:?}");
    assert!(run.stderr.contains("Connection refused"), "{run:?}");
    assert!(run.stdout.contains(&format!("POST {url}/chat")), "{run:?}");
    // It gives up once the failures exceed --max-errors (10% of 400) instead of sending all.
    assert!(
        run.stdout.contains("41 of 400 requests completed"),
        "{run:?}"
    );
}

#[tokio::test]
async fn verify_refuses_incomplete_or_impossible_expectations() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let cases: [(&[&str], &str); 3] = [
        (
            &["verify", "--url", &url, "--expect-weight", "25"],
            "verify needs a release NAME, or all of --expect-weight, --stable-model and --canary-model",
        ),
        (
            &[
                "verify",
                "--url",
                &url,
                "--expect-weight",
                "25",
                "--stable-model",
                "gpt-4o",
                "--canary-model",
                "gpt-4o",
            ],
            "both use model \"gpt-4o\"",
        ),
        (
            &["verify", "--url", &url, "--expect-weight", "101"],
            "101 is not in 0..=100",
        ),
    ];
    for (argv, message) in cases {
        let run = kubectl_canary(argv).await;
        assert_eq!(run.code, Some(2), "{argv:?}: {run:?}");
        assert!(run.stderr.contains(message), "{argv:?}: {run:?}");
    }
}

#[tokio::test]
async fn help_reads_like_kubectl() {
    let run = kubectl_canary(&["--help"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    for expected in [
        "Available Commands:",
        "status",
        "set-weight",
        "verify",
        "kubectl canary",
    ] {
        assert!(run.stdout.contains(expected), "{expected:?}: {run:?}");
    }
    let run = kubectl_canary(&["set-weight", "--help"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("Examples:"), "{run:?}");
    assert!(
        run.stdout
            .contains("kubectl canary set-weight azureopenaichat 50 -n azureopenai"),
        "{run:?}"
    );
}

// ---- against the control plane ----

/// `examples/chat-backend.yaml`, applied in the test's namespace as `kubectl apply --server-side`
/// would, with the Secret it names.
async fn apply_chat_backend(ns: &TestNs) -> String {
    let release = example("chat-backend.yaml");
    let name = release["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    lab::create_secret(ns).await;
    lab::apply_release(ns, release)
        .await
        .expect("apply the example");
    name
}

/// The cells of the table row whose first cell is `first`.
fn row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first:?} in\n{text}"))
}

#[tokio::test]
async fn status_and_set_weight_with_the_operator_running() {
    let Some(ns) = setup("plugin status set-weight").await else {
        return;
    };
    install_crd(&ns).await;
    let _operator = start_operator(&ns).await;
    let name = apply_chat_backend(&ns).await;
    lab::wait_ready(&ns, &name).await;
    let n = ns.name.as_str();

    let run = kubectl_canary(&["status", &name, "-n", n]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    for expected in [
        format!("Name:        {name}"),
        format!("Namespace:   {n}"),
        "Traffic:     90% stable / 10% canary".to_owned(),
        "Generation:  1 (observed)".to_owned(),
    ] {
        assert!(
            run.stdout.contains(&expected),
            "missing {expected:?}: {run:?}"
        );
    }
    let image = "myregistry.azurecr.io/chat-backend:0.1.0";
    assert_eq!(
        row(&run.stdout, "v1"),
        ["v1", "stable", "gpt-4.1", "90%", "1/1", image],
        "{run:?}"
    );
    assert_eq!(
        row(&run.stdout, "v2"),
        ["v2", "canary", "gpt-4o", "10%", "1/1", image],
        "{run:?}"
    );
    assert_eq!(
        row(&run.stdout, "Ready")[..3],
        ["Ready", "True", "Available"]
    );

    let summary = kubectl_canary(&["status", &name, "-n", n, "-o", "json"])
        .await
        .json();
    assert_eq!(summary["weight"], 10);
    assert_eq!(summary["versions"][0]["model"], "gpt-4.1");
    assert_eq!(summary["versions"][1]["role"], "canary");
    assert_eq!(summary["versions"][1]["weight"], 10);
    assert_eq!(summary["versions"][1]["readyReplicas"], 1);
    let ready = summary["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .expect("Ready condition");
    assert_eq!(ready["status"], "True");

    // A weight change waits for the VirtualService and reports old → new.
    let run = kubectl_canary(&["set-weight", &name, "50", "-n", n, "--timeout", "60s"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        format!(
            "canaryrelease/{name}: weight 10 → 50; the VirtualService sends 50% to v1 and 50% to v2"
        )
    );
    let services: Api<VirtualService> = Api::namespaced(ns.client.clone(), n);
    let vs = services.get(&name).await.expect("VirtualService");
    assert_eq!(vs.weights(), [("v1".to_owned(), 50), ("v2".to_owned(), 50)]);
    let releases: Api<CanaryRelease> = Api::namespaced(ns.client.clone(), n);
    let release = releases.get(&name).await.expect("release");
    assert_eq!(release.spec.weight, Some(50));
    let managers: Vec<String> = release
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == "kubectl-canary"),
        "the patch is attributed to kubectl-canary: {managers:?}"
    );

    let run = kubectl_canary(&["set-weight", &name, "50", "-n", n]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("weight 50 → 50 (unchanged)"), "{run:?}");

    let run = kubectl_canary(&["set-weight", &name, "100", "-n", n, "--wait=false"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        format!("canaryrelease/{name}: weight 50 → 100")
    );
    wait_for("VirtualService at 0/100", WAIT, async || {
        let vs = services.get(&name).await.ok()?;
        (vs.weights() == [("v1".to_owned(), 0), ("v2".to_owned(), 100)]).then_some(())
    })
    .await;

    // A hand edit of the split is put back by the operator, and status shows the Event.
    let mut drifted = services.get(&name).await.expect("VirtualService");
    drifted.metadata.managed_fields = None;
    for route in drifted
        .spec
        .http
        .iter_mut()
        .flat_map(|h| h.route.iter_mut())
    {
        route.weight = 100 - route.weight;
    }
    services
        .replace(&name, &PostParams::default(), &drifted)
        .await
        .expect("edit the VirtualService by hand");
    lab::wait_event(&ns, "a DriftCorrected Event", |e| {
        e.reason.as_deref() == Some("DriftCorrected")
    })
    .await;
    let run = kubectl_canary(&["status", &name, "-n", n]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("LAST SEEN"), "{run:?}");
    assert!(run.stdout.contains("DriftCorrected"), "{run:?}");
    assert!(
        run.stdout.contains("Traffic:     0% stable / 100% canary"),
        "{run:?}"
    );

    // Mistakes get kubectl-like messages and a non-zero exit.
    let run = kubectl_canary(&["set-weight", "missing", "10", "-n", n]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "canaryrelease \"missing\" not found in namespace \"{n}\""
        )),
        "{run:?}"
    );
    let run = kubectl_canary(&["set-weight", &name, "101", "-n", n]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("101 is not in 0..=100"), "{run:?}");
    let run = kubectl_canary(&["status", "missing", "-n", n]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("not found"), "{run:?}");
}

#[tokio::test]
async fn set_weight_says_when_the_split_does_not_follow() {
    let Some(ns) = setup("plugin set-weight without operator").await else {
        return;
    };
    install_crd(&ns).await;
    // No operator: the weight is written, but nothing moves the VirtualService.
    let name = apply_chat_backend(&ns).await;
    let run = kubectl_canary(&["set-weight", &name, "30", "-n", &ns.name, "--timeout", "2s"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "error: timed out after 2.0s waiting for VirtualService {name} to send 30% to v2; \
             there is no VirtualService with the release's name; \
             the operator has not processed the change; is it running?"
        )),
        "{run:?}"
    );
    let release = Api::<CanaryRelease>::namespaced(ns.client.clone(), &ns.name)
        .get(&name)
        .await
        .expect("release");
    assert_eq!(release.spec.weight, Some(30), "the weight itself was set");
}

#[tokio::test]
async fn verify_reads_the_models_and_weight_from_the_release() {
    let Some(ns) = setup("plugin verify release").await else {
        return;
    };
    // The example asks 10% for the canary: nginx at 9:1 matches it, 3:1 does not.
    let Some((matching, _a1, _a2)) = lab_behind_splitter("verify from release", 9, 1).await else {
        return;
    };
    let Some((wrong, _b1, _b2)) = lab_behind_splitter("verify from release", 3, 1).await else {
        return;
    };
    install_crd(&ns).await;
    let name = apply_chat_backend(&ns).await;

    let url = matching.url();
    let run = kubectl_canary(&["verify", &name, "-n", &ns.name, "--url", &url]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "Expected:       10% (spec.weight of canaryrelease {}/{name})",
            ns.name
        )),
        "{run:?}"
    );
    assert!(run.stdout.contains("gpt-4o    canary    40 "), "{run:?}");

    let url = wrong.url();
    let run = kubectl_canary(&["verify", &name, "-n", &ns.name, "--url", &url]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stdout.contains("INCONSISTENT"), "{run:?}");

    // A flag overrides the release: 3:1 is what 25 asks for.
    let run = kubectl_canary(&[
        "verify",
        &name,
        "-n",
        &ns.name,
        "--url",
        &url,
        "--expect-weight",
        "25",
    ])
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");

    let run = kubectl_canary(&["verify", "missing", "-n", &ns.name, "--url", &url]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("not found"), "{run:?}");
}

/// `kubectl canary status | set-weight | verify` on a release routed by the Gateway API: the
/// split read back from its HTTPRoute, and verified through the gateway's proxy (the stand-in,
/// following what istiod pushes for the HTTPRoute) to the two real backends.
#[tokio::test]
async fn status_set_weight_and_verify_with_the_gateway_api() {
    const TEST: &str = "plugin with the gateway api";
    let Some(nginx) = nginx(TEST) else {
        return;
    };
    let Some(ns) = setup(TEST).await else {
        return;
    };
    let Some(xds) = common::istiod(TEST) else {
        return;
    };
    let _operator = start_operator(&ns).await;
    lab::create_secret(&ns).await;
    gateway_api::platform_gateway(&ns).await;
    let release = gateway_api::routed_by_gateway_api(
        &ns,
        example("chat-backend.yaml"),
        gateway_api::PLATFORM,
    );
    let name = release["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    lab::apply_release(&ns, release).await.expect("apply");
    lab::wait_ready(&ns, &name).await;
    let n = ns.name.as_str();

    let run = kubectl_canary(&["status", &name, "-n", n]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("Traffic:     90% stable / 10% canary"),
        "{run:?}"
    );
    assert_eq!(
        row(&run.stdout, "v2")[..4],
        ["v2", "canary", "gpt-4o", "10%"],
        "{run:?}"
    );

    let run = kubectl_canary(&["set-weight", &name, "50", "-n", n, "--timeout", "60s"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        format!(
            "canaryrelease/{name}: weight 10 → 50; the HTTPRoute sends 50% to v1 and 50% to v2"
        )
    );
    let services = |v| format!("{name}-{v}");
    let (v1_service, v2_service) = (services("v1"), services("v2"));
    gateway_api::wait_route_weights(&ns, &name, &[(&v1_service, 50), (&v2_service, 50)]).await;

    // Through the Gateway's proxy: what the HTTPRoute says, as istiod programs it.
    let v1 = start_backend(&[("AZURE_MODEL_NAME", "gpt-4.1")]).await;
    let v2 = start_backend(&[("AZURE_MODEL_NAME", "gpt-4o")]).await;
    let mut gateway = backend::IngressStandin::start(
        &nginx,
        &xds,
        (n, &name, &ns.host(&name)),
        &[("v1", v1.addr), ("v2", v2.addr)],
        &gateway_api::PLATFORM_PROXY,
    );
    let mut applied = gateway.next_applied(Duration::from_secs(30));
    for _ in 0..3 {
        if applied == "applied v1=50 v2=50" {
            break;
        }
        applied = gateway.next_applied(Duration::from_secs(30));
    }
    assert_eq!(applied, "applied v1=50 v2=50");
    let url = gateway.url("/chat");
    let run = kubectl_canary(&["verify", &name, "-n", n, "--url", &url]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "Expected:       50% (spec.weight of canaryrelease {n}/{name})"
        )),
        "{run:?}"
    );
}
