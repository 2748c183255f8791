//! Permissions and hostile directories: a state directory that is not
//! writable, files replaced by directories or symlinks, manifests, data
//! files and segments owned by another user and unreadable, and files of
//! the user's own in the state directories. Each time: a typed error
//! naming the path (or, where the crate's contract allows it, a correct
//! recovery), no panic, and nothing deleted or changed that the crate did
//! not create.
//!
//! Root bypasses permission bits, so the permission cases run in a child
//! process (this test binary again) that drops to `nobody` with
//! `setgid`/`setuid` (`std::os::unix::process::CommandExt`), against files
//! owned by root with mode 0600 or a directory owned by root with mode
//! 0755. That binds exactly as it binds a real deployment's service user,
//! and tests every file kind. "Not writable" is also tested with a
//! read-only bind mount, which binds root too (`EROFS`). Not root: the child
//! runs as the same user, whom the permission bits bind already, and the
//! bind-mount case skips (`LAMINAR_REQUIRE_MOUNTS=1` makes that fail).

// Linux only: mounts, `fallocate`, `/proc/self`.
#![cfg(target_os = "linux")]

#[path = "common/errors.rs"]
mod errors;
#[path = "common/mount.rs"]
mod mount;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use errors::{EACCES, EROFS, errno, named_path};
use laminar_storage::incremental::{
    CheckpointConfig, IncrementalCheckpointError, RecoveryConfig, RecoveryManager,
};

const CHILD_CASE: &str = "LAMINAR_HOSTILE_CASE";
const CHILD_DIR: &str = "LAMINAR_HOSTILE_DIR";

fn config(dir: &Path) -> CheckpointConfig {
    CheckpointConfig::new(dir)
        .with_wal_segment_size(64 << 10)
        .with_max_retained(2)
        .with_max_chain_length(3)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn value(epoch: u64, k: u64) -> Vec<u8> {
    format!("value of key {k} at epoch {epoch} ")
        .repeat(8)
        .into_bytes()
}

/// Runs `epochs` more epochs (each updating keys `0..50`, and after a few,
/// a checkpoint) and shuts down. Returns the last epoch.
async fn ingest(dir: &Path, epochs: u64) -> u64 {
    let (manager, mut writer) = errors::open_when_unlocked(config(dir)).await.unwrap();
    let mut last = 0;
    for _ in 0..epochs {
        let epoch = writer.epoch();
        for k in 0..50u64 {
            writer
                .put(format!("key-{k}").as_bytes(), &value(epoch, k))
                .unwrap();
        }
        last = writer.commit_epoch().unwrap();
        manager.wait_durable(last).await.unwrap();
        if epoch % 10 == 0 {
            manager.checkpoint().await.unwrap();
        }
    }
    manager.shutdown().await.unwrap();
    last
}

/// The state at `epoch`.
fn check_state(writer: &laminar_storage::incremental::StateWriter, epoch: u64) {
    assert_eq!(writer.len(), 50);
    for k in 0..50u64 {
        assert_eq!(
            writer.get(format!("key-{k}").as_bytes()),
            Some(value(epoch, k).as_slice()),
            "key {k} at epoch {epoch}"
        );
    }
}

/// A state directory with checkpoints (a chain and an older one), several
/// WAL segments, and 35 epochs.
fn populated(root: &Path) -> PathBuf {
    let dir = root.join("state");
    runtime().block_on(ingest(&dir, 35));
    dir
}

/// Every entry under `dir` (not following symlinks): kind, size, content
/// checksum or link target.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            let what = if m.file_type().is_symlink() {
                format!("symlink -> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", m.mode() & 0o7777)
            } else {
                let bytes = fs::read(&p).unwrap_or_default();
                format!(
                    "file {} bytes crc {:08x} mode {:o}",
                    m.len(),
                    crc32fast::hash(&bytes),
                    m.mode() & 0o7777
                )
            };
            out.insert(rel, what);
        }
    }
    out
}

