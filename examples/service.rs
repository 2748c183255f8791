//! A small HTTP service keeping named counters in durable state: a write is
//! acknowledged only once its epoch is durable, so an acknowledged
//! increment survives `kill -9` and power loss.
//!
//! ```sh
//! cargo run --release --example service -- --dir ./counters --addr 127.0.0.1:3000
//! curl -X POST localhost:3000/counters/apples/increment -d 5   # {"name":"apples","value":5,"epoch":2}
//! curl localhost:3000/counters/apples                          # {"name":"apples","value":5}
//! curl -X POST localhost:3000/checkpoint                       # {"id":1,"epoch":2,...}
//! curl localhost:3000/stats
//! ```
//!
//! Ctrl-C shuts down gracefully: the server stops accepting, answers the
//! requests in flight, and the manager flushes and unlocks the directory.
//!
//! # How it is put together
//!
//! The [`StateWriter`] is not `Sync`: one task owns it and handles every
//! request that reads or updates the state, in groups. For each group it
//! applies the increments, commits one epoch and hands the epoch back; each
//! HTTP handler then awaits [`wait_durable`](IncrementalCheckpointManager::wait_durable)
//! for its epoch before answering, so one `fdatasync` acknowledges every
//! request of the group (group commit) and nothing is acknowledged early.
//! Backpressure is awaited with [`StateWriter::ready`]. Checkpoints are
//! automatic (every 30 s or 64 MiB of log), and `POST /checkpoint` takes
//! one on demand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use laminar_storage::{
    CheckpointConfig, IncrementalCheckpointError, IncrementalCheckpointManager, StateWriter,
};
use tokio::sync::{mpsc, oneshot};

/// Requests the writer task takes at most in one group (one epoch).
const MAX_GROUP: usize = 1_024;

/// What HTTP handlers ask of the writer task.
enum Request {
    /// Add `by` to the counter; the reply is its new value and the epoch
    /// that holds it (not durable yet).
    Increment {
        name: String,
        by: u64,
        reply: oneshot::Sender<Result<(u64, u64), Arc<IncrementalCheckpointError>>>,
    },
    /// The counter's current value (including increments not yet durable).
    Get {
        name: String,
        reply: oneshot::Sender<u64>,
    },
}

#[derive(Clone)]
struct App {
    requests: mpsc::Sender<Request>,
    manager: IncrementalCheckpointManager,
}

type Response = (StatusCode, String);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (dir, addr) = args()?;
    let config = CheckpointConfig::new(&dir)
        .with_automatic_checkpoints(true)
        .with_interval(Duration::from_secs(30))
        .with_wal_size_threshold(64 << 20);
    let (manager, writer) = IncrementalCheckpointManager::open(config).await?;
    println!(
        "recovered epoch={} counters={} dir={}",
        manager.recovery().epoch,
        writer.len(),
        dir.display()
    );

    let (requests, queue) = mpsc::channel(4 * MAX_GROUP);
    let writer_task = tokio::spawn(run_writer(writer, queue));
    let app = Router::new()
        .route("/counters/{name}", get(read_counter))
        .route("/counters/{name}/increment", post(increment))
        .route("/checkpoint", post(checkpoint))
        .route("/stats", get(stats))
        .with_state(App {
            requests,
            manager: manager.clone(),
        });

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            println!("shutting down");
        })
        .await?;

    // The router (and with it every request sender) is gone: the writer
    // task ends after the last group; then flush, stop and unlock.
    writer_task.await?;
    manager.shutdown().await?;
    println!("shut down at durable epoch {}", manager.durable_epoch());
    Ok(())
}

/// Owns the writer: takes requests in groups, one epoch per group.
async fn run_writer(mut writer: StateWriter, mut queue: mpsc::Receiver<Request>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
        let mut updated = Vec::new();
        for request in group.drain(..) {
            match request {
                Request::Get { name, reply } => {
                    let _ = reply.send(counter(&writer, &name));
                }
                Request::Increment { name, by, reply } => {
                    let value = counter(&writer, &name).saturating_add(by);
                    match put(&mut writer, &name, value).await {
                        Ok(()) => updated.push((reply, value)),
                        Err(e) => {
                            let _ = reply.send(Err(Arc::new(e)));
                        }
                    }
                }
            }
        }
        if updated.is_empty() {
            continue;
        }
        let committed = async {
            writer.ready(1).await?;
            writer.commit_epoch()
        }
        .await
        .map_err(Arc::new);
        for (reply, value) in updated {
            let _ = reply.send(committed.clone().map(|epoch| (value, epoch)));
        }
    }
}

