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

const EXIT_CODES: &str = "\
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
#[command(name = "laminar-inspect", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    options: Options,
}

#[derive(Debug, Args)]
struct Options {
    /// The WAL directory [default: the wal directory in STATE].
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
    /// `<STATE>/wal` unless `--wal-dir` says otherwise).
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

/// The inspector for `target`: a state directory, or (once a checkpoint
/// store for it is built in) a store URL with `--wal-dir`.
fn inspector(target: &Target, o: &Options) -> Result<Inspector, Failure> {
    let state = &target.state;
    let dir = match state.split_once("://") {
        None => PathBuf::from(state),
        Some(("file", path)) => PathBuf::from(path),
        Some((scheme, _)) => {
            return Err(Failure::Usage(format!(
                "`{state}`: {scheme}:// checkpoint stores are not supported by this build; \
                 give a local state directory"
            )));
        }
    };
    let wal = o.wal_dir.clone().unwrap_or_else(|| dir.join("wal"));
    let mut inspector = Inspector::from_config(RecoveryConfig::new(&dir, wal));
    let show = o.progress || (!o.quiet && std::io::stderr().is_terminal());
    if show {
        inspector = inspector.with_progress(|p| eprintln!("laminar-inspect: {p}"));
    }
    Ok(inspector)
}
