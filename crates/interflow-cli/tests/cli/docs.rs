//! Shell completions and the man page, generated from the command definitions.

use crate::run;

#[test]
fn completions_and_the_man_page_name_the_commands() {
    for args in [
        &["completions", "bash"][..],
        &["completions", "zsh"],
        &["completions", "fish"],
        &["completions", "powershell"],
        &["man"],
    ] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        for sub in [
            "pending",
            "lookup",
            "reconcile",
            "keys",
            "certs",
            "completions",
        ] {
            assert!(
                stdout.contains(sub),
                "{args:?} does not name `{sub}`:\n{stdout}"
            );
        }
    }
    // The man page is roff with a title line.
    let (_, man, _) = run(&["man"]);
    assert!(man.contains(".TH interflowctl"), "{man}");
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let (code, _, stderr) = run(&["completions", "cmd.exe"]);
    assert_eq!(code, 2, "{stderr}");
}
