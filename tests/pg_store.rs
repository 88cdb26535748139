//! End-to-end tests of the PostgreSQL store through the real `initguard` binary against a
//! throwaway server (tests/support/pg.rs).

#[path = "support/pg.rs"]
mod pg;

use std::process::Command;

#[test]
fn smoke() {
    let Some(pg) = pg::Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_initguard"))
        .current_dir(work.path())
        .args(["run", "--store", &pg.url(), "--key", "smoke", "--", "sh", "-c", "echo hi"])
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_initguard"))
        .current_dir(work.path())
        .args(["run", "--store", &pg.url(), "--key", "smoke", "--", "sh", "-c", "echo hi"])
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    eprintln!("{}", pg.sql_in("app", "select task, token, state, expires_at from initguard.tasks"));
}