/// What an open attempt did, for the assertions.
#[derive(Debug)]
struct Outcome {
    /// `None`: opened (and shut down), at this epoch.
    error: Option<String>,
    class: String,
    errno: Option<i32>,
    path: Option<PathBuf>,
    recovered: Option<u64>,
}

fn outcome(result: Result<u64, IncrementalCheckpointError>) -> Outcome {
    match result {
        Ok(epoch) => Outcome {
            error: None,
            class: String::new(),
            errno: None,
            path: None,
            recovered: Some(epoch),
        },
        Err(e) => Outcome {
            error: Some(e.to_string()),
            class: errors::class(&e),
            errno: errno(&e),
            path: named_path(&e),
            recovered: None,
        },
    }
}

async fn try_open(dir: &Path) -> Result<u64, IncrementalCheckpointError> {
    let (manager, writer) = errors::open_when_unlocked(config(dir)).await?;
    let epoch = manager.recovery().epoch;
    drop(writer);
    manager.shutdown().await?;
    Ok(epoch)
}

async fn try_recover(dir: &Path) -> Result<u64, IncrementalCheckpointError> {
    // Retried while `Locked`, as `errors::open_when_unlocked` says why.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match RecoveryManager::new(RecoveryConfig::new(dir, dir.join("wal")))
            .recover()
            .await
        {
            Err(IncrementalCheckpointError::Locked { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            other => return other.map(|r| r.epoch),
        }
    }
}

/// Asserts a typed error naming `expect_path` (or a path under it).
fn assert_error_names(o: &Outcome, expect_path: &Path, context: &str) {
    let Some(e) = &o.error else {
        panic!("{context}: opened at epoch {:?} instead of failing", o.recovered)
    };
    let named = o
        .path
        .as_ref()
        .unwrap_or_else(|| panic!("{context}: the error names no path: {e}"));
    assert!(
        named.starts_with(expect_path) || expect_path.starts_with(named),
        "{context}: the error names {} instead of {}: {e}",
        named.display(),
        expect_path.display()
    );
    assert!(
        e.contains(&*named.to_string_lossy()),
        "{context}: the message does not show the path: {e}"
    );
}

fn say(context: &str, o: &Outcome) {
    match &o.error {
        Some(e) => eprintln!("hostile_dirs {context}: {} -- {e}", o.class),
        None => eprintln!("hostile_dirs {context}: recovered epoch {:?}", o.recovered),
    }
}

// ---------------------------------------------------------------------
// Files replaced by directories and symlinks (root is bound by these).

fn newest(dir: &Path, prefix: &str) -> PathBuf {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && !n.ends_with(".tmp")
        })
        .collect();
    names.sort();
    names
        .pop()
        .unwrap_or_else(|| panic!("no {prefix}* in {}", dir.display()))
}

/// Picks the file a case tampers with in a state directory.
type Pick = fn(&Path) -> PathBuf;

fn replace_with_dir(path: &Path) {
    fs::remove_file(path).unwrap();
    fs::create_dir(path).unwrap();
    fs::write(path.join("inside"), b"not the crate's").unwrap();
}

#[test]
fn files_replaced_by_directories_are_typed_errors_naming_them() {
    let rt = runtime();
    let cases: [(&str, Pick); 5] = [
        ("newest manifest", |d| newest(d, "checkpoint_")),
        ("newest data file", |d| newest(d, "data_")),
        ("newest WAL segment", |d| newest(&d.join("wal"), "wal_")),
        ("LOCK", |d| d.join("LOCK")),
        ("WAL LOCK", |d| d.join("wal").join("LOCK")),
    ];
    for (what, pick) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = populated(tmp.path());
        let target = pick(&dir);
        replace_with_dir(&target);
        let before = tree(&dir);
        let o = outcome(rt.block_on(try_open(&dir)));
        say(&format!("{what} replaced by a directory"), &o);
        assert_error_names(&o, &target, what);
        assert_eq!(
            tree(&dir),
            before,
            "{what}: the failed open changed the directory"
        );
        // Put back as it was (the directory removed), it recovers.
        fs::remove_dir_all(&target).unwrap();
    }

    // The WAL directory replaced by a file.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("wal"), b"a file where the WAL directory goes").unwrap();
    let before = tree(&dir);
    let o = outcome(rt.block_on(try_open(&dir)));
    say("the WAL directory replaced by a file", &o);
    assert_error_names(&o, &dir.join("wal"), "WAL directory is a file");
    assert_eq!(tree(&dir), before);
}

