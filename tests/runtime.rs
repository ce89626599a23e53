//! The operator as a process, as it runs in a pod: HTTP endpoints, metrics, leader election on a
//! real Lease, and a graceful stop on SIGTERM. Runs against the local control plane.
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use canary_operator::api::CanaryRelease;
use canary_operator::api::istio::VirtualService;
use common::{TestNs, setup, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// An operator process; killed when dropped.
struct Process {
    child: Child,
    address: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn start(ns: &TestNs, extra: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_canary-operator"))
            .args([
                "--namespace",
                &ns.name,
                "--http-address",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start canary-operator");
        // The process logs the address it bound (port 0 picks a free one); the rest of its log is
        // passed through for a failing test to show.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str::<Value>(&line)
                    && let Some(address) = entry["fields"]["address"].as_str()
                {
                    let _ = tx.send(address.to_owned());
                }
                eprintln!("operator: {line}");
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("operator logs its HTTP address");
        Process { child, address }
    }

    /// A plain HTTP/1.0 GET, enough to read the operator's three endpoints.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(&self.address).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.address
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((status, body))
    }

    fn metric(&self, line_prefix: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find(|l| l.starts_with(line_prefix))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit and returns its exit code.
    fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

fn lab(ns: &TestNs) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lab.yaml");
    let mut release: Value =
        serde_norway::from_str(&std::fs::read_to_string(path).expect("read")).expect("parse");
    release["metadata"]["namespace"] = json!(ns.name);
    release
}

async fn prepare(ns: &TestNs) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "azure-openai"},
        "stringData": {"AZURE_API_KEY": "not-a-real-key"},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let releases = Api::<CanaryRelease>::namespaced(ns.client.clone(), &ns.name);
    releases
        .patch(
            "azureopenaichat",
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(lab(ns)),
        )
        .await
        .expect("apply lab example");
}

async fn set_weight(ns: &TestNs, weight: i32) {
    Api::<CanaryRelease>::namespaced(ns.client.clone(), &ns.name)
        .patch(
            "azureopenaichat",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"weight": weight}})),
        )
        .await
        .expect("patch weight");
}

async fn wait_canary_weight(ns: &TestNs, weight: i32) {
    let services = Api::<VirtualService>::namespaced(ns.client.clone(), &ns.name);
    wait_for(
        &format!("VirtualService at {weight}% canary"),
        WAIT,
        async || {
            let vs = services.get("azureopenaichat").await.ok()?;
            let canary = vs
                .spec
                .http
                .first()?
                .route
                .iter()
                .find(|r| r.destination.subset.as_deref() == Some("v2"))?;
            (canary.weight == weight).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn serves_health_readiness_and_metrics() {
    let Some(ns) = setup("runtime-http").await else {
        return;
    };
    let operator = Process::start(&ns, &[]);
    assert_eq!(operator.get("/healthz").map(|r| r.0), Some(200));
    wait_for("/readyz to answer 200", WAIT, async || {
        (operator.get("/readyz")?.0 == 200).then_some(())
    })
    .await;

    prepare(&ns).await;
    wait_canary_weight(&ns, 25).await;
    let weight = format!(
        "canary_operator_release_canary_weight{{namespace=\"{}\",name=\"azureopenaichat\"}}",
        ns.name
    );
    wait_for("the weight gauge at 25", WAIT, async || {
        (operator.metric(&weight)? == 25.0).then_some(())
    })
    .await;
    set_weight(&ns, 40).await;
    wait_for("the weight gauge at 40", WAIT, async || {
        (operator.metric(&weight)? == 40.0).then_some(())
    })
    .await;

    let reconciles = operator
        .metric("canary_operator_reconciles_total")
        .expect("reconciles");
    assert!(reconciles >= 2.0, "{reconciles}");
    let writes = operator
        .metric("canary_operator_api_requests_total{client=\"controller\",kind=\"write\"}")
        .expect("writes");
    assert!(
        writes >= 11.0,
        "ten children and a status at least: {writes}"
    );
    assert!(
        operator
            .metric("canary_operator_reconcile_duration_seconds_count")
            .expect("histogram")
            >= reconciles
    );
    assert_eq!(
        operator.metric("canary_operator_leader"),
        Some(1.0),
        "without leader election it always leads"
    );
}

#[tokio::test]
async fn one_leader_at_a_time_and_a_fast_handover() {
    let Some(ns) = setup("runtime-leader").await else {
        return;
    };
    let lease_args = [
        "--leader-elect",
        "--lease-namespace",
        &ns.name,
        "--lease-duration-seconds",
        "4",
    ];
    let mut first = Process::start(&ns, &[&lease_args[..], &["--instance", "first"]].concat());
    let leases = Api::<Lease>::namespaced(ns.client.clone(), &ns.name);
    let holder = async || {
        leases
            .get_opt("canary-operator")
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
    };
    wait_for("first to lead", WAIT, async || {
        (holder().await? == "first").then_some(())
    })
    .await;
    let mut second = Process::start(&ns, &[&lease_args[..], &["--instance", "second"]].concat());
    wait_for("second to be ready as a standby", WAIT, async || {
        (second.get("/readyz")?.0 == 200).then_some(())
    })
    .await;
    assert_eq!(second.metric("canary_operator_leader"), Some(0.0));

    prepare(&ns).await;
    wait_canary_weight(&ns, 25).await;
    assert_eq!(first.metric("canary_operator_leader"), Some(1.0));
    assert_eq!(
        second.metric("canary_operator_reconciles_total"),
        Some(0.0),
        "the standby must not reconcile"
    );

    // A leader that dies without releasing the Lease is replaced once the Lease expires.
    first.signal("KILL");
    assert!(
        first.wait_exit(Duration::from_secs(10)).is_none(),
        "killed, so no exit code"
    );
    wait_for("second to lead", Duration::from_secs(30), async || {
        (holder().await? == "second").then_some(())
    })
    .await;
    set_weight(&ns, 60).await;
    wait_canary_weight(&ns, 60).await;

    // SIGTERM: finish, release the Lease (holder cleared), exit 0.
    second.signal("TERM");
    assert_eq!(
        second.wait_exit(Duration::from_secs(20)),
        Some(0),
        "a clean exit"
    );
    let lease = leases.get("canary-operator").await.expect("lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        None,
        "the Lease was released"
    );
}
