//! `laminar-inspect` run as an operator runs it: a real process on state
//! directories the crate wrote, clean and damaged (a bit flip in a
//! checkpoint data file, a torn WAL tail, damage in the middle of the log,
//! a missing directory), checking what it prints and its exit codes; and
//! the read-only recovery under it: nothing in the directories changes, it
//! works on a read-only mount and beside a live manager.

#![cfg(feature = "cli")]

#[path = "common/moto.rs"]
mod moto;
#[path = "common/mount.rs"]
mod mount;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use laminar_storage::inspect::Inspector;
use laminar_storage::{
    CheckpointConfig, IncrementalCheckpointError, IncrementalCheckpointManager, RecoveryConfig,
    RecoveryManager, StateWriter,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_laminar-inspect");

fn config(dir: &Path) -> CheckpointConfig {
    CheckpointConfig::new(dir)
        .with_wal_segment_size(64 << 10)
        .with_max_retained(2)
        .with_max_chain_length(3)
}

/// The state a model of the workload expects: key -> value.
type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn key(k: u64) -> Vec<u8> {
    format!("key-{k:04}").into_bytes()
}

fn value(epoch: u64, k: u64) -> Vec<u8> {
    let mut v = format!("v{epoch}-{k}:").into_bytes();
    v.extend((0..(k % 7) * 9).map(|i| (i as u8).wrapping_mul(37))); // binary bytes too
    v
}

/// One epoch: 40 puts over 100 keys, a delete, offsets and a watermark.
fn epoch(writer: &mut StateWriter, model: &mut Model) -> u64 {
    let e = writer.epoch();
    for i in 0..40 {
        let k = (e * 13 + i * 7) % 100;
        writer.put(&key(k), &value(e, k)).unwrap();
        model.insert(key(k), value(e, k));
    }
    let gone = (e * 31) % 100;
    writer.delete(&key(gone)).unwrap();
    model.remove(&key(gone));
    writer.set_source_offset("orders-0", e * 10);
    writer.set_watermark(1_000 + e as i64);
    writer.commit_epoch().unwrap()
}

/// Writes `epochs` epochs with a checkpoint every `every`, shuts down;
/// returns the model and the last epoch.
async fn populate(dir: &Path, epochs: u64, every: u64) -> (Model, u64) {
    let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir)).await.unwrap();
    let mut model = Model::new();
    let mut last = 0;
    for i in 1..=epochs {
        last = epoch(&mut writer, &mut model);
        if i % every == 0 {
            manager.checkpoint().await.unwrap();
        }
    }
    manager.wait_durable(last).await.unwrap();
    manager.shutdown().await.unwrap();
    (model, last)
}

fn populated(epochs: u64, every: u64) -> (tempfile::TempDir, Model, u64) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (model, last) = rt.block_on(populate(dir.path(), epochs, every));
    (dir, model, last)
}

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg(dir)
        .output()
        .expect("run laminar-inspect")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and asserts the exit code, showing the output if it differs.
fn expect(args: &[&str], dir: &Path, code: i32) -> Output {
    let o = run(args, dir);
    assert_eq!(
        o.status.code(),
        Some(code),
        "laminar-inspect {args:?}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    o
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(o)))
}

/// Every file under `dir` with its length and content hash: to show that
/// nothing changed (and no LOCK file appeared).
fn tree(dir: &Path) -> BTreeMap<PathBuf, (u64, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
                out.insert(p, (0, 0));
            } else {
                let bytes = fs::read(&p).unwrap();
                out.insert(p, (bytes.len() as u64, crc(&bytes)));
            }
        }
    }
    out
}