#[test]
fn symlinks_are_followed_and_their_targets_never_deleted_or_overwritten() {
    let rt = runtime();

    // A manifest replaced by a symlink to garbage outside: damage, so
    // recovery falls back to the older checkpoint and the WAL (contract
    // 5), loses nothing, and later retention removes the link, never the
    // target.
    let tmp = tempfile::tempdir().unwrap();
    let dir = populated(tmp.path());
    let outside = tmp.path().join("outside.txt");
    fs::write(&outside, b"someone else's file, not a manifest").unwrap();
    let manifest = newest(&dir, "checkpoint_");
    fs::remove_file(&manifest).unwrap();
    symlink(&outside, &manifest).unwrap();
    rt.block_on(async {
        let (manager, mut writer) = errors::open_when_unlocked(config(&dir)).await.unwrap();
        let summary = manager.recovery().clone();
        assert_eq!(summary.epoch, 35, "{summary:?}");
        assert_eq!(summary.checkpoints_skipped, 1, "{summary:?}");
        check_state(&writer, 35);
        eprintln!(
            "hostile_dirs manifest -> symlink to garbage: skipped as damaged, recovered epoch 35 from {:?}",
            summary.checkpoint_id
        );
        // Enough checkpoints for retention to drop the damaged one.
        for _ in 0..3 {
            let e = writer.epoch();
            for k in 0..50u64 {
                writer.put(format!("key-{k}").as_bytes(), &value(e, k)).unwrap();
            }
            writer.commit_epoch().unwrap();
            manager.checkpoint().await.unwrap();
        }
        manager.shutdown().await.unwrap();
    });
    assert_eq!(
        fs::read(&outside).unwrap(),
        b"someone else's file, not a manifest",
        "the symlink's target was changed"
    );

    // The newest WAL segment replaced by a symlink to a file outside that
    // is not a segment: corruption naming the segment; the target is
    // neither truncated nor zero-filled.
    let tmp = tempfile::tempdir().unwrap();
    let dir = populated(tmp.path());
    let outside = tmp.path().join("outside.log");
    let foreign = b"2026-12-05 12:00:00 INFO an application log, not a WAL segment\n".repeat(2000);
    fs::write(&outside, &foreign).unwrap();
    let segment = newest(&dir.join("wal"), "wal_");
    fs::remove_file(&segment).unwrap();
    symlink(&outside, &segment).unwrap();
    let before = tree(&dir);
    let o = outcome(rt.block_on(try_open(&dir)));
    say("newest WAL segment -> symlink to a foreign file", &o);
    assert_error_names(&o, &segment, "segment symlink");
    assert_eq!(
        fs::read(&outside).unwrap(),
        foreign,
        "the symlink's target was changed"
    );
    assert_eq!(tree(&dir), before);

    // A dangling symlink as a data file: missing, so recovery falls back.
    let tmp = tempfile::tempdir().unwrap();
    let dir = populated(tmp.path());
    let data = newest(&dir, "data_");
    fs::remove_file(&data).unwrap();
    symlink(tmp.path().join("nowhere"), &data).unwrap();
    let o = outcome(rt.block_on(try_open(&dir)));
    say("newest data file -> dangling symlink", &o);
    assert_eq!(o.recovered, Some(35), "{o:?}");
}

