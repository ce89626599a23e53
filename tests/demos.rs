//! The README's commands, in the README's order, on one cluster, as a user types them:
//! `make demo`, then `make demo-rollout`, then `make demo` again. Both demos claim every host on
//! the same ingress gateway; each must make way for the other and succeed, whichever ran before.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::setup;

/// Runs `make target` at the repository's root (the cluster comes from the environment, as
/// `make test` exports it), waits at most `limit`, and returns its output; panics if it fails.
fn make(target: &str, limit: Duration) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let log =
        std::env::temp_dir().join(format!("canary-demos-{target}-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let err = file
        .try_clone()
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let started = Instant::now();
    let mut child = Command::new("make")
        .arg(target)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("make {target}: {e}"));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(500)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "make {target} took over {limit:?}; its output:\n{}",
                    tail(&log)
                );
            }
            Err(e) => panic!("make {target}: {e}"),
        }
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "make {target} failed ({status}); its output:\n{}",
        tail(&log)
    );
    eprintln!("make {target}: {} s", started.elapsed().as_secs());
    let _ = std::fs::remove_file(&log);
    output
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// The demos' namespaces, deleted when the test ends however it ends: their releases claim every
/// host on the shared ingress gateway, which the tests that run after this one share.
struct DemoNamespaces;

impl Drop for DemoNamespaces {
    fn drop(&mut self) {
        let deleted = Command::new("kubectl")
            .args(["delete", "namespace", "azureopenai", "rollout-demo"])
            .args(["--ignore-not-found", "--wait=true", "--timeout=120s"])
            .stdin(Stdio::null())
            .status();
        if !matches!(&deleted, Ok(status) if status.success()) {
            eprintln!("could not delete the demos' namespaces: {deleted:?}");
        }
    }
}

#[test]
fn the_readmes_demos_run_in_its_order_and_again() {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    // Only to know that a cluster is there (a skip outside CI, a failure in it).
    let Some(_ns) = runtime.block_on(setup("demos")) else {
        return;
    };
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .unwrap_or_default();
    let demo_at = readme
        .find("make demo\n")
        .or_else(|| readme.find("make demo "));
    let rollout_at = readme.find("make demo-rollout");
    assert!(
        demo_at.is_some() && rollout_at.is_some() && demo_at < rollout_at,
        "the README gives `make demo`, then `make demo-rollout`"
    );

    let _cleanup = DemoNamespaces;
    let lab = make("demo", Duration::from_secs(600));
    assert!(
        lab.contains("routes: v1=50% v2=50%"),
        "the lab's shift:\n{lab}"
    );

    let rollout = make("demo-rollout", Duration::from_secs(900));
    assert!(
        rollout.contains("make demo's release azureopenai/azureopenaichat claims every host"),
        "the rollout demo makes way for the lab's release, and says so:\n{rollout}"
    );
    assert!(rollout.contains("Promoted in"), "promoted:\n{rollout}");
    assert!(
        rollout.contains("Stepped back and paused"),
        "stepped back:\n{rollout}"
    );

    let again = make("demo", Duration::from_secs(600));
    assert!(
        again
            .contains("make demo-rollout's release rollout-demo/azureopenaichat claims every host"),
        "the lab demo makes way for the rollout demo's release, and says so:\n{again}"
    );
    assert!(
        again.contains("routes: v1=50% v2=50%"),
        "the lab's shift:\n{again}"
    );
}
