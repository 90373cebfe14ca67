//! The commands `interflow dev` suggests work as printed: each is run through `sh` with this
//! `interflowctl` on the PATH, against a real dev federation.

use std::path::Path;
use std::process::Command;

use interflow_tests::TestCluster;

/// Runs `line` with `sh -c` in `cwd`, off the async threads so the nodes keep serving.
async fn shell(line: String, cwd: std::path::PathBuf) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let bin = Path::new(env!("CARGO_BIN_EXE_interflowctl"))
            .parent()
            .expect("binary directory")
            .to_owned();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![bin];
        dirs.extend(std::env::split_paths(&path));
        Command::new("sh")
            .args(["-c", &line])
            .current_dir(cwd)
            .env("PATH", std::env::join_paths(dirs).expect("PATH"))
            .env("NO_COLOR", "1")
            .output()
            .expect("run sh")
    })
    .await
    .expect("shell task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hint_of_interflow_dev_works_as_printed() {
    let c = TestCluster::start(2).await;
    // As printed for `--dir <somewhere>`: with `--dev-dir`, from any directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let hints = interflow_node::dev::hints(&c.fed, c.dir.path());
    assert!(hints.len() >= 4, "{hints:?}");
    // And for the default `--dir .interflow-dev`, from the directory `interflow dev` ran in.
    let ran_in = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(c.dir.path(), ran_in.path().join(".interflow-dev")).unwrap();
    let default_hints = interflow_node::dev::hints(&c.fed, Path::new(".interflow-dev"));
    assert!(
        default_hints.iter().all(|h| !h.contains("--dev-dir")),
        "{default_hints:?}"
    );
    let runs = hints
        .into_iter()
        .map(|h| (h, elsewhere.path().to_owned()))
        .chain(
            default_hints
                .into_iter()
                .map(|h| (h, ran_in.path().to_owned())),
        );
    for (hint, cwd) in runs {
        // A live tail runs until stopped: it works if it is still following when stopped.
        let follows = hint.contains(" inbox follow ");
        let line = if follows {
            format!("timeout 3 {hint}")
        } else {
            hint.clone()
        };
        let out = shell(line, cwd).await;
        let expected = if follows { Some(124) } else { Some(0) };
        assert_eq!(
            out.status.code(),
            expected,
            "`{hint}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if follows {
            assert!(String::from_utf8_lossy(&out.stdout).contains("following the inbox"));
        }
    }
    // The ID reaches the CLI through stdin, never as an argument.
    let lookup = interflow_node::dev::hints(&c.fed, c.dir.path())
        .into_iter()
        .find(|h| h.contains(" lookup "))
        .expect("a lookup hint");
    assert!(
        lookup.starts_with("echo ")
            && lookup.ends_with(" --id -")
            && lookup.contains(" --purpose "),
        "{lookup}"
    );
    c.shutdown().await;
}