#[test]
fn files_of_the_user_in_the_state_directories_are_left_alone() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = populated(tmp.path());
    // Names near the crate's own, and plain ones.
    let foreign = [
        dir.join("README"),
        dir.join("data_notes.txt"),
        dir.join("checkpoint_notes"),
        dir.join("checkpoint_0000000000000001.bak"),
        dir.join("data_0000000000000001.base.orig"),
        dir.join("wal").join("wal_notes.log"),
        dir.join("wal").join("wal_0000000000000001.log.bak"),
        dir.join("wal").join("notes.tmp"),
    ];
    for (i, p) in foreign.iter().enumerate() {
        fs::write(p, format!("the user's file {i}")).unwrap();
    }
    fs::create_dir(dir.join("data_dir")).unwrap();
    fs::write(dir.join("data_dir").join("x"), b"x").unwrap();
    // Opens, checkpoints (retention and WAL truncation run), reopens.
    rt.block_on(ingest(&dir, 40));
    rt.block_on(async {
        let (manager, writer) = errors::open_when_unlocked(config(&dir)).await.unwrap();
        assert_eq!(manager.recovery().epoch, 75);
        check_state(&writer, 75);
        assert!(manager.recovery().checkpoint_id.is_some());
        manager.shutdown().await.unwrap();
    });
    // Retention and WAL truncation did run.
    assert!(
        !dir.join("wal").join("wal_0000000000000001.log").exists(),
        "the WAL was never truncated: the test would not show that truncation spares the user's files"
    );
    assert!(
        !dir.join("data_0000000000000001.base").exists(),
        "retention never ran: the test would not show that it spares the user's files"
    );
    for (i, p) in foreign.iter().enumerate() {
        assert_eq!(
            fs::read_to_string(p).unwrap_or_else(|e| panic!("{} was removed: {e}", p.display())),
            format!("the user's file {i}"),
            "{}",
            p.display()
        );
    }
    assert_eq!(fs::read(dir.join("data_dir").join("x")).unwrap(), b"x");
}

// ---------------------------------------------------------------------
// Not writable, for root too: a read-only bind mount.

#[test]
fn a_read_only_state_directory_is_a_typed_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = populated(tmp.path());
    let Some(ro) = mount::ReadOnlyBind::new(&dir, &tmp.path().join("ro")) else {
        return;
    };
    let before = tree(&dir);
    let rt = runtime();
    let o = outcome(rt.block_on(try_open(ro.path())));
    say("populated state directory on a read-only mount", &o);
    assert_error_names(&o, ro.path(), "read-only mount");
    assert_eq!(o.errno, Some(EROFS), "{o:?}");
    // RecoveryManager only reads: it recovers from the read-only mount.
    let o = outcome(rt.block_on(try_recover(ro.path())));
    say("RecoveryManager on a read-only mount", &o);
    assert!(
        o.error.is_none() && o.recovered.is_some(),
        "read-only mount, RecoveryManager: {o:?}"
    );
    // A state directory still to be created under the read-only mount.
    let o = outcome(rt.block_on(try_open(&ro.path().join("new"))));
    say("new state directory under a read-only mount", &o);
    assert_error_names(&o, &ro.path().join("new"), "read-only mount, new directory");
    drop(ro);
    assert_eq!(tree(&dir), before);
}

// ---------------------------------------------------------------------
// Another user's unreadable files: run as `nobody`.

/// uid and gid of `nobody`, from `/etc/passwd`.
fn nobody() -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("nobody:"))?;
    let mut f = line.split(':').skip(2);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).unwrap();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            chown_tree(&p, uid, gid);
        } else {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).unwrap();
        }
    }
}

/// Runs `case` on `dir` in a child process as `nobody` (as this user when
/// not root) and returns its outcome line.
fn run_as_other_user(case: &str, dir: &Path) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["hostile_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_CASE, case)
        .env(CHILD_DIR, dir);
    if mount::is_root() {
        let (uid, gid) = nobody().expect("a nobody user");
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{case}: the child failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once("OUTCOME ").map(|(_, o)| o.to_string()))
        .unwrap_or_else(|| panic!("{case}: no outcome from the child:\n{stdout}"))
}

