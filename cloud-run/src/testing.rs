//! Helpers for the services' tests, written once: a time bound, loopback
//! server settings, a client that ignores proxies, a fake environment, a
//! server run in-process until dropped, and the handling of a real binary
//! (start on port 0, read its address from the `listening` log line,
//! SIGTERM, the one line a refused start writes). Behind the `testing`
//! feature; dev-dependencies turn it on.

use std::{collections::HashMap, future::Future, net::SocketAddr, process::Stdio, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpListener,
    process::{Child, Command},
    sync::oneshot,
    task::JoinHandle,
};

use crate::ServerConfig;

/// Every test finishes within this, or fails instead of hanging.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Runs `test` under [`LIMIT`].
pub async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("test took too long")
}

/// Server settings for tests: 127.0.0.1, any port, short grace and timeouts.
pub fn loopback() -> ServerConfig {
    ServerConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        shutdown_grace: Duration::from_secs(2),
        header_read_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    }
}

/// An HTTP client that never goes through a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// An environment holding just these variables, for `from_env` functions.
pub fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

/// The binary at `path` with an empty environment but for JSON logs,
/// 127.0.0.1 and port 0; output piped, killed if the test drops it.
pub fn command(path: &str) -> Command {
    let mut cmd = Command::new(path);
    cmd.env_clear()
        .env("BIND_ADDR", "127.0.0.1")
        .env("PORT", "0")
        .env("LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Reads the child's JSON log until the `listening` line; returns its
/// address and a task collecting every line (those before included) until
/// the child exits, so that it never blocks on a full pipe.
pub async fn listening(child: &mut Child) -> (SocketAddr, JoinHandle<Vec<String>>) {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    while let Some(line) = lines.next_line().await.expect("read") {
        let entry: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        assert!(entry["severity"].is_string(), "{line}");
        let listening = entry["message"] == "listening";
        seen.push(line);
        if listening {
            let addr = entry["addr"]
                .as_str()
                .expect("addr")
                .parse()
                .expect("socket addr");
            let rest = tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    seen.push(line);
                }
                seen
            });
            return (addr, rest);
        }
    }
    panic!("exited before listening: {seen:?}");
}

/// Like [`listening`], but hands over every later log line as it comes,
/// for tests that act on what the child logs (lines that are not JSON are
/// skipped).
pub async fn listening_live(
    child: &mut Child,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) {
                if tx.send(entry).is_err() {
                    break;
                }
            }
        }
    });
    let listening = next_message(&mut rx, "listening").await;
    let addr = listening["addr"]
        .as_str()
        .expect("addr")
        .parse()
        .expect("socket addr");
    (addr, rx)
}

/// The next log line whose message starts with `message`; panics if the
/// child exits first.
pub async fn next_message(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    message: &str,
) -> serde_json::Value {
    loop {
        let entry = lines.recv().await.expect("exited before logging that");
        if entry["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(message))
        {
            return entry;
        }
    }
}

/// Sends `signal` (a name `kill` knows: `TERM`, `INT`) to the child.
pub fn send_signal(child: &Child, signal: &str) {
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Sends SIGTERM to the child.
pub fn sigterm(child: &Child) {
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Sends SIGTERM and expects exit code 0 within 3 s.
pub async fn exits_zero_on_sigterm(child: &mut Child) {
    sigterm(child);
    let status = tokio::time::timeout(Duration::from_secs(3), child.wait())
        .await
        .expect("exit within 3 s of SIGTERM")
        .expect("status");
    assert!(status.success(), "{status}");
}

/// Runs `cmd` to its end; it must fail, writing one JSON log line at ERROR.
/// Returns the exit code and that line's message.
pub async fn refused(cmd: &mut Command) -> (Option<i32>, String) {
    let output = cmd.output().await.expect("run");
    assert!(!output.status.success(), "{:?}", output.status);
    let out = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let entry: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
    assert_eq!(entry["severity"], "ERROR", "{out}");
    let message = entry["message"].as_str().expect("message").to_owned();
    (output.status.code(), message)
}

/// A gate a fake waits at until the test opens it.
#[derive(Debug, Default)]
pub struct Gate {
    open: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Gate {
    /// Shut: whoever passes waits.
    pub fn closed() -> Self {
        Self::default()
    }

    /// Always open.
    pub fn opened() -> Self {
        let gate = Self::default();
        gate.open();
        gate
    }

    /// Lets everyone through, now and later.
    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Returns once the gate is open.
    pub async fn pass(&self) {
        loop {
            let notified = self.notify.notified();
            if self.open.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// A server running in a background task, told to stop on drop or by
/// [`Spawned::stop`]. Tests and tools use it to run a service in-process.
#[derive(Debug)]
pub struct Spawned {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Spawned {
    /// Spawns `run(stop)`, a server already bound to `addr`, where `stop`
    /// resolves when this handle is stopped or dropped.
    pub fn new<R, Fut>(addr: SocketAddr, run: R) -> Self
    where
        R: FnOnce(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(run(Stop(rx)));
        Self {
            addr,
            stop: Some(tx),
            task,
        }
    }

    /// Binds `addr` (port 0 for any) and serves `handler` there.
    pub async fn serve<H, F, B>(config: ServerConfig, handler: H) -> std::io::Result<Self>
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: crate::ResponseBody,
    {
        let listener = TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        Ok(Self::new(addr, move |stop| async move {
            crate::serve(listener, &config, handler, stop).await;
        }))
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Signals shutdown and waits until the server has drained and returned.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The shutdown future [`Spawned`] hands to a server.
#[derive(Debug)]
pub struct Stop(oneshot::Receiver<()>);

impl Future for Stop {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}
