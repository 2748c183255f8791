//! `laminar-inspect`: an operator's read-only look at a laminar-storage
//! state directory. A thin command line over
//! [`laminar_storage::inspect`]; it never changes the directories.

mod commands;
mod text;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use laminar_storage::{IncrementalCheckpointError, Inspector, RecoveryConfig, WalError};

const AFTER_HELP: &str = "\
Checkpoint stores (a build with `--features object-store`):
  laminar-inspect list s3://bucket/prefix --wal-dir DIR
  reads the checkpoints in the store (credentials, region and endpoint from AWS_ACCESS_KEY_ID,
  AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT, AWS_ALLOW_HTTP, ...) and the WAL in DIR,
  which is required and must exist (an empty one shows what a fresh node would restore).
  Nothing is written to the store. file:///path is a local state directory.

Exit codes:
  0  done; the state is sound (a torn WAL tail, what a crash leaves, is reported and still 0)
  1  damage: a checksum, size, sequence or key count does not match, or a file is missing
  2  usage error: bad arguments
  3  I/O error: a directory that does not exist, a file that cannot be read
  4  anything else: a file of a newer format version, a state that does not add up";

/// Reads a laminar-storage state directory (checkpoints and WAL) and says
/// what is in it. Never creates, locks, changes or deletes anything: safe
/// on a read-only mount of a backup and beside a running manager.
#[derive(Debug, Parser)]
#[command(name = "laminar-inspect", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    options: Options,
}

#[derive(Debug, Args)]
struct Options {
    /// The WAL directory [default: the wal directory in STATE; required
    /// with a store URL].
    #[arg(long, global = true, value_name = "DIR")]
    wal_dir: Option<PathBuf>,
    /// Print JSON for scripts (one document; `dump`: one object per line).
    #[arg(long, global = true)]
    json: bool,
    /// Print keys and values (and read `--key`) as hex instead of escaped
    /// text.
    #[arg(long, global = true)]
    hex: bool,
    /// Print progress on stderr even when it is not a terminal.
    #[arg(long, global = true, conflicts_with = "quiet")]
    progress: bool,
    /// Print no progress.
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checkpoints (id, epoch, parent, kind, files, sizes, key count, valid)
    /// and WAL segments (sequence numbers, epochs, bytes).
    List(Target),
    /// Checks every checksum of every checkpoint and WAL segment; prints
    /// each problem with file and byte offset. Exit 1 on damage, 0 on a
    /// torn tail alone.
    Validate(Target),
    /// Which checkpoint recovery would use and skip, what it would replay,
    /// and the resulting epoch, key count and source offsets.
    Recover(Recover),
    /// Entries and commits: of the state recovery would return (default),
    /// of one checkpoint, or of a range of WAL epochs.
    Dump(Dump),
    /// Sizes, key count, value sizes, chain length, WAL written since the
    /// newest checkpoint.
    Stats(Target),
}

#[derive(Debug, Args)]
struct Target {
    /// The state directory (the checkpoint directory; the WAL is in
    /// `<STATE>/wal` unless `--wal-dir` says otherwise), or, in a build
    /// with the `object-store` feature, a checkpoint-store URL such as
    /// `s3://bucket/prefix` (with `--wal-dir`; credentials, region and
    /// endpoint from the `AWS_*` environment variables).
    #[arg(value_name = "STATE")]
    state: String,
}