async fn put(writer: &mut StateWriter, name: &str, value: u64) -> Result<(), IncrementalCheckpointError> {
    writer.ready(1).await?;
    writer.put(&key(name), &value.to_le_bytes())
}

fn key(name: &str) -> Vec<u8> {
    format!("counter:{name}").into_bytes()
}

fn counter(writer: &StateWriter, name: &str) -> u64 {
    writer
        .get(&key(name))
        .and_then(|v| v.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// `POST /counters/{name}/increment`, body: the amount (default 1).
/// Answers once the increment is durable.
async fn increment(State(app): State<App>, Path(name): Path<String>, body: String) -> Response {
    if name.is_empty() || name.len() > 200 {
        return (
            StatusCode::BAD_REQUEST,
            "a counter name has 1 to 200 bytes\n".into(),
        );
    }
    let by = match body.trim() {
        "" => 1,
        amount => match amount.parse::<u64>() {
            Ok(by) => by,
            Err(_) => return (StatusCode::BAD_REQUEST, format!("not an amount: {amount:?}\n")),
        },
    };
    let (reply, answer) = oneshot::channel();
    let request = Request::Increment {
        name: name.clone(),
        by,
        reply,
    };
    if app.requests.send(request).await.is_err() {
        return unavailable();
    }
    let (value, epoch) = match answer.await {
        Ok(Ok(applied)) => applied,
        Ok(Err(e)) => return failed(&e),
        Err(_) => return unavailable(),
    };
    // The acknowledgement: only once the epoch holding it is durable.
    if let Err(e) = app.manager.wait_durable(epoch).await {
        return failed(&e);
    }
    (
        StatusCode::OK,
        format!(
            "{{\"name\":{},\"value\":{value},\"epoch\":{epoch}}}\n",
            json_string(&name)
        ),
    )
}

/// `GET /counters/{name}`: the current value, including increments whose
/// acknowledgement is still on its way.
async fn read_counter(State(app): State<App>, Path(name): Path<String>) -> Response {
    let (reply, answer) = oneshot::channel();
    let request = Request::Get {
        name: name.clone(),
        reply,
    };
    if app.requests.send(request).await.is_err() {
        return unavailable();
    }
    match answer.await {
        Ok(value) => (
            StatusCode::OK,
            format!("{{\"name\":{},\"value\":{value}}}\n", json_string(&name)),
        ),
        Err(_) => unavailable(),
    }
}

/// `POST /checkpoint`: a checkpoint of everything committed, once published.
async fn checkpoint(State(app): State<App>) -> Response {
    match app.manager.checkpoint().await {
        Ok(m) => (
            StatusCode::OK,
            format!(
                "{{\"id\":{},\"epoch\":{},\"incremental\":{},\"keys\":{},\"bytes_written\":{}}}\n",
                m.id, m.epoch, m.is_incremental, m.key_count, m.delta_bytes
            ),
        ),
        Err(e) => failed(&e),
    }
}

/// `GET /stats`: the manager's counters.
async fn stats(State(app): State<App>) -> Response {
    let s = app.manager.stats();
    (
        StatusCode::OK,
        format!(
            "{{\"durable_epoch\":{},\"committed_epoch\":{},\"fsyncs\":{},\"fsync_max_ms\":{:.3},\
             \"wal_bytes_written\":{},\"checkpoints\":{},\"last_checkpoint_epoch\":{}}}\n",
            s.durable_epoch,
            app.manager.committed_epoch(),
            s.fsyncs,
            s.fsync_max.as_secs_f64() * 1e3,
            s.wal_bytes_written,
            s.checkpoints,
            s.last_checkpoint_epoch
        ),
    )
}

fn failed(e: &IncrementalCheckpointError) -> Response {
    let status = if e.is_transient() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (status, format!("{e}\n"))
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `--dir PATH` (default: `<temp dir>/laminar-service`) and `--addr
/// HOST:PORT` (default: 127.0.0.1:3000; port 0 picks a free one).
fn args() -> Result<(PathBuf, SocketAddr), String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut dir = std::env::temp_dir().join("laminar-service");
    let mut addr: SocketAddr = ([127, 0, 0, 1], 3000).into();
    let mut i = 0;
    while i < argv.len() {
        match (argv[i].as_str(), argv.get(i + 1)) {
            ("--dir", Some(value)) => dir = value.into(),
            ("--addr", Some(value)) => addr = value.parse().map_err(|e| format!("--addr {value}: {e}"))?,
            (other, _) => {
                return Err(format!(
                    "usage: service [--dir PATH] [--addr HOST:PORT]; got {other:?}"
                ));
            }
        }
        i += 2;
    }
    Ok((dir, addr))
}