fn crc(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn newest_checkpoint(listing: &Value) -> &Value {
    listing["checkpoints"]
        .as_array()
        .unwrap()
        .last()
        .expect("a checkpoint")
}

#[test]
fn every_command_on_a_clean_state_reads_it_exactly_and_changes_nothing() {
    let (dir, model, last) = populated(30, 7);
    let dir = dir.path();
    let before = tree(dir);

    // list: the checkpoints with their chains, the WAL segments.
    let listing = json(&expect(&["list", "--json"], dir, 0));
    let checkpoints = listing["checkpoints"].as_array().unwrap();
    assert!(checkpoints.len() >= 2, "{listing:#}");
    for c in checkpoints {
        assert_eq!(c["valid"], true, "{c:#}");
        assert!(!c["files"].as_array().unwrap().is_empty());
    }
    let newest = newest_checkpoint(&listing);
    assert_eq!(newest["epoch"], 28, "{newest:#}");
    let segments = listing["wal_segments"].as_array().unwrap();
    assert!(!segments.is_empty());
    let last_epoch = segments.iter().filter_map(|s| s["last_epoch"].as_u64()).max();
    assert_eq!(last_epoch, Some(last));
    assert_eq!(listing["torn_tail"], Value::Null);
    let text = stdout(&expect(&["list"], dir, 0));
    assert!(text.contains("checkpoints in "), "{text}");
    assert!(text.contains("WAL segments in "), "{text}");
    assert!(text.contains("valid"), "{text}");

    // validate: clean.
    let v = json(&expect(&["validate", "--json"], dir, 0));
    assert_eq!(v["clean"], true, "{v:#}");
    assert!(v["bytes"].as_u64().unwrap() > 0);
    let o = expect(&["validate"], dir, 0);
    assert!(stdout(&o).contains("result: clean"), "{}", stdout(&o));
    assert_eq!(stderr(&o), "", "no progress unless stderr is a terminal");
    // Progress goes to stderr, never into the output scripts read.
    let o = expect(&["validate", "--progress", "--json"], dir, 0);
    assert!(stderr(&o).contains("scanning the WAL"), "{}", stderr(&o));
    assert!(stderr(&o).contains("reading checkpoint"), "{}", stderr(&o));
    assert_eq!(json(&o)["clean"], true);

    // recover --dry-run: the last epoch, every key, its offsets.
    let d = json(&expect(&["recover", "--dry-run", "--json"], dir, 0));
    assert_eq!(d["epoch"], last, "{d:#}");
    assert_eq!(d["next_epoch"], last + 1);
    assert_eq!(d["keys"], model.len() as u64);
    assert_eq!(d["checkpoint"]["epoch"], 28);
    assert_eq!(d["wal_epochs_replayed"], last - 28);
    assert_eq!(d["source_offsets"]["orders-0"], last * 10);
    assert_eq!(d["watermark"], 1_000 + last as i64);
    let text = stdout(&expect(&["recover", "--dry-run"], dir, 0));
    assert!(text.contains(&format!("recovered epoch:     {last}")), "{text}");

    // dump (the recovered state): every key and value, sorted, escaped.
    let text = stdout(&expect(&["dump"], dir, 0));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), model.len() + 1, "{text}");
    for ((k, v), line) in model.iter().zip(&lines) {
        let want = format!("put \"{}\" \"{}\"", k.escape_ascii(), v.escape_ascii());
        assert_eq!(*line, want);
    }
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with(&format!("commit epoch {last}:")),
        "{text}"
    );
    // As JSON lines with hex, and only a prefix.
    let o = expect(&["dump", "--json", "--hex", "--key", "6b65792d303031"], dir, 0);
    let items: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want: Vec<_> = model.keys().filter(|k| k.starts_with(b"key-001")).collect();
    assert_eq!(items.len(), want.len() + 1);
    for (item, k) in items.iter().zip(&want) {
        assert_eq!(
            item["key"],
            k.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
    }

    // dump --checkpoint: that checkpoint's keys.
    let id = newest["id"].as_u64().unwrap();
    let o = expect(&["dump", "--json", "--checkpoint", &id.to_string()], dir, 0);
    let items: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(items.len() as u64, newest["key_count"].as_u64().unwrap() + 1);
    assert_eq!(items.last().unwrap()["op"], "commit");
    assert_eq!(items.last().unwrap()["epoch"], 28);
    let status = run(&["dump", "--checkpoint", "999"], dir);
    assert_eq!(status.status.code(), Some(3), "{}", stderr(&status));

    // dump --wal: the updates and commits of epochs 29..30, in order.
    let o = expect(&["dump", "--json", "--wal", "29..30"], dir, 0);
    let items: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let commits: Vec<u64> = items
        .iter()
        .filter(|i| i["op"] == "commit")
        .map(|i| i["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(commits, [29, 30]);
    assert_eq!(items.len(), 2 * 42);
    assert_eq!(items[41]["source_offsets"]["orders-0"], 290);

    // dump --wal ..: every complete epoch the log still holds, in order,
    // from the oldest that `list` shows.
    let first_listed = segments
        .iter()
        .filter_map(|s| s["first_epoch"].as_u64())
        .min()
        .unwrap();
    let o = expect(&["dump", "--json", "--wal", ".."], dir, 0);
    let commits: Vec<u64> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|i| i["op"] == "commit")
        .map(|i| i["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(commits.first(), Some(&first_listed), "{commits:?}");
    assert!(commits.windows(2).all(|w| w[1] == w[0] + 1), "{commits:?}");
    assert_eq!(commits.last(), Some(&last));

    // stats.
    let s = json(&expect(&["stats", "--json"], dir, 0));
    assert_eq!(s["checkpoint"]["epoch"], 28, "{s:#}");
    assert_eq!(s["wal_epochs_since_checkpoint"], last - 28);
    assert_eq!(s["last_epoch"], last);
    assert_eq!(s["keys_at_last_epoch"], model.len() as u64);
    let hist: u64 = s["value_sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(hist, s["keys"].as_u64().unwrap());
    let text = stdout(&expect(&["stats"], dir, 0));
    assert!(text.contains("value sizes"), "{text}");

    assert_eq!(tree(dir), before, "a read-only command changed the directory");
}

/// Epochs of about a sixth of a WAL segment, with no record at an epoch's
/// start that would fill one exactly: segments begin in the middle of an
/// epoch, and so does the oldest one left after truncation. Its first
/// epoch, whose start was in a removed segment, is in neither `list`'s
/// epochs nor `dump --wal`: both start at the next.
#[test]
fn list_and_dump_agree_on_the_oldest_epoch_of_a_truncated_log() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let last = rt.block_on(async {
        let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir)).await.unwrap();
        let mut last = 0;
        for e in 1..=30u64 {
            // 10 puts of 1,000 bytes: about 10 KiB, segments of 64 KiB.
            for k in 0..10 {
                writer.put(&key(k), &vec![e as u8; 1000]).unwrap();
            }
            last = writer.commit_epoch().unwrap();
            manager.wait_durable(last).await.unwrap();
            if e % 5 == 0 {
                manager.checkpoint().await.unwrap();
            }
        }
        manager.shutdown().await.unwrap();
        last
    });

    let listing = json(&expect(&["list", "--json"], dir, 0));
    let segments = listing["wal_segments"].as_array().unwrap();
    assert!(segments.len() >= 2, "{listing:#}");
    let oldest = &segments[0];
    assert!(oldest["segment"].as_u64().unwrap() > 1, "truncated: {oldest:#}");
    let first = oldest["first_epoch"].as_u64().unwrap();
    let last_in_oldest = oldest["last_epoch"].as_u64().unwrap();
    // It holds the commit of the epoch before `first` too: counted, not
    // listed.
    assert_eq!(
        oldest["commits"].as_u64().unwrap(),
        last_in_oldest - first + 2,
        "the oldest segment does not begin mid-epoch: {oldest:#}"
    );
    let text = stdout(&expect(&["list"], dir, 0));
    assert!(last_in_oldest > first, "{oldest:#}");
    assert!(text.contains(&format!(" {first}..{last_in_oldest} ")), "{text}");

    let commits = |range: &str| -> Vec<u64> {
        stdout(&expect(&["dump", "--json", "--wal", range], dir, 0))
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|i| i["op"] == "commit")
            .map(|i| i["epoch"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(commits(".."), (first..=last).collect::<Vec<_>>());
    let partial = format!("{0}..{0}", first - 1);
    assert_eq!(commits(&partial), Vec::<u64>::new(), "its start is gone");
}

#[test]
fn a_torn_tail_is_reported_and_exits_zero() {
    let (dir, model, last) = populated(12, 5);
    let dir = dir.path();
    let listing = json(&expect(&["list", "--json"], dir, 0));
    let segment = listing["wal_segments"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let file = PathBuf::from(segment["file"].as_str().unwrap());
    let end = segment["written_bytes"].as_u64().unwrap();
    // Half a record's frame after the last record: a write cut short.
    let f = fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.write_all_at(&[0x2a, 0, 0, 0, 0x11, 0x22, 0x33], end).unwrap();
    drop(f);

    let o = expect(&["validate"], dir, 0);
    let text = stdout(&o);
    assert!(text.contains("torn tail"), "{text}");
    assert!(text.contains(&format!("at byte {end}")), "{text}");
    let v = json(&expect(&["validate", "--json"], dir, 0));
    assert_eq!(v["torn_tail"]["offset"], end);
    let d = json(&expect(&["recover", "--dry-run", "--json"], dir, 0));
    assert_eq!(d["epoch"], last);
    assert_eq!(d["keys"], model.len() as u64);
    assert_eq!(d["torn_tail"]["offset"], end);
}

#[test]
fn a_bit_flip_in_a_checkpoint_data_file_is_damage_named_by_file_and_offset() {
    let (dir, model, last) = populated(20, 6);
    let dir = dir.path();
    let listing = json(&expect(&["list", "--json"], dir, 0));
    let newest = newest_checkpoint(&listing);
    let name = newest["files"].as_array().unwrap().last().unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let path = dir.join(&name);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    fs::write(&path, &bytes).unwrap();

    let o = expect(&["validate"], dir, 1);
    let text = stdout(&o);
    let problem = text
        .lines()
        .find(|l| l.starts_with("PROBLEM"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(problem.contains(&name), "{problem}");
    assert!(problem.contains("at byte "), "{problem}");
    let v = json(&expect(&["validate", "--json"], dir, 1));
    assert_eq!(v["damage"], true);
    assert_eq!(v["problems"].as_array().unwrap().len(), 1, "{v:#}");
    assert!(v["problems"][0]["file"].as_str().unwrap().ends_with(&name));

    // Recovery falls back to the older checkpoint and the WAL: nothing lost.
    let d = json(&expect(&["recover", "--dry-run", "--json"], dir, 0));
    assert_eq!(d["epoch"], last, "{d:#}");
    assert_eq!(d["keys"], model.len() as u64);
    assert_eq!(d["checkpoints_skipped"][0]["id"], newest["id"]);
    let text = stdout(&expect(&["recover", "--dry-run"], dir, 0));
    assert!(text.contains("checkpoint skipped:"), "{text}");
    // Dumping the damaged checkpoint stops at the damage.
    let o = run(&["dump", "--checkpoint", &newest["id"].to_string()], dir);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&name), "{}", stderr(&o));
}

#[test]
fn damage_in_the_middle_of_the_log_is_an_error_for_validate_and_recovery() {
    let (dir, _model, _last) = populated(40, 100);
    let dir = dir.path();
    let segments = files_with(&dir.join("wal"), ".log");
    assert!(segments.len() >= 2, "{segments:?}");
    // A byte inside a record of the first segment (not the newest).
    let path = &segments[0];
    let f = fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 1000).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], 1000).unwrap();
    drop(f);

    let o = expect(&["validate"], dir, 1);
    let text = stdout(&o);
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(
        text.lines()
            .any(|l| l.starts_with("PROBLEM") && l.contains(&*name)),
        "{text}"
    );
    let o = expect(&["recover", "--dry-run"], dir, 1);
    assert!(stderr(&o).contains(&*name), "{}", stderr(&o));
    // list still lists, and says where the damage is.
    let listing = json(&expect(&["list", "--json"], dir, 0));
    let damage = listing["wal_damage"].as_array().unwrap();
    assert!(!damage.is_empty(), "{listing:#}");
    assert!(damage[0]["file"].as_str().unwrap().ends_with(&*name));
}

/// Damage where two segments meet: the seal of a segment (its last
/// record) and a segment missing from the middle of the log.
#[test]
fn damage_between_segments_is_found() {
    let (dir, _model, _last) = populated(60, 1000);
    let dir = dir.path();
    let listing = json(&expect(&["list", "--json"], dir, 0));
    let segments = listing["wal_segments"].as_array().unwrap().clone();
    assert!(segments.len() >= 3, "{listing:#}");

    // The seal record ending each segment but the newest, cut short
    // (validate scans the log in parts: one of them ends a part).
    let sealed = &segments[..segments.len() - 1];
    for segment in sealed {
        let file = PathBuf::from(segment["file"].as_str().unwrap());
        let end = segment["written_bytes"].as_u64().unwrap();
        let f = fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(&[0; 8], end - 8).unwrap();
    }
    let o = expect(&["validate"], dir, 1);
    for segment in sealed {
        let name = PathBuf::from(segment["file"].as_str().unwrap());
        let name = name.file_name().unwrap().to_string_lossy();
        assert!(
            stdout(&o)
                .lines()
                .any(|l| l.starts_with("PROBLEM") && l.contains(&*name)),
            "{name}: {}",
            stdout(&o)
        );
    }
    assert!(!stdout(&o).contains("torn tail"), "{}", stdout(&o));

    // A segment missing from the middle.
    let (dir2, _, _) = populated(60, 1000);
    let dir2 = dir2.path();
    let middle = dir2.join("wal").join(
        PathBuf::from(segments[1]["file"].as_str().unwrap())
            .file_name()
            .unwrap(),
    );
    fs::remove_file(&middle).unwrap();
    let o = expect(&["validate"], dir2, 1);
    assert!(stdout(&o).contains("missing"), "{}", stdout(&o));
    expect(&["recover", "--dry-run"], dir2, 1);
}

#[test]
fn a_missing_directory_is_an_io_error_naming_it_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-state");
    for cmd in [
        &["list"][..],
        &["validate"],
        &["recover", "--dry-run"],
        &["dump"],
        &["stats"],
    ] {
        let o = expect(cmd, &missing, 3);
        assert!(stderr(&o).contains("no-such-state"), "{cmd:?}: {}", stderr(&o));
    }
    assert!(!missing.exists());
    // The library: a typed error, nothing created.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(RecoveryManager::new(RecoveryConfig::new(&missing, missing.join("wal"))).recover());
    assert!(
        matches!(&r, Err(IncrementalCheckpointError::NotFound { path }) if *path == missing),
        "{r:?}"
    );
    // A checkpoint directory without its WAL directory names the WAL's.
    fs::create_dir(&missing).unwrap();
    let r = rt.block_on(Inspector::new(&missing, missing.join("wal")).validate());
    assert!(
        matches!(&r, Err(IncrementalCheckpointError::NotFound { path }) if *path == missing.join("wal")),
        "{r:?}"
    );
    assert_eq!(fs::read_dir(&missing).unwrap().count(), 0);
}

