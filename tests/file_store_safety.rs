//! The file store on a hostile or shared state directory (issue 8): planted symlinks, unsafe
//! directories, fsGroup volumes shared by two UIDs, permissions under any umask, names that
//! collide or overflow, stale temp files, unreadable records, a full disk. Run as root (as CI
//! does): several tests need to create files for other users, switch users or mount a tmpfs.

#[macro_use]
mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};
use support::*;

const VICTIM: &[u8] = b"precious bytes\n";

/// A scratch area readable by other users (so `setpriv` tests can reach it), with the state
/// directory at `state` and a victim file outside it.
struct Area {
    tmp: tempfile::TempDir,
}

impl Area {
    fn new() -> Area {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(tmp.path().join("victim"), VICTIM).unwrap();
        Area { tmp }
    }
    fn path(&self) -> &Path {
        self.tmp.path()
    }
    fn state(&self) -> PathBuf {
        self.path().join("state")
    }
    fn victim(&self) -> PathBuf {
        self.path().join("victim")
    }
    fn victim_intact(&self) {
        assert_eq!(
            fs::read(self.victim()).unwrap(),
            VICTIM,
            "the victim was written"
        );
    }
    /// `initguard --store file:DIR ARGS…` in the area, as the current user.
    fn run(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new(bin())
            .current_dir(self.path())
            .env("INITGUARD_STORE", format!("file:{}", dir.display()))
            .env_remove("POD_UID")
            .env_remove("NODE_NAME")
            .env_remove("INITGUARD_KEY")
            .stdin(Stdio::null())
            .args(args)
            .output()
            .unwrap()
    }
}

fn is_root() -> bool {
    require(
        "root (to plant files for other users, switch users, mount a tmpfs)",
        nix::unistd::geteuid().is_root(),
    )
}

fn last_line(o: &Output) -> String {
    let err = stderr(o);
    let last = err.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("initguard: "), "one error line: {err}");
    last
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn a_planted_lock_symlink_is_refused_and_the_victim_is_untouched() {
    let area = Area::new();
    let state = area.state();
    fs::create_dir_all(state.join("app")).unwrap();
    // The new layout's lock name, and the previous layout's: neither may be written through.
    symlink(area.victim(), state.join("app+k.lock")).unwrap();
    symlink(area.victim(), state.join("app/k.lock")).unwrap();
    let out = area.run(&state, &["run", "--key", "app/k", "--", "touch", "ran"]);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let line = last_line(&out);
    assert!(
        line.contains("app+k.lock") && line.contains("symbolic link") && line.contains("rm "),
        "{line}"
    );
    area.victim_intact();
    assert!(!area.path().join("ran").exists());
}

