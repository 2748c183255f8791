//! `examples/service.rs` driven over loopback by a real HTTP/1.1 client:
//! concurrent increments, SIGKILL, restart, and every acknowledged write is
//! there; then `POST /checkpoint`, `GET /stats` and a graceful shutdown on
//! SIGINT that loses nothing.
#![cfg(unix)]

#[path = "common/example.rs"]
mod example;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use example::example_binary;

/// Client threads, each incrementing its own counter by 1, one request at
/// a time: its acknowledged values are 1, 2, 3, ...
const CLIENTS: usize = 4;
/// Acknowledged increments (all clients) before the kill.
const ACKED_BEFORE_KILL: u64 = 400;

/// A running service; killed if the test panics.
struct Service {
    child: Child,
    addr: String,
    /// The rest of its stdout, line by line.
    lines: mpsc::Receiver<String>,
}

impl Service {
    fn start(binary: &Path, dir: &Path) -> Self {
        let mut child = Command::new(binary)
            .arg("--dir")
            .arg(dir)
            .args(["--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the service");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(left).expect("the service prints its address");
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.to_owned();
            }
        };
        Service { child, addr, lines }
    }

    fn wait_for_line(&self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no line starting with {prefix:?}"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on its own connection: (status, body), or `None`
/// if the connection failed (the server died mid-request).
fn http(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some((status, body.to_owned()))
}

/// The number after `"field":` in a one-line JSON object.
fn field(json: &str, name: &str) -> u64 {
    let start = json
        .find(&format!("\"{name}\":"))
        .unwrap_or_else(|| panic!("{name} in {json}"))
        + name.len()
        + 3;
    json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{name} in {json}"))
}

fn counter(addr: &str, client: usize) -> u64 {
    let (status, body) = http(addr, "GET", &format!("/counters/c{client}"), "").expect("GET answered");
    assert_eq!(status, 200, "{body}");
    field(&body, "value")
}

#[test]
fn acknowledged_writes_survive_sigkill_and_graceful_shutdown_loses_nothing() {
    let binary = example_binary("service");
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&binary, dir.path());

    // Clients increment until told to stop; each remembers its last
    // acknowledged value.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (addr, stop, acked) = (service.addr.clone(), Arc::clone(&stop), Arc::clone(&acked));
            thread::spawn(move || {
                let mut last = 0;
                while !stop.load(Ordering::Relaxed) {
                    match http(&addr, "POST", &format!("/counters/c{client}/increment"), "1") {
                        Some((200, body)) => {
                            let value = field(&body, "value");
                            assert_eq!(value, last + 1, "one client, one request at a time: {body}");
                            last = value;
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        // Killed: in flight, not acknowledged.
                        _ => break,
                    }
                }
                last
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.load(Ordering::Relaxed) < ACKED_BEFORE_KILL {
        assert!(Instant::now() < deadline, "too slow: {acked:?} acknowledged");
        thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL with requests in flight.
    drop(service);
    stop.store(true, Ordering::Relaxed);
    let last_acked: Vec<u64> = clients.into_iter().map(|c| c.join().unwrap()).collect();

    let service = Service::start(&binary, dir.path());
    for (client, &last) in last_acked.iter().enumerate() {
        let value = counter(&service.addr, client);
        // Every acknowledged increment is there; at most the one in flight
        // at the kill may be too.
        assert!(
            value == last || value == last + 1,
            "c{client}: {value}, acknowledged {last}"
        );
    }

    // More increments, a checkpoint, stats, then a graceful shutdown.
    let (status, body) = http(&service.addr, "POST", "/counters/c0/increment", "10").unwrap();
    assert_eq!(status, 200, "{body}");
    let c0 = field(&body, "value");
    let (status, body) = http(&service.addr, "POST", "/checkpoint", "").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(field(&body, "epoch") >= field(&body, "id"), "{body}");
    let (status, body) = http(&service.addr, "GET", "/stats", "").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(field(&body, "checkpoints") >= 1, "{body}");
    let (status, _) = http(&service.addr, "POST", "/counters/c0/increment", "seven").unwrap();
    assert_eq!(status, 400);

    // SAFETY: sending SIGINT to our own child process.
    assert_eq!(
        unsafe { libc::kill(service.child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    service.wait_for_line("shut down at durable epoch");
    let mut service = service;
    let status = service.child.wait().unwrap();
    assert!(status.success(), "{status}");

    let service = Service::start(&binary, dir.path());
    assert_eq!(counter(&service.addr, 0), c0);
}