#[test]
fn usage_errors_exit_two() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["recover"][..],           // --dry-run is required
        &["dump", "--wal", "9..3"], // backwards
        &["dump", "--wal", "x"],
        &["dump", "--checkpoint", "1", "--wal", "1..2"],
        &["frobnicate"],
        &["dump", "--key", "\\q"],
    ] {
        let o = run(args, tmp.path());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    // A store URL needs the WAL directory; a memory:// store is empty in
    // another process.
    let o = run(&["list"], Path::new("s3://bucket/prefix"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--wal-dir"), "{}", stderr(&o));
    let o = run(
        &["list", "--wal-dir", tmp.path().to_str().unwrap()],
        Path::new("memory://"),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("Exit codes:"), "{}", stdout(&help));
}

#[test]
fn recovery_reads_a_read_only_mount() {
    let (tmp, model, last) = populated(15, 4);
    let dir = tmp.path().join("state");
    fs::create_dir(&dir).unwrap();
    for e in fs::read_dir(tmp.path()).unwrap() {
        let p = e.unwrap().path();
        if p != dir {
            fs::rename(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    let before = tree(&dir);
    let Some(ro) = mount::ReadOnlyBind::new(&dir, &tmp.path().join("ro")) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt
        .block_on(RecoveryManager::new(RecoveryConfig::new(ro.path(), ro.path().join("wal"))).recover())
        .unwrap();
    assert_eq!(r.epoch, last);
    assert_eq!(r.len(), model.len());
    for (k, v) in &model {
        assert_eq!(r.get(k), Some(&v[..]));
    }
    expect(&["validate"], ro.path(), 0);
    let d = json(&expect(&["recover", "--dry-run", "--json"], ro.path(), 0));
    assert_eq!(d["epoch"], last);
    expect(&["list"], ro.path(), 0);
    expect(&["stats"], ro.path(), 0);
    expect(&["dump"], ro.path(), 0);
    drop(ro);
    assert_eq!(tree(&dir), before);
}

#[test]
fn recovery_beside_a_live_manager_reads_a_published_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir)).await.unwrap();
        let mut model = Model::new();
        let mut durable = Vec::new();
        for i in 1..=25 {
            let e = epoch(&mut writer, &mut model);
            manager.wait_durable(e).await.unwrap();
            durable.push((e, model.clone()));
            if i % 6 == 0 {
                manager.checkpoint().await.unwrap();
            }
            if i % 5 == 0 {
                // Read while the manager holds the lock and keeps writing.
                let seen = RecoveryManager::new(RecoveryConfig::new(dir, dir.join("wal")))
                    .recover()
                    .await
                    .unwrap();
                assert_eq!(seen.epoch, e, "every epoch acknowledged durable is seen");
                let (_, want) = durable.iter().find(|(d, _)| *d == seen.epoch).unwrap();
                assert_eq!(seen.len(), want.len());
                for (k, v) in want {
                    assert_eq!(seen.get(k), Some(&v[..]));
                }
                let o = tokio::task::spawn_blocking({
                    let dir = dir.to_path_buf();
                    move || run(&["recover", "--dry-run", "--json"], &dir)
                })
                .await
                .unwrap();
                assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
                assert!(json(&o)["epoch"].as_u64().unwrap() >= e);
            }
        }
        // The manager is unaffected: it still commits and checkpoints.
        let e = epoch(&mut writer, &mut model);
        manager.wait_durable(e).await.unwrap();
        manager.checkpoint().await.unwrap();
        manager.shutdown().await.unwrap();
    });
}

