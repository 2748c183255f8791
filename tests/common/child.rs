//! A child process for the tests that kill one: its stdout read line by
//! line as it comes, its stderr gathered for the failure message.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::Instant;

/// A running child with its output piped. Dropped, it is killed, so a
/// failing test leaves no process behind.
pub struct Child {
    process: std::process::Child,
    lines: mpsc::Receiver<String>,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
}

/// What a killed child left: how it ended and the output not yet read.
pub struct Ended {
    pub status: ExitStatus,
    /// Its stdout lines that [`Child::next_line`] did not hand out.
    pub lines: Vec<String>,
    /// All of its stderr.
    pub stderr: String,
}

impl Child {
    /// This test binary run again for its one test `name` (which acts as
    /// the child when the environment the caller adds says so), its
    /// output not captured by the harness.
    pub fn test(name: &str) -> Command {
        let mut command = Command::new(std::env::current_exe().expect("the test binary"));
        command.args([name, "--exact", "--nocapture", "--test-threads=1"]);
        command
    }

    /// Starts `command` with stdout and stderr piped: a thread hands its
    /// stdout on line by line, another gathers its stderr.
    pub fn spawn(command: &mut Command) -> Self {
        let mut process = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let stdout = process.stdout.take().expect("piped stdout");
        let mut stderr = process.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        let stdout = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Self {
            process,
            lines,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// The next line of its stdout, waiting until `deadline` at most:
    /// `Timeout` then, `Disconnected` once its stdout is closed (it ended).
    pub fn next_line(&self, deadline: Instant) -> Result<String, RecvTimeoutError> {
        self.lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    }

    /// SIGKILL (what `std::process::Child::kill` sends on Unix), then waits
    /// for it and for its output. A child that had ended by itself is not
    /// an error here: `status` says so.
    pub fn kill(mut self) -> Ended {
        let _ = self.process.kill();
        let status = self.process.wait().expect("wait for the child");
        if let Some(stdout) = self.stdout.take() {
            stdout.join().expect("the stdout reader");
        }
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().expect("the stderr reader"))
            .unwrap_or_default();
        Ended {
            status,
            lines: self.lines.try_iter().collect(),
            stderr,
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