/// The child: opens (`open`) or recovers (`recover`) `CHILD_DIR` and
/// prints `OUTCOME errno|path|class|message` (or `OUTCOME ok|<epoch>`).
#[test]
fn hostile_child() {
    let (Some(case), Some(dir)) = (std::env::var_os(CHILD_CASE), std::env::var_os(CHILD_DIR)) else {
        return; // Not the child.
    };
    let dir = PathBuf::from(dir);
    let rt = runtime();
    let result = if case == "recover" {
        rt.block_on(try_recover(&dir))
    } else {
        rt.block_on(try_open(&dir))
    };
    let o = outcome(result);
    match o.error {
        None => println!("OUTCOME ok|{}", o.recovered.unwrap()),
        Some(msg) => println!(
            "OUTCOME {}|{}|{}|{msg}",
            o.errno.map_or("-".to_string(), |e| e.to_string()),
            o.path.map_or("-".to_string(), |p| p.display().to_string()),
            o.class
        ),
    }
}

fn assert_denied(line: &str, expect_path: &Path, context: &str) {
    let parts: Vec<&str> = line.splitn(4, '|').collect();
    assert!(parts.len() == 4, "{context}: opened instead of failing: {line}");
    eprintln!("hostile_dirs {context}: {} -- {}", parts[2], parts[3]);
    assert_eq!(parts[0], EACCES.to_string(), "{context}: not EACCES: {line}");
    let named = Path::new(parts[1]);
    assert!(
        named.starts_with(expect_path) || expect_path.starts_with(named),
        "{context}: names {} instead of {}: {line}",
        named.display(),
        expect_path.display()
    );
    assert!(
        parts[3].contains(parts[1]),
        "{context}: the message does not show the path"
    );
}

#[test]
fn unreadable_files_of_another_user_are_typed_errors_naming_them() {
    if std::env::var_os(CHILD_CASE).is_some() {
        return;
    }
    let root_user = mount::is_root();
    if root_user && nobody().is_none() {
        eprintln!("SKIPPED: no nobody user to drop to");
        return;
    }
    let (uid, gid) = nobody().unwrap_or((0, 0));
    let cases: [(&str, Pick); 3] = [
        ("newest manifest", |d| newest(d, "checkpoint_")),
        ("newest data file", |d| newest(d, "data_")),
        ("newest WAL segment", |d| newest(&d.join("wal"), "wal_")),
    ];
    for (what, pick) in cases {
        for how in ["open", "recover"] {
            let tmp = tempfile::tempdir().unwrap();
            fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
            let dir = populated(tmp.path());
            let target = pick(&dir);
            if root_user {
                // The service user owns the state; this one file is root's.
                chown_tree(&dir, uid, gid);
                std::os::unix::fs::lchown(&target, Some(0), Some(0)).unwrap();
            }
            fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
            if !root_user {
                fs::set_permissions(&target, fs::Permissions::from_mode(0o000)).unwrap();
            }
            let before = tree(&dir);
            let line = run_as_other_user(how, &dir);
            assert_denied(&line, &target, &format!("{how} with an unreadable {what}"));
            assert_eq!(
                tree(&dir),
                before,
                "{what}: the failed {how} changed the directory"
            );
        }
    }

    // A state directory the user cannot write: owned by root, 0755.
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let dir = populated(tmp.path());
    if !root_user {
        // The owner itself: every directory 0555, every file 0444.
        set_modes(&dir, 0o555, 0o444);
    }
    let before = tree(&dir);
    let line = run_as_other_user("open", &dir);
    assert_denied(&line, &dir, "open of a state directory the user cannot write");
    assert_eq!(tree(&dir), before);
    // Nor create one in.
    let line = run_as_other_user("open", &dir.join("new"));
    assert_denied(
        &line,
        &dir.join("new"),
        "open of a new state directory in one the user cannot write",
    );
    if !root_user {
        set_modes(&dir, 0o755, 0o644);
    }
}

/// Sets the mode of `dir` and everything under it (directories first on
/// the way down, so that a read-only one can still be walked).
fn set_modes(dir: &Path, dirs: u32, files: u32) {
    fs::set_permissions(dir, fs::Permissions::from_mode(dirs | 0o500)).unwrap();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            set_modes(&p, dirs, files);
        } else {
            fs::set_permissions(&p, fs::Permissions::from_mode(files)).unwrap();
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(dirs)).unwrap();
}