/// Runs on a checkpoint-store URL with the S3 endpoint in the child's
/// environment, and asserts the exit code.
fn expect_s3(args: &[&str], url: &str, endpoint: &str, code: i32) -> Output {
    let o = Command::new(BIN)
        .args(args)
        .arg(url)
        .env("AWS_ENDPOINT", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .expect("run laminar-inspect");
    assert_eq!(
        o.status.code(),
        Some(code),
        "laminar-inspect {args:?} {url}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    o
}

/// Checkpoints on S3 (a real `moto_server`), the WAL on the node's disk:
/// `list`, `validate` and `recover --dry-run` on `s3://bucket/prefix
/// --wal-dir DIR` read them, write nothing to the store, and a corrupted
/// object is damage named by its object name.
#[test]
fn a_checkpoint_store_url_is_read_through_the_store() {
    use futures::TryStreamExt;
    use laminar_storage::ObjectStoreCheckpointStore;
    use object_store::path::Path as ObjectPath;
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
    use std::sync::Arc;

    let Some(moto) = moto::Moto::start() else {
        assert!(
            std::env::var_os("LAMINAR_REQUIRE_MOTO").is_none(),
            "LAMINAR_REQUIRE_MOTO is set and moto_server is not on PATH (pip install 'moto[server]')"
        );
        eprintln!("skipped: moto_server is not on PATH (pip install 'moto[server]' to run it)");
        return;
    };
    moto.create_bucket("inspect");
    let bucket = moto.bucket("inspect");
    let node = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = ObjectStoreCheckpointStore::new(Arc::clone(&bucket), "node-a");
    let (model, last) = rt.block_on(async {
        let config = config(node.path()).with_checkpoint_store(Arc::new(store));
        let (manager, mut writer) = IncrementalCheckpointManager::open(config).await.unwrap();
        let mut model = Model::new();
        let mut last = 0;
        for i in 1..=12 {
            last = epoch(&mut writer, &mut model);
            if i % 5 == 0 {
                manager.checkpoint().await.unwrap();
            }
        }
        manager.wait_durable(last).await.unwrap();
        manager.shutdown().await.unwrap();
        (model, last)
    });
    let objects = || {
        rt.block_on(async {
            let mut objects: Vec<(String, u64)> = bucket
                .list(None)
                .map_ok(|m| (m.location.to_string(), m.size))
                .try_collect()
                .await
                .unwrap();
            objects.sort();
            objects
        })
    };
    let before = objects();
    assert!(!before.is_empty());
    let url = "s3://inspect/node-a";
    let wal = node.path().join("wal");
    let wal = wal.to_str().unwrap();
    let ep = moto.endpoint.as_str();

    let listing = json(&expect_s3(&["list", "--json", "--wal-dir", wal], url, ep, 0));
    assert_eq!(listing["checkpoints"].as_array().unwrap().len(), 2, "{listing:#}");
    let newest = newest_checkpoint(&listing).clone();
    expect_s3(&["validate", "--wal-dir", wal], url, ep, 0);
    let d = json(&expect_s3(
        &["recover", "--dry-run", "--json", "--wal-dir", wal],
        url,
        ep,
        0,
    ));
    assert_eq!(d["epoch"], last, "{d:#}");
    assert_eq!(d["keys"], model.len() as u64, "{d:#}");
    // The store alone, as a fresh node restores it: an empty WAL directory.
    let fresh = tempfile::tempdir().unwrap();
    let empty = fresh.path().to_str().unwrap();
    let d = json(&expect_s3(
        &["recover", "--dry-run", "--json", "--wal-dir", empty],
        url,
        ep,
        0,
    ));
    assert_eq!(d["epoch"], newest["epoch"], "{d:#}");
    // No WAL directory: a usage error, nothing read or written.
    let o = expect_s3(&["list"], url, ep, 2);
    assert!(stderr(&o).contains("--wal-dir"), "{}", stderr(&o));
    assert_eq!(objects(), before, "the store is unchanged");
    assert_eq!(fs::read_dir(fresh.path()).unwrap().count(), 0);

    // A bit flip in the newest checkpoint's last data file.
    let name = newest["files"].as_array().unwrap().last().unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let location = ObjectPath::from(format!("node-a/{name}"));
    rt.block_on(async {
        let mut bytes = bucket
            .get(&location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x10;
        bucket.put(&location, PutPayload::from(bytes)).await.unwrap();
    });
    let o = expect_s3(&["validate", "--wal-dir", wal], url, ep, 1);
    let text = stdout(&o);
    let problem = text
        .lines()
        .find(|l| l.starts_with("PROBLEM"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(problem.contains(&format!("{url}/{name}")), "{problem}");
    // Recovery skips it and replays the WAL from the older one.
    let d = json(&expect_s3(
        &["recover", "--dry-run", "--json", "--wal-dir", wal],
        url,
        ep,
        0,
    ));
    assert_eq!(d["epoch"], last, "{d:#}");
    assert_eq!(d["checkpoints_skipped"][0]["id"], newest["id"], "{d:#}");
}
