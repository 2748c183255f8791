//! Each command: ask the [`Inspector`], print a table or JSON.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Stdout, Write};
use std::ops::{ControlFlow, RangeInclusive};
use std::path::Path;

use laminar_storage::inspect::{
    CheckpointInfo, DryRun, DumpItem, DumpVisitor, DumpedCommit, Listing, SegmentInfo, Stats, Validation,
};
use laminar_storage::{IncrementalCheckpointMetadata, Inspector, TornTail, WalDamage};
use serde_json::{Value, json};

use crate::text::{self, Table, left, opt, right, size, span};
use crate::{Failure, Options};

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn write_json(out: &mut impl Write, v: &Value) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, v).map_err(io::Error::other)?;
    writeln!(out)
}

fn offsets_json(offsets: impl IntoIterator<Item = (String, u64)>) -> Value {
    let sorted: BTreeMap<String, u64> = offsets.into_iter().collect();
    json!(sorted)
}

fn offsets_text(offsets: impl IntoIterator<Item = (String, u64)>) -> String {
    let sorted: BTreeMap<String, u64> = offsets.into_iter().collect();
    if sorted.is_empty() {
        return "none".to_string();
    }
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn torn_json(t: Option<&TornTail>) -> Value {
    t.map_or(
        Value::Null,
        |t| json!({"file": path(&t.file), "offset": t.offset, "bytes": t.bytes}),
    )
}

fn torn_text(t: &TornTail) -> String {
    format!(
        "{} at byte {}: {} bytes of a record cut short by a crash (recovery drops them)",
        t.file.display(),
        t.offset,
        t.bytes
    )
}

fn damage_json(d: &[WalDamage]) -> Value {
    d.iter()
        .map(|d| {
            json!({"file": path(&d.file), "offset": d.offset, "bytes": d.bytes, "reason": d.reason, "stopped": d.stopped})
        })
        .collect()
}

fn metadata_json(m: &IncrementalCheckpointMetadata) -> Value {
    json!({
        "id": m.id,
        "epoch": m.epoch,
        "timestamp": m.timestamp,
        "parent_id": m.parent_id,
        "incremental": m.is_incremental,
        "chain_length": m.chain_length,
        "key_count": m.key_count,
        "size_bytes": m.size_bytes,
        "delta_bytes": m.delta_bytes,
        "watermark": m.watermark,
        "source_offsets": offsets_json(m.source_offsets.clone()),
    })
}

// ---------------------------------------------------------------------
// list

pub(crate) async fn list(inspector: &Inspector, o: &Options, out: &mut impl Write) -> Result<(), Failure> {
    let listing = inspector.list().await?;
    if o.json {
        write_json(out, &listing_json(inspector, &listing))?;
    } else {
        listing_text(inspector, &listing, out)?;
    }
    Ok(())
}

fn checkpoint_json(c: &CheckpointInfo) -> Value {
    let mut v = c
        .metadata
        .as_ref()
        .map_or_else(|| json!({"id": c.id}), metadata_json);
    v["manifest"] = json!(path(&c.manifest));
    v["valid"] = json!(c.is_valid());
    v["problem"] = c.problem.as_ref().map_or(Value::Null, |e| json!(e.to_string()));
    v["wal_segment"] = json!(c.wal_segment);
    v["files"] = c
        .files
        .iter()
        .map(|f| {
            json!({"name": f.name, "kind": f.kind.as_str(), "checkpoint_id": f.checkpoint_id, "epoch": f.epoch,
                   "bytes": f.bytes, "entries": f.entries, "checksum": format!("{:08x}", f.checksum),
                   "blocks": f.blocks.map(|b| b.blocks),
                   "compressed_blocks": f.blocks.map(|b| b.compressed),
                   "raw_bytes": f.blocks.map(|b| b.raw_bytes)})
        })
        .collect();
    v
}

fn segment_json(s: &SegmentInfo) -> Value {
    json!({
        "segment": s.segment,
        "file": path(&s.file),
        "bytes": s.bytes,
        "readable": s.readable,
        "written_bytes": s.written_bytes,
        "first_seq": s.seqs.map(|r| r.0),
        "last_seq": s.seqs.map(|r| r.1),
        "first_epoch": s.epochs.map(|r| r.0),
        "last_epoch": s.epochs.map(|r| r.1),
        "updates": s.updates,
        "commits": s.commits,
        "sealed": s.sealed,
    })
}

fn listing_json(inspector: &Inspector, l: &Listing) -> Value {
    json!({
        "checkpoint_dir": path(inspector.config().checkpoint_dir()),
        "wal_dir": path(inspector.config().wal_path()),
        "checkpoints": l.checkpoints.iter().map(checkpoint_json).collect::<Vec<_>>(),
        "other_checkpoint_files": l.other_checkpoint_files,
        "wal_segments": l.wal_segments.iter().map(segment_json).collect::<Vec<_>>(),
        "torn_tail": torn_json(l.torn_tail.as_ref()),
        "wal_damage": damage_json(&l.wal_damage),
    })
}

fn listing_text(inspector: &Inspector, l: &Listing, out: &mut impl Write) -> io::Result<()> {
    let cfg = inspector.config();
    writeln!(
        out,
        "checkpoints in {}: {}",
        cfg.checkpoint_dir().display(),
        l.checkpoints.len()
    )?;
    if !l.checkpoints.is_empty() {
        let mut t = Table::new([
            right("id"),
            right("epoch"),
            right("parent"),
            left("kind"),
            right("chain"),
            right("size"),
            right("written"),
            right("keys"),
            right("wal-seg"),
            left("status"),
        ]);
        for c in &l.checkpoints {
            let m = c.metadata.as_ref();
            let status = match &c.problem {
                None => "valid".to_string(),
                Some(e) => format!("INVALID: {e}"),
            };
            t.row(vec![
                c.id.to_string(),
                opt(m.map(|m| m.epoch)),
                opt(m.and_then(|m| m.parent_id)),
                m.map_or("-", |m| if m.is_incremental { "incremental" } else { "base" })
                    .to_string(),
                opt(m.map(|m| m.chain_length)),
                m.map_or_else(|| "-".to_string(), |m| size(m.size_bytes)),
                m.map_or_else(|| "-".to_string(), |m| size(m.delta_bytes)),
                opt(m.map(|m| m.key_count)),
                opt(c.wal_segment),
                status,
            ]);
        }
        t.print(out)?;
        writeln!(out)?;
        // The checksum is an identifier, not a quantity: left, like a name.
        let mut t = Table::new([
            right("checkpoint"),
            left("file"),
            left("kind"),
            right("epoch"),
            right("size"),
            right("raw"),
            right("lz4"),
            right("entries"),
            left("crc32"),
        ]);
        for c in &l.checkpoints {
            for f in &c.files {
                t.row(vec![
                    c.id.to_string(),
                    f.name.clone(),
                    f.kind.as_str().to_string(),
                    f.epoch.to_string(),
                    size(f.bytes),
                    f.blocks.map_or_else(|| "-".to_string(), |b| size(b.raw_bytes)),
                    f.blocks
                        .map_or_else(|| "-".to_string(), |b| format!("{}/{}", b.compressed, b.blocks)),
                    f.entries.to_string(),
                    format!("{:08x}", f.checksum),
                ]);
            }
        }
        t.print(out)?;
    }
    if !l.other_checkpoint_files.is_empty() {
        writeln!(
            out,
            "checkpoint files no manifest names (leftovers the next open deletes): {}",
            l.other_checkpoint_files.join(", ")
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "WAL segments in {}: {}",
        cfg.wal_path().display(),
        l.wal_segments.len()
    )?;
    if !l.wal_segments.is_empty() {
        let mut t = Table::new([
            right("segment"),
            right("size"),
            right("written"),
            right("seqs"),
            right("epochs"),
            right("updates"),
            right("commits"),
            left("sealed"),
        ]);
        for s in &l.wal_segments {
            t.row(vec![
                s.segment.to_string(),
                size(s.bytes),
                if s.readable {
                    size(s.written_bytes)
                } else {
                    "unreadable".to_string()
                },
                span(s.seqs),
                span(s.epochs),
                s.updates.to_string(),
                s.commits.to_string(),
                if s.sealed { "yes" } else { "no" }.to_string(),
            ]);
        }
        t.print(out)?;
    }
    if let Some(torn) = &l.torn_tail {
        writeln!(out, "torn tail: {}", torn_text(torn))?;
    }
    for d in &l.wal_damage {
        writeln!(
            out,
            "WAL damage: {} at byte {} ({} bytes): {} (run `validate`)",
            d.file.display(),
            d.offset,
            d.bytes,
            d.reason
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------
// validate

pub(crate) async fn validate(
    inspector: &Inspector,
    o: &Options,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let v = inspector.validate().await?;
    if o.json {
        write_json(out, &validation_json(&v))?;
    } else {
        validation_text(&v, out)?;
    }
    out.flush()?;
    if v.has_damage() {
        Err(Failure::Damage)
    } else if !v.is_clean() {
        Err(Failure::Other)
    } else {
        Ok(())
    }
}

fn validation_json(v: &Validation) -> Value {
    json!({
        "clean": v.is_clean(),
        "damage": v.has_damage(),
        "checkpoints": v.checkpoints,
        "data_files": v.data_files,
        "wal_segments": v.wal_segments,
        "bytes": v.bytes,
        "torn_tail": torn_json(v.torn_tail.as_ref()),
        "problems": v.problems.iter().map(|p| json!({
            "file": p.file.as_deref().map(path),
            "offset": p.offset,
            "damage": p.is_damage(),
            "error": p.error.to_string(),
        })).collect::<Vec<_>>(),
    })
}

fn validation_text(v: &Validation, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "checked {} checkpoint(s) ({} data file(s)) and {} WAL segment(s): {}",
        v.checkpoints,
        v.data_files,
        v.wal_segments,
        size(v.bytes)
    )?;
    for p in &v.problems {
        writeln!(out, "PROBLEM: {p}")?;
    }
    if let Some(torn) = &v.torn_tail {
        writeln!(out, "torn tail (not damage): {}", torn_text(torn))?;
    }
    if v.is_clean() {
        writeln!(out, "result: clean")
    } else {
        writeln!(
            out,
            "result: {} problem(s){}",
            v.problems.len(),
            if v.has_damage() { ", damage" } else { "" }
        )
    }
}

// ---------------------------------------------------------------------
// recover --dry-run

pub(crate) async fn dry_run(inspector: &Inspector, o: &Options, out: &mut impl Write) -> Result<(), Failure> {
    let d = inspector.dry_run().await?;
    if o.json {
        write_json(out, &dry_run_json(&d))?;
    } else {
        dry_run_text(inspector, &d, out)?;
    }
    Ok(())
}

fn dry_run_json(d: &DryRun) -> Value {
    let r = d.state.report();
    json!({
        "checkpoint": d.checkpoint.as_ref().map(metadata_json),
        "checkpoints_skipped": r.checkpoints_skipped.iter().map(|s| json!({"id": s.id, "reason": s.reason.to_string()})).collect::<Vec<_>>(),
        "wal_updates_replayed": r.wal_entries_replayed,
        "wal_epochs_replayed": d.wal_epochs_replayed,
        "wal_segments_read": d.wal_segments_read,
        "wal_updates_discarded": r.wal_entries_discarded,
        "torn_tail": torn_json(r.torn_tail.as_ref()),
        "wal_damage": damage_json(&r.wal_damage),
        "epoch": r.epoch,
        "next_epoch": d.next_epoch,
        "keys": d.state.len(),
        "watermark": r.watermark,
        "source_offsets": offsets_json(r.source_offsets.clone()),
        "elapsed_ms": d.elapsed.as_secs_f64() * 1e3,
    })
}

fn dry_run_text(inspector: &Inspector, d: &DryRun, out: &mut impl Write) -> io::Result<()> {
    let r = d.state.report();
    let cfg = inspector.config();
    writeln!(
        out,
        "recovery of {} (WAL {}), dry run: nothing written",
        cfg.checkpoint_dir().display(),
        cfg.wal_path().display()
    )?;
    let used = match &d.checkpoint {
        Some(m) => format!(
            "{} (epoch {}, {}, chain of {} file(s), {} keys)",
            m.id,
            m.epoch,
            if m.is_incremental { "incremental" } else { "base" },
            m.chain_length,
            m.key_count
        ),
        None => "none: the whole WAL from epoch 1".to_string(),
    };
    writeln!(out, "checkpoint used:     {used}")?;
    for s in &r.checkpoints_skipped {
        writeln!(out, "checkpoint skipped:  {}: {}", s.id, s.reason)?;
    }
    writeln!(
        out,
        "WAL replayed:        {} update(s) in {} epoch(s), {} segment(s) read",
        r.wal_entries_replayed, d.wal_epochs_replayed, d.wal_segments_read
    )?;
    if r.wal_entries_discarded > 0 {
        writeln!(
            out,
            "WAL discarded:       {} update(s) of an epoch never committed",
            r.wal_entries_discarded
        )?;
    }
    if let Some(torn) = &r.torn_tail {
        writeln!(out, "torn tail:           {}", torn_text(torn))?;
    }
    for w in &r.wal_damage {
        writeln!(
            out,
            "WAL damage accepted: {} at byte {} ({} bytes): {}{}",
            w.file.display(),
            w.offset,
            w.bytes,
            w.reason,
            if w.stopped { " (stopped there)" } else { "" }
        )?;
    }
    writeln!(
        out,
        "recovered epoch:     {} (next epoch {})",
        r.epoch, d.next_epoch
    )?;
    writeln!(out, "keys:                {}", d.state.len())?;
    writeln!(out, "watermark:           {}", opt(r.watermark))?;
    writeln!(
        out,
        "source offsets:      {}",
        offsets_text(r.source_offsets.clone())
    )?;
    writeln!(
        out,
        "time:                {:.1} ms",
        d.elapsed.as_secs_f64() * 1e3
    )
}

// ---------------------------------------------------------------------
// dump

/// What to dump.
pub(crate) enum DumpWhat {
    /// The state recovery would return.
    Recovered,
    /// One checkpoint.
    Checkpoint(u64),
    /// WAL epochs.
    Wal(RangeInclusive<u64>),
}

/// Prints dump items to stdout, one line each.
struct Printer {
    out: BufWriter<Stdout>,
    prefix: Vec<u8>,
    hex: bool,
    json: bool,
    error: Option<io::Error>,
}

impl Printer {
    fn print(&mut self, item: DumpItem<'_>) -> io::Result<()> {
        let b = |bytes: &[u8]| text::bytes(bytes, self.hex);
        match item {
            DumpItem::Put { key, .. } | DumpItem::Delete { key } if !key.starts_with(&self.prefix) => Ok(()),
            DumpItem::Put { key, value } if self.json => {
                writeln!(
                    self.out,
                    "{}",
                    json!({"op": "put", "key": b(key), "value": b(value)})
                )
            }
            DumpItem::Put { key, value } => writeln!(self.out, "put {} {}", quote(&b(key)), quote(&b(value))),
            DumpItem::Delete { key } if self.json => {
                writeln!(self.out, "{}", json!({"op": "delete", "key": b(key)}))
            }
            DumpItem::Delete { key } => writeln!(self.out, "delete {}", quote(&b(key))),
            DumpItem::Commit(c) => self.commit(c),
            _ => Ok(()),
        }
    }

    fn commit(&mut self, c: &DumpedCommit) -> io::Result<()> {
        if self.json {
            let v = json!({"op": "commit", "epoch": c.epoch, "live_keys": c.live_keys, "watermark": c.watermark,
                           "source_offsets": offsets_json(c.source_offsets.clone())});
            writeln!(self.out, "{v}")
        } else {
            writeln!(
                self.out,
                "commit epoch {}: {} live keys, watermark {}, source offsets {}",
                c.epoch,
                c.live_keys,
                opt(c.watermark),
                offsets_text(c.source_offsets.clone())
            )
        }
    }
}

fn quote(s: &str) -> String {
    format!("\"{s}\"")
}

impl DumpVisitor for Printer {
    fn visit(&mut self, item: DumpItem<'_>) -> ControlFlow<()> {
        match self.print(item) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }
}

pub(crate) async fn dump(
    inspector: &Inspector,
    o: &Options,
    what: DumpWhat,
    prefix: Vec<u8>,
) -> Result<(), Failure> {
    let mut printer = Printer {
        out: BufWriter::with_capacity(1 << 16, io::stdout()),
        prefix,
        hex: o.hex,
        json: o.json,
        error: None,
    };
    printer = match what {
        DumpWhat::Checkpoint(id) => inspector.dump_checkpoint(id, printer).await?,
        DumpWhat::Wal(epochs) => inspector.dump_wal(epochs, printer).await?,
        DumpWhat::Recovered => {
            let d = inspector.dry_run().await?;
            let mut entries: Vec<(&[u8], &[u8])> = d
                .state
                .iter()
                .filter(|(k, _)| k.starts_with(&printer.prefix))
                .collect();
            entries.sort_unstable();
            for (key, value) in entries {
                if printer.visit(DumpItem::Put { key, value }).is_break() {
                    break;
                }
            }
            let r = d.state.report();
            if printer.error.is_none() {
                let mut offsets: Vec<(String, u64)> = r.source_offsets.clone().into_iter().collect();
                offsets.sort();
                let commit = commit_of(r.epoch, d.state.len() as u64, r.watermark, offsets);
                let _ = printer.visit(DumpItem::Commit(&commit));
            }
            printer
        }
    };
    if let Some(e) = printer.error.take() {
        return Err(Failure::Output(e));
    }
    printer.out.flush()?;
    Ok(())
}

/// The recovered state's commit line (the library hands dumps theirs).
fn commit_of(
    epoch: u64,
    live_keys: u64,
    watermark: Option<i64>,
    source_offsets: Vec<(String, u64)>,
) -> DumpedCommit {
    DumpedCommit::new(epoch, live_keys, watermark, source_offsets)
}

// ---------------------------------------------------------------------
// stats

pub(crate) async fn stats(inspector: &Inspector, o: &Options, out: &mut impl Write) -> Result<(), Failure> {
    let s = inspector.stats().await?;
    if o.json {
        write_json(out, &stats_json(&s))?;
    } else {
        stats_text(&s, out)?;
    }
    Ok(())
}

fn stats_json(s: &Stats) -> Value {
    json!({
        "checkpoints": s.checkpoints,
        "checkpoint_bytes": s.checkpoint_bytes,
        "checkpoint": s.checkpoint.as_ref().map(metadata_json),
        "chain_length": s.chain_length,
        "keys": s.keys,
        "key_bytes": s.key_bytes,
        "value_bytes": s.value_bytes,
        "value_sizes": s.value_sizes.buckets().map(|(lo, hi, n)| json!({"min": lo, "max": hi, "count": n})).collect::<Vec<_>>(),
        "wal_segments": s.wal_segments,
        "wal_bytes": s.wal_bytes,
        "wal_bytes_since_checkpoint": s.wal_bytes_since_checkpoint,
        "wal_updates_since_checkpoint": s.wal_updates_since_checkpoint,
        "wal_epochs_since_checkpoint": s.wal_epochs_since_checkpoint,
        "last_epoch": s.last_epoch,
        "keys_at_last_epoch": s.keys_at_last_epoch,
    })
}

fn stats_text(s: &Stats, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "checkpoints:            {} ({})",
        s.checkpoints,
        size(s.checkpoint_bytes)
    )?;
    match &s.checkpoint {
        Some(m) => writeln!(
            out,
            "newest readable:        {} (epoch {}, chain of {} file(s), {})",
            m.id,
            m.epoch,
            s.chain_length,
            size(m.size_bytes)
        )?,
        None => writeln!(out, "newest readable:        none")?,
    }
    writeln!(
        out,
        "keys in it:             {} ({} of keys, {} of values)",
        s.keys,
        size(s.key_bytes),
        size(s.value_bytes)
    )?;
    writeln!(
        out,
        "WAL:                    {} segment(s), {}",
        s.wal_segments,
        size(s.wal_bytes)
    )?;
    writeln!(
        out,
        "WAL since checkpoint:   {} in {} update(s), {} epoch(s)",
        size(s.wal_bytes_since_checkpoint),
        s.wal_updates_since_checkpoint,
        s.wal_epochs_since_checkpoint
    )?;
    writeln!(
        out,
        "last complete epoch:    {} ({} keys)",
        opt(s.last_epoch),
        opt(s.keys_at_last_epoch)
    )?;
    if s.value_sizes.count() > 0 {
        writeln!(out, "value sizes in the checkpoint:")?;
        let mut t = Table::new([right("min"), right("max"), right("values"), right("share")]);
        let total = s.value_sizes.count() as f64;
        for (lo, hi, n) in s.value_sizes.buckets() {
            t.row(vec![
                lo.to_string(),
                hi.to_string(),
                n.to_string(),
                format!("{:.1}%", n as f64 * 100.0 / total),
            ]);
        }
        t.print(out)?;
    }
    Ok(())
}
