//! What the machine offers a test, and what a test says when something is missing: whether this
//! is CI (where a skip is a failure), and a free port.
//!
//! Imports nothing from the rest of the test kit, so that `tests/backend` (the chat backend's and
//! nginx's processes, in test binaries that do not need a cluster) includes it too.
// Each includer uses a different part of it.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;

/// Whether `CI` is set (to anything but empty, `false` or `0`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Says loudly that `test_name` cannot run (`why`) and what to do (`how`); in CI, fails instead.
pub fn skip(test_name: &str, why: &str, how: &str) {
    if in_ci() {
        panic!("{test_name} cannot run ({why}); {how}. CI is set, so this is a failure");
    }
    // Straight to the process's stderr: eprintln! output of passing tests is captured and hidden
    // by the test runner, and a skip must not look like a pass.
    let _ = writeln!(
        std::io::stderr(),
        "\n********** SKIPPED {test_name}: {why}; {how} **********\n"
    );
}

/// A port nobody listens on right now on 127.0.0.1 (the system's pick, released at once).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
        .port()
}
