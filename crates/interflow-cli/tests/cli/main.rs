//! Integration tests of the `interflowctl` binary: the offline commands end to end, the
//! connected commands and how they reach a node against real nodes (`e2e`, `connection`), and
//! against a fake node only for states a real node shows after a staged failure (`fake_node`:
//! canned `Admin` answers behind real mutual TLS, certificates made by `interflowctl certs`).

mod agreements;
mod connection;
mod dev_hints;
mod docs;
mod e2e;
mod fake_node;
mod inbox;
mod offline;
mod operators;

use std::path::Path;

/// The binary under test, with no `INTERFLOW_*` variables from the calling environment.
pub fn interflowctl() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_interflowctl"));
    for var in [
        "INTERFLOW_ADDR",
        "INTERFLOW_CA",
        "INTERFLOW_CERT",
        "INTERFLOW_KEY",
        "INTERFLOW_REGION",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Runs `interflowctl args...` and returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = interflowctl()
        .args(args)
        .output()
        .expect("runs interflowctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}
