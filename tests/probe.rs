//! `corral probe`: the health check of container images without a shell.

mod common;

use std::process::{Command, Output};

use common::NodeProcess;

fn probe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .arg("probe")
        .args(args)
        .env_remove("CORRAL_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run corral probe")
}

#[test]
fn succeeds_only_on_a_2xx_answer_and_says_why_not() {
    let node = NodeProcess::start(&[]);
    let ok = probe(&[&node.url("/readyz")]);
    assert!(ok.status.success(), "{ok:?}");

    let missing = probe(&[&node.url("/no-such-page")]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("404"),
        "{missing:?}"
    );

    drop(node);
    let closed = probe(&["http://127.0.0.1:9/readyz"]);
    assert_eq!(closed.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&closed.stderr).contains("cannot connect"),
        "{closed:?}"
    );

    let tls = probe(&["https://127.0.0.1/readyz"]);
    assert_eq!(tls.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&tls.stderr).contains("only http://"),
        "{tls:?}"
    );
}
