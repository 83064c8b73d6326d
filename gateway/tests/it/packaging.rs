//! What packaging runs besides the gateway itself: `ringway health` as a
//! container health check, shell completions and the man page.

use std::process::Command;

use crate::support::*;

fn ringway(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn health_says_alive_and_ready_by_its_exit_status() {
    let gw = Binary::start(
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n{EDGE}[[route]]\nrespond = {{ status = 200 }}\n"
        ),
        &["--workers", "1"],
    );
    let admin = gw.admin.unwrap().to_string();
    let health = |path: &str| ringway(&["health", "--admin", &admin, "--path", path]);
    assert!(health("/healthz").status.success());
    assert!(health("/ready").status.success());

    assert_eq!(gw.admin("POST", "/drain").0, 200);
    let not_ready = health("/ready");
    assert_eq!(not_ready.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&not_ready.stderr).contains("answered 503"),
        "{not_ready:?}"
    );
    assert!(health("/healthz").status.success(), "alive while draining");

    drop(gw);
    let gone = health("/healthz");
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
}

#[test]
fn completions_and_the_man_page_cover_every_subcommand() {
    let subcommands = ["check", "schema", "completions", "manpage", "health"];
    for shell in ["bash", "zsh", "fish"] {
        let out = ringway(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        for sub in subcommands {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let out = ringway(&["manpage"]);
    assert!(out.status.success());
    let roff = String::from_utf8(out.stdout).unwrap();
    assert!(roff.contains(".TH ringway 1"), "{roff}");
    for sub in subcommands {
        assert!(roff.contains(sub), "the man page lacks {sub}");
    }
    assert_eq!(ringway(&["completions", "tcsh"]).status.code(), Some(2));
}