#[test]
fn a_planted_temp_file_symlink_is_never_written_through() {
    let area = Area::new();
    let state = area.state();
    fs::create_dir_all(&state).unwrap();
    // The previous layout's temp names (`.k.json.tmp.<pid>`, which older initguards wrote and
    // this one still clears) for the next pids. Links at today's random `+tmp.` names are
    // `safe_fs::tests::a_link_planted_at_the_temp_name_is_passed_over`'s.
    let me = std::process::id();
    for pid in me..me + 3000 {
        symlink(area.victim(), state.join(format!(".k.json.tmp.{pid}"))).unwrap();
    }
    let out = area.run(&state, &["run", "--key", "k", "--", "true"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    area.victim_intact();
    let rec: serde_json::Value =
        serde_json::from_slice(&fs::read(state.join("k.json")).unwrap()).unwrap();
    assert_eq!(rec["state"], "succeeded");
    // Links with our temp-name pattern are not ours to remove: only regular files are cleaned.
    assert!(fs::symlink_metadata(state.join(format!(".k.json.tmp.{me}"))).is_ok());
}

#[test]
fn a_symlinked_state_dir_is_refused_and_a_symlinked_key_dir_is_not_followed() {
    let area = Area::new();
    let elsewhere = area.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let linked = area.path().join("linked-state");
    symlink(&elsewhere, &linked).unwrap();
    let out = area.run(&linked, &["run", "--key", "k", "--", "touch", "ran"]);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let line = last_line(&out);
    assert!(
        line.contains("linked-state") && line.contains("symbolic link"),
        "{line}"
    );
    assert_eq!(
        fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing written there"
    );
    assert!(!area.path().join("ran").exists());

    // A key directory of the previous layout planted as a link: nothing lands behind it.
    let state = area.state();
    fs::create_dir(&state).unwrap();
    symlink(&elsewhere, state.join("app")).unwrap();
    let out = area.run(&state, &["run", "--key", "app/k", "--", "true"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing written there"
    );
    assert!(state.join("app+k.json").is_file());
}

#[test]
fn a_world_writable_or_foreign_state_dir_is_refused() {
    if !is_root() {
        return;
    }
    let area = Area::new();
    let state = area.state();
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
    let out = area.run(&state, &["run", "--key", "k", "--", "touch", "ran"]);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let line = last_line(&out);
    assert!(
        line.contains("every user can write") && line.contains("chmod o-w"),
        "{line}"
    );

    // With the sticky bit nobody can swap another user's files: allowed (like /tmp).
    fs::set_permissions(&state, fs::Permissions::from_mode(0o1777)).unwrap();
    let out = area.run(&state, &["run", "--key", "k", "--", "true"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let foreign = area.path().join("foreign");
    fs::create_dir(&foreign).unwrap();
    std::os::unix::fs::chown(&foreign, Some(54321), Some(54321)).unwrap();
    let out = area.run(&foreign, &["run", "--key", "k", "--", "touch", "ran"]);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let line = last_line(&out);
    assert!(
        line.contains("owned by uid 54321") && line.contains("chown"),
        "{line}"
    );
    assert_eq!(fs::read_dir(&foreign).unwrap().count(), 0);
    assert!(!area.path().join("ran").exists());
}

/// `initguard ARGS…` as `uid`:`gid` with supplementary group `group`, under `umask`.
fn as_user(area: &Area, dir: &Path, uid: u32, group: u32, umask: &str, args: &[&str]) -> Output {
    Command::new("setpriv")
        .current_dir(area.path())
        .env("INITGUARD_STORE", format!("file:{}", dir.display()))
        .env_remove("POD_UID")
        .env_remove("NODE_NAME")
        .stdin(Stdio::null())
        .args(["--reuid", &uid.to_string(), "--regid", &uid.to_string()])
        .args(["--groups", &group.to_string(), "--"])
        .args(["sh", "-c", "umask \"$0\"; exec \"$@\"", umask])
        .arg(bin())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn an_fsgroup_volume_is_shared_by_two_uids_of_one_pod_whatever_the_umask() {
    if !is_root() || !require("setpriv", Path::new("/usr/bin/setpriv").exists()) {
        return;
    }
    const GID: u32 = 42420;
    for umask in ["000", "022", "077"] {
        let area = Area::new();
        // What the kubelet makes of an fsGroup volume: root:GID, 2775.
        let vol = area.path().join("vol");
        fs::create_dir(&vol).unwrap();
        std::os::unix::fs::chown(&vol, Some(0), Some(GID)).unwrap();
        fs::set_permissions(&vol, fs::Permissions::from_mode(0o2775)).unwrap();
        let state = vol.join("initguard");
        let count = vol.join("count");
        // The side-effect counter is the test's, shared by both UIDs whatever their umask.
        fs::write(&count, b"").unwrap();
        fs::set_permissions(&count, fs::Permissions::from_mode(0o666)).unwrap();
        let script = format!("echo run >> {}", count.display());
        let task = |v: &str| -> Vec<String> {
            [
                "run",
                "--key",
                "app/migrate",
                "--version",
                v,
                "--",
                "sh",
                "-c",
                &script,
            ]
            .map(String::from)
            .to_vec()
        };
        let a = as_user(&area, &state, 1001, GID, umask, &to_refs(&task("1")));
        assert_eq!(code(&a), 0, "umask {umask}, uid 1001: {}", stderr(&a));
        let b = as_user(&area, &state, 1002, GID, umask, &to_refs(&task("1")));
        assert_eq!(code(&b), 0, "umask {umask}, uid 1002: {}", stderr(&b));
        assert!(stderr(&b).contains("skipped"), "{}", stderr(&b));
        // The second UID replaces the first one's record and locks the first one's lock file.
        let b = as_user(&area, &state, 1002, GID, umask, &to_refs(&task("2")));
        assert_eq!(code(&b), 0, "umask {umask}, uid 1002: {}", stderr(&b));
        let a = as_user(&area, &state, 1001, GID, umask, &["status", "app/migrate"]);
        assert_eq!(code(&a), 0, "{}", stderr(&a));
        assert_eq!(lines(&count).len(), 2, "umask {umask}");
        assert_eq!(mode(&state), 0o2770, "umask {umask}: state dir");
        assert_eq!(
            mode(&state.join("app+migrate.json")),
            0o660,
            "umask {umask}"
        );
        assert_eq!(
            mode(&state.join("app+migrate.lock")),
            0o660,
            "umask {umask}"
        );
        assert_eq!(
            fs::metadata(state.join("app+migrate.json")).unwrap().gid(),
            GID
        );
    }
}

fn to_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn created_files_and_dirs_are_owner_only_whatever_the_umask() {
    for umask in ["000", "022"] {
        let area = Area::new();
        let state = area.path().join("new/state");
        let out = Command::new("sh")
            .current_dir(area.path())
            .env("INITGUARD_STORE", format!("file:{}", state.display()))
            .args(["-c", "umask \"$0\"; exec \"$@\"", umask])
            .arg(bin())
            .args(["run", "--key", "app/k", "--", "echo", "secret-output"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(
            mode(&area.path().join("new")),
            0o700,
            "umask {umask}: parent"
        );
        assert_eq!(mode(&state), 0o700, "umask {umask}: state dir");
        for f in ["app+k.json", "app+k.lock"] {
            assert_eq!(mode(&state.join(f)), 0o600, "umask {umask}: {f}");
        }
    }
}

#[test]
fn keys_that_nest_in_each_other_coexist() {
    let area = Area::new();
    let state = area.state();
    for key in ["x.json/y", "x", "x.lock", "x/y"] {
        let out = area.run(&state, &["run", "--key", key, "--", "true"]);
        assert_eq!(code(&out), 0, "{key}: {}", stderr(&out));
    }
    let out = area.run(&state, &["status", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, ["x", "x.json/y", "x.lock", "x/y"]);
}

#[test]
fn two_hundred_character_keys_work_in_every_scope() {
    let area = Area::new();
    let state = area.state();
    let key = format!("a/{}", "b".repeat(198));
    assert_eq!(key.len(), 200);
    let node = "n".repeat(253);
    let uid = "0f4c2a9e-6b7d-4c1e-9a53-2f1d8e7b6c5a";
    for (scope, var, val) in [
        ("global", "X", "x"),
        ("pod", "POD_UID", uid),
        ("node", "NODE_NAME", node.as_str()),
    ] {
        let out = Command::new(bin())
            .current_dir(area.path())
            .env("INITGUARD_STORE", format!("file:{}", state.display()))
            .env(var, val)
            .args(["run", "--key", &key, "--scope", scope, "--", "true"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{scope}: {}", stderr(&out));
        let again = Command::new(bin())
            .current_dir(area.path())
            .env("INITGUARD_STORE", format!("file:{}", state.display()))
            .env(var, val)
            .args(["run", "--key", &key, "--scope", scope, "--", "true"])
            .output()
            .unwrap();
        assert_eq!(code(&again), 0, "{scope} skips: {}", stderr(&again));
    }
    for e in fs::read_dir(&state).unwrap() {
        let name = e.unwrap().file_name();
        assert!(name.len() <= 255, "{name:?}");
        assert!(
            name.to_string_lossy()
                .starts_with(&format!("a+{}", "b".repeat(198))),
            "{name:?}"
        );
    }
    let out = area.run(&state, &["status", &key, "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
    let out = area.run(&state, &["reset", &key]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = area.run(&state, &["status", &key, "--json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "reset"),
        "{all}"
    );
    let node_rec = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["scope"] == "node");
    assert_eq!(node_rec.unwrap()["instance"], "n".repeat(128));
}

fn age(path: &Path, by: Duration) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - by).unwrap();
}

#[test]
fn stale_temp_files_are_removed_and_nothing_else() {
    let area = Area::new();
    let state = area.state();
    fs::create_dir_all(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    let stale_new = state.join(format!("+tmp.{}", "ab".repeat(16)));
    let stale_old = state.join(".k.json.tmp.4242");
    let fresh = state.join(format!("+tmp.{}", "cd".repeat(16)));
    let stranger = state.join("notes.tmp.txt");
    let dir_named_like_temp = state.join(format!("+tmp.{}", "ef".repeat(16)));
    for f in [&stale_new, &stale_old, &fresh, &stranger] {
        fs::write(f, b"{\"half").unwrap();
    }
    fs::create_dir(&dir_named_like_temp).unwrap();
    let link = state.join(format!("+tmp.{}", "01".repeat(16)));
    symlink(area.victim(), &link).unwrap();
    let hour = Duration::from_secs(3600);
    for f in [&stale_new, &stale_old, &stranger, &area.victim()] {
        age(f, hour);
    }
    let out = area.run(&state, &["run", "--key", "k", "--", "true"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stale_new.exists(), "stale temp file removed");
    assert!(
        !stale_old.exists(),
        "stale temp file of the previous layout removed"
    );
    assert!(fresh.exists(), "a temp file being written now is kept");
    assert!(stranger.exists(), "not our name: kept");
    assert!(dir_named_like_temp.is_dir(), "not a regular file: kept");
    assert!(
        fs::symlink_metadata(&link).is_ok(),
        "a link is not ours: kept"
    );
    area.victim_intact();
}

#[test]
fn a_symlinked_record_is_listed_as_unreadable_and_reset_repairs_it() {
    let area = Area::new();
    let state = area.state();
    let out = area.run(&state, &["run", "--key", "good", "--", "true"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    symlink(area.victim(), state.join("bad.json")).unwrap();
    let out = area.run(&state, &["status", "--json"]);
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    let err = stderr(&out);
    let bad: Vec<&str> = err.lines().filter(|l| l.contains("bad")).collect();
    assert_eq!(bad.len(), 1, "{err}");
    assert!(
        bad[0].contains("symbolic link") && bad[0].contains("initguard reset bad"),
        "{err}"
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        shown.as_array().unwrap().len(),
        1,
        "the good record still shows"
    );

    let out = area.run(&state, &["run", "--key", "bad", "--", "touch", "ran"]);
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(!area.path().join("ran").exists());

    let out = area.run(&state, &["reset", "bad"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    area.victim_intact();
    let meta = fs::symlink_metadata(state.join("bad.json")).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the link was replaced by a record"
    );
    let out = area.run(&state, &["run", "--key", "bad", "--", "touch", "ran"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(area.path().join("ran").exists());
    area.victim_intact();
}

#[test]
fn records_of_the_previous_layout_are_still_read() {
    let area = Area::new();
    let state = area.state();
    let out = area.run(&state, &["run", "--key", "app/old", "--", "touch", "ran"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    fs::remove_file(area.path().join("ran")).unwrap();
    // Move the record where the previous layout kept it.
    fs::create_dir(state.join("app")).unwrap();
    fs::rename(state.join("app+old.json"), state.join("app/old.json")).unwrap();
    fs::remove_file(state.join("app+old.lock")).unwrap();
    let out = area.run(&state, &["run", "--key", "app/old", "--", "touch", "ran"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("skipped"), "{}", stderr(&out));
    assert!(!area.path().join("ran").exists());
    let out = area.run(&state, &["status", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all[0]["key"], "app/old", "{all}");
}

/// A tmpfs mounted for one test and unmounted when it ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// A tmpfs of `size` at `mnt` in `area`, owner-only.
    fn mount(area: &Area, size: &str) -> (PathBuf, Tmpfs) {
        let mnt = area.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&mnt)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs");
        (mnt.clone(), Tmpfs(mnt))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_exits_74_and_leaves_the_record_and_no_temp_file() {
    if !is_root() {
        return;
    }
    let area = Area::new();
    let (mnt, _mounted) = Tmpfs::mount(&area, "64k");
    let state = mnt.join("state");
    let out = area.run(&state, &["run", "--key", "full", "--", "true"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let before = fs::read(state.join("full.json")).unwrap();
    // Fill the disk.
    let mut filler = fs::File::create(mnt.join("filler")).unwrap();
    let chunk = [0u8; 4096];
    while std::io::Write::write_all(&mut filler, &chunk).is_ok() {}
    drop(filler);
    for args in [
        vec!["run", "--key", "full", "--version", "2", "--", "true"],
        vec!["run", "--key", "other", "--", "true"],
    ] {
        let out = area.run(&state, &args);
        assert_eq!(code(&out), 74, "{args:?}: {}", stderr(&out));
        assert!(
            last_line(&out).contains("No space left on device"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(fs::read(state.join("full.json")).unwrap(), before);
    let temps: Vec<_> = fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("+tmp."))
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
}

#[test]
fn a_read_only_file_system_exits_74_and_leaves_the_record() {
    if !is_root() {
        return;
    }
    let area = Area::new();
    let (mnt, _mounted) = Tmpfs::mount(&area, "1m");
    let state = mnt.join("state");
    let out = area.run(&state, &["run", "--key", "ro", "--", "true"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let before = fs::read(state.join("ro.json")).unwrap();
    let ok = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mnt)
        .status()
        .unwrap()
        .success();
    assert!(ok, "remount it read-only");
    let ran = area.path().join("ran");
    let touch = format!("touch {}", ran.display());
    for args in [
        vec![
            "run",
            "--key",
            "ro",
            "--version",
            "2",
            "--",
            "sh",
            "-c",
            &touch,
        ],
        vec!["run", "--key", "other", "--", "sh", "-c", &touch],
    ] {
        let out = area.run(&state, &args);
        assert_eq!(code(&out), 74, "{args:?}: {}", stderr(&out));
        assert!(
            last_line(&out).contains("Read-only file system"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!ran.exists(), "nothing ran");
    assert_eq!(fs::read(state.join("ro.json")).unwrap(), before);
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// `(holder, token, ms)` of every tick a run's command logged in `log`.
fn ticks(log: &Path) -> Vec<(String, String, u128)> {
    lines(log)
        .iter()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((
                parts.next()?.to_string(),
                parts.next()?.to_string(),
                parts.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// Deleting the lock file (or the whole state dir) mid-run: the first holder stops its command
/// within 2 s (its `renew` reports the lease lost); with `distinct_tokens`, the second holder's
/// token differs (a removed state dir is a new one: its counting starts again).
fn holder_stops_when(remove: impl Fn(&Path), distinct_tokens: bool) {
    let area = Area::new();
    let state = area.state();
    let log = area.path().join("ticks");
    // Each tick: which holder, the token it runs under and a millisecond timestamp (date
    // +%s%3N). Tokens may repeat across a removed state dir, so the holder is named apart.
    let script = format!(
        "i=0; while [ $i -lt 80 ]; do echo \"$HOLDER $INITGUARD_FENCING_TOKEN $(date +%s%3N)\" >> {}; \
         sleep 0.1; i=$((i+1)); done",
        log.display()
    );
    let spawn = |holder: &str| {
        Command::new(bin())
            .current_dir(area.path())
            .env("HOLDER", holder)
            .env("INITGUARD_STORE", format!("file:{}", state.display()))
            .args(["run", "--key", "app/k", "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn("first");
    wait_for(
        "the first command's first tick",
        Duration::from_secs(10),
        || !ticks(&log).is_empty(),
    );
    remove(&state);
    let removed_at = now_ms();
    let second = spawn("second");
    let first = first.wait_with_output().unwrap();
    let second = second.wait_with_output().unwrap();
    assert_eq!(
        code(&first),
        75,
        "the first holder lost its lease: {}",
        stderr(&first)
    );
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    let all = ticks(&log);
    let last_first = all
        .iter()
        .filter(|(h, _, _)| h == "first")
        .map(|(_, _, ms)| *ms)
        .max()
        .unwrap();
    assert!(
        last_first <= removed_at + 2000,
        "the first command ticked {} ms after the removal",
        last_first - removed_at
    );
    if distinct_tokens {
        let tokens: std::collections::BTreeSet<&String> = all.iter().map(|(_, t, _)| t).collect();
        assert_eq!(tokens.len(), 2, "two holders, two tokens: {tokens:?}");
    }
}

#[test]
fn deleting_the_lock_file_mid_run_stops_the_holder_and_tokens_do_not_repeat() {
    holder_stops_when(
        |state| fs::remove_file(state.join("app+k.lock")).unwrap(),
        true,
    );
}

#[test]
fn deleting_the_state_dir_mid_run_stops_the_holder() {
    holder_stops_when(|state| fs::remove_dir_all(state).unwrap(), false);
}

#[test]
fn a_record_this_user_cannot_read_is_listed_as_unreadable_and_reset_repairs_it() {
    if !is_root() || !require("setpriv", Path::new("/usr/bin/setpriv").exists()) {
        return;
    }
    let area = Area::new();
    let state = area.state();
    fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(1001), Some(1001)).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    // Root's file in uid 1001's state dir, unreadable to 1001.
    fs::write(state.join("k.json"), b"{}").unwrap();
    fs::set_permissions(state.join("k.json"), fs::Permissions::from_mode(0o600)).unwrap();
    let out = as_user(&area, &state, 1001, 1001, "022", &["status"]);
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    let line = last_line(&out);
    assert!(
        line.contains("k.json") && line.contains("cannot be read"),
        "{line}"
    );
    let out = as_user(&area, &state, 1001, 1001, "022", &["reset", "k"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let meta = fs::metadata(state.join("k.json")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (1001, 0o600));
    let out = as_user(&area, &state, 1001, 1001, "022", &["status", "k", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all[0]["state"], "reset", "{all}");
}
