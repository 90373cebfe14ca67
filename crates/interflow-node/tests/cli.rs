//! `interflow` as an operator meets it: what it prints on a mistake, how it exits, and logs
//! that stay plain text when stderr is not a terminal.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn interflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_interflow"))
}

#[test]
fn a_missing_config_is_one_error_line_and_exit_code_1() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.toml");
    let out = interflow()
        .args(["serve", "--config"])
        .arg(&missing)
        // Even asked for backtraces, an operator's mistake gets none.
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("error: loading config `"), "{err}");
    assert!(lines[0].contains("missing.toml"), "{err}");
    assert!(
        !err.contains("Caused by") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn a_usage_error_exits_2() {
    let out = interflow()
        .args(["serve", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let addrs = [(free(), free()), (free(), free())];
    let fed = interflow_node::dev::generate(tmp.path(), &addrs, interflow_node::system_clock()())
        .unwrap();
    let mut node = Node(
        interflow()
            .args(["serve", "--config"])
            .arg(&fed.nodes[0].config)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = node.0.stderr.take().unwrap();
    let mut seen = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("node started") {
            break;
        }
    }
    assert!(seen.contains("node started"), "{seen}");
    assert!(
        !seen.contains('\u{1b}'),
        "escape codes in the log: {seen:?}"
    );
}

#[test]
fn completions_and_the_man_page_name_the_subcommands() {
    for args in [
        &["completions", "bash"][..],
        &["completions", "zsh"],
        &["completions", "fish"],
        &["man"],
    ] {
        let out = interflow().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        for sub in ["serve", "dev", "init", "completions"] {
            assert!(
                text.contains(sub),
                "{args:?} does not name `{sub}`:\n{text}"
            );
        }
    }
}