#[derive(Debug, Args)]
struct Recover {
    /// Required: this tool only reads (a manager's open recovers and
    /// repairs).
    #[arg(long, required = true)]
    dry_run: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct Dump {
    #[command(flatten)]
    target: Target,
    /// Dump this checkpoint's entries (its chain merged).
    #[arg(long, value_name = "ID", conflicts_with = "wal")]
    checkpoint: Option<u64>,
    /// Dump the WAL's updates and commits of epochs FROM..TO (inclusive;
    /// `FROM..` to the end, `..TO` from the start).
    #[arg(long, value_name = "FROM..TO", value_parser = parse_epochs)]
    wal: Option<(u64, u64)>,
    /// Only keys starting with PREFIX (escaped as printed, or hex with
    /// `--hex`).
    #[arg(long, value_name = "PREFIX")]
    key: Option<String>,
}

fn parse_epochs(s: &str) -> Result<(u64, u64), String> {
    let (from, to) = s
        .split_once("..")
        .ok_or_else(|| format!("`{s}` is not FROM..TO"))?;
    let from = if from.is_empty() {
        0
    } else {
        from.parse().map_err(|e| format!("`{from}`: {e}"))?
    };
    let to = match to.strip_prefix('=').unwrap_or(to) {
        "" => u64::MAX,
        t => t.parse().map_err(|e| format!("`{t}`: {e}"))?,
    };
    if from > to {
        return Err(format!("{from} is after {to}"));
    }
    Ok((from, to))
}

/// Why a command failed, as its exit code says.
#[derive(Debug)]
enum Failure {
    /// Bad arguments found after parsing (exit 2).
    Usage(String),
    /// The library's error (exit 1, 3 or 4 by its kind).
    State(IncrementalCheckpointError),
    /// Damage found and printed (exit 1).
    Damage,
    /// Problems that are not damage found and printed (exit 4).
    Other,
    /// Writing the output failed (exit 3), except a closed pipe (0).
    Output(std::io::Error),
}

impl From<IncrementalCheckpointError> for Failure {
    fn from(e: IncrementalCheckpointError) -> Self {
        Self::State(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Self::Output(e)
    }
}

const DAMAGE: u8 = 1;
const USAGE: u8 = 2;
const IO: u8 = 3;
const OTHER: u8 = 4;

/// The exit code of a library error.
fn exit_code(e: &IncrementalCheckpointError) -> u8 {
    use IncrementalCheckpointError as E;
    if e.is_corruption() {
        return DAMAGE;
    }
    // An I/O error underneath wins over what it made fail.
    if matches!(e, E::NotFound { .. }) || e.io_error_kind().is_some() {
        return IO;
    }
    match e {
        E::Recovery { .. }
        | E::Wal(
            WalError::MissingSegment { .. } | WalError::EpochStartMissing { .. } | WalError::EpochGap { .. },
        ) => DAMAGE,
        _ => OTHER,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = run(&cli);
    let code = match result {
        Ok(()) => 0,
        Err(Failure::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(Failure::Output(e)) => {
            eprintln!("laminar-inspect: writing the output: {e}");
            IO
        }
        Err(Failure::Damage) => DAMAGE,
        Err(Failure::Other) => OTHER,
        Err(Failure::Usage(msg)) => {
            eprintln!("laminar-inspect: {msg}");
            USAGE
        }
        Err(Failure::State(e)) => {
            eprintln!("laminar-inspect: {e}");
            exit_code(&e)
        }
    };
    let _ = std::io::stdout().flush();
    ExitCode::from(code)
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::Output)?;
    let o = &cli.options;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let result = match &cli.command {
        Command::List(t) => runtime.block_on(commands::list(&inspector(t, o)?, o, &mut out)),
        Command::Validate(t) => runtime.block_on(commands::validate(&inspector(t, o)?, o, &mut out)),
        Command::Recover(r) => runtime.block_on(commands::dry_run(&inspector(&r.target, o)?, o, &mut out)),
        Command::Stats(t) => runtime.block_on(commands::stats(&inspector(t, o)?, o, &mut out)),
        Command::Dump(d) => {
            let prefix = match &d.key {
                None => Vec::new(),
                Some(k) if o.hex => text::parse_hex(k).map_err(Failure::Usage)?,
                Some(k) => text::unescape(k).map_err(Failure::Usage)?,
            };
            let what = match (d.checkpoint, d.wal) {
                (Some(id), _) => commands::DumpWhat::Checkpoint(id),
                (None, Some((from, to))) => commands::DumpWhat::Wal(from..=to),
                (None, None) => commands::DumpWhat::Recovered,
            };
            let inspector = inspector(&d.target, o)?;
            // Written from the blocking pool: owns its handle to stdout.
            drop(out);
            return runtime.block_on(commands::dump(&inspector, o, what, prefix));
        }
    };
    out.flush()?;
    result
}

/// The inspector for `target`: a state directory (`file://` or a plain
/// path), or a checkpoint-store URL with `--wal-dir`.
fn inspector(target: &Target, o: &Options) -> Result<Inspector, Failure> {
    let state = &target.state;
    let config = match state.split_once("://") {
        None => local(PathBuf::from(state), o),
        Some(("file", path)) => local(PathBuf::from(path), o),
        Some(("memory", _)) => {
            return Err(Failure::Usage(format!(
                "`{state}`: a memory:// store lives and dies with the process that wrote it; \
                 there is nothing in it to inspect"
            )));
        }
        Some(_) => store_config(state, o)?,
    };
    let mut inspector = Inspector::from_config(config);
    let show = o.progress || (!o.quiet && std::io::stderr().is_terminal());
    if show {
        inspector = inspector.with_progress(|p| eprintln!("laminar-inspect: {p}"));
    }
    Ok(inspector)
}

/// A local state directory: checkpoints in `dir`, the WAL in `dir/wal`
/// unless `--wal-dir` says otherwise.
fn local(dir: PathBuf, o: &Options) -> RecoveryConfig {
    let wal = o.wal_dir.clone().unwrap_or_else(|| dir.join("wal"));
    RecoveryConfig::new(dir, wal)
}

/// Checkpoints in the object store `url` names, the WAL in `--wal-dir`.
/// Read-only recovery needs a WAL directory that exists, and the store
/// holds none, so there is no default: an empty directory shows what a
/// fresh node would restore from the store alone.
#[cfg(feature = "object-store")]
fn store_config(url: &str, o: &Options) -> Result<RecoveryConfig, Failure> {
    let Some(wal) = o.wal_dir.clone() else {
        return Err(Failure::Usage(format!(
            "`{url}`: a checkpoint-store URL needs `--wal-dir DIR` (the node's WAL directory; \
             an empty directory shows what a fresh node would restore from the store alone)"
        )));
    };
    // A URL that does not parse or names no store this build has is a bad
    // argument.
    let store = laminar_storage::ObjectStoreCheckpointStore::from_url(url)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    // The URL names the store in messages: `s3://bucket/prefix/<file>`.
    Ok(RecoveryConfig::new(url, wal).with_checkpoint_store(std::sync::Arc::new(store)))
}

#[cfg(not(feature = "object-store"))]
fn store_config(url: &str, _: &Options) -> Result<RecoveryConfig, Failure> {
    let scheme = url.split_once("://").map_or(url, |(s, _)| s);
    Err(Failure::Usage(format!(
        "`{url}`: this build reads no {scheme}:// checkpoint stores; build \
         laminar-inspect with `--features object-store`, or give a local state directory"
    )))
}
