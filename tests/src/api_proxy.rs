//! A Unix-socket relay between the CNI plugin and a real agent that can
//! lose the agent's answer to an endpoint request after the agent has
//! acted on it: what a plugin sees when the agent dies, or the connection
//! breaks, between writing the map entry and answering. Everything else is
//! relayed byte for byte.

use std::{
    io::{Read, Write},
    net::Shutdown,
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result};

use crate::cni::TempDir;

/// How long one relayed connection may stay silent before the relay gives
/// up on it (a bound, not a pacing).
const IDLE: Duration = Duration::from_secs(30);

/// Called once an answer has been lost, with how many have been so far.
pub type OnLost = Box<dyn Fn(usize) + Send + Sync>;

pub struct ApiProxy {
    path: PathBuf,
    lost: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: TempDir,
}

struct Policy {
    agent: PathBuf,
    /// Answers to `POST /v1/endpoints` to lose, the first ones.
    lose: usize,
    lost: Arc<AtomicUsize>,
    on_lost: OnLost,
}

impl ApiProxy {
    /// Listens on a socket of its own and relays to `agent`, losing the
    /// answers to the first `lose` `POST /v1/endpoints` requests (each
    /// only after the agent has begun to answer it).
    pub fn start(agent: &Path, lose: usize, on_lost: OnLost) -> Result<Self> {
        let dir = TempDir::new("proxy")?;
        let path = dir.0.join("proxy.sock");
        let listener = UnixListener::bind(&path).with_context(|| format!("cannot bind {}", path.display()))?;
        let lost = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let policy = Arc::new(Policy { agent: agent.to_path_buf(), lose, lost: lost.clone(), on_lost });
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let policy = policy.clone();
                std::thread::spawn(move || {
                    if let Err(e) = relay(client, &policy) {
                        eprintln!("api proxy: {e:#}");
                    }
                });
            }
        });
        Ok(ApiProxy { path, lost, stop, thread: Some(thread), _dir: dir })
    }

    /// The socket to give the plugin as `agentSocket`.
    pub fn socket(&self) -> &Path {
        &self.path
    }

    /// Answers lost so far.
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn relay(mut client: UnixStream, policy: &Policy) -> Result<()> {
    client.set_read_timeout(Some(IDLE))?;
    let request = read_request(&mut client)?;
    let mut agent = UnixStream::connect(&policy.agent).context("cannot reach the agent")?;
    agent.set_read_timeout(Some(IDLE))?;
    agent.write_all(&request)?;
    if request.starts_with(b"POST /v1/endpoints ") && policy.lost.load(Ordering::SeqCst) < policy.lose {
        // The agent's first bytes mean it has acted on the request; they
        // never reach the client, whose connection closes unanswered.
        let mut first = [0u8; 1];
        agent.read_exact(&mut first).context("the agent did not answer")?;
        let n = policy.lost.fetch_add(1, Ordering::SeqCst) + 1;
        (policy.on_lost)(n);
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    // The answer back as it comes; the client closes once it has it.
    let mut from_agent = agent.try_clone()?;
    let mut to_client = client.try_clone()?;
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_agent, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut client, &mut agent);
    let _ = agent.shutdown(Shutdown::Write);
    let _ = back.join();
    Ok(())
}

/// One HTTP/1.1 request: its head and as much body as Content-Length says.
fn read_request(client: &mut UnixStream) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse())
                .transpose()?
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Ok(buf);
            }
        }
        let n = client.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "the client closed before a whole request");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
