//! The accept loop: HTTP/1.1 and h2c (prior knowledge, what Cloud Run's
//! `--use-http2` sends) on one port, per-connection header and idle
//! timeouts, a cap on open connections, backoff when accept fails, and a
//! graceful drain when the shutdown future resolves.

use std::{convert::Infallible, future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    time::Instant,
};
use tracing::{debug, info, warn, Instrument};

use crate::{
    config::ServerConfig,
    conn::{self, Admission, ConnState, InFlight, Phase, Registry, Timeouts, Tracked, Watched},
    logging,
};

/// How long a connection told to close (idle timeout, shed, shutdown) may
/// take to do so gracefully (an HTTP/2 GOAWAY answered) before it is
/// dropped, once nothing is in flight on it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves `handler` on `listener` until `shutdown` resolves, then stops
/// accepting and gives open connections `config.shutdown_grace` to finish.
///
/// Every request runs inside a `request` span that carries its trace id, so
/// whatever the handler logs is correlated in Cloud Logging.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    config: &ServerConfig,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: ResponseBody,
{
    serve_with_peer(listener, config, move |req, _| handler(req), shutdown).await;
}

/// A response body the serve loop can send: [`crate::Body`] for the services'
/// small complete answers, or a streamed one (a proxy's).
pub trait ResponseBody:
    hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

impl<B> ResponseBody for B where
    B: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// [`serve`], with the address of each request's peer handed to `handler`
/// beside the request (a proxy names it in `X-Forwarded-For`).
pub async fn serve_with_peer<H, F, B>(
    listener: TcpListener,
    config: &ServerConfig,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: ResponseBody,
{
    let timeouts = Timeouts {
        header: config.header_read_timeout,
        idle: config.idle_timeout,
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's own timer also runs between keep-alive requests, closing
        // idle connections after the header timeout: the watchdog below
        // keeps the two apart instead.
        .header_read_timeout(None)
        .max_buf_size(config.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        // PINGs (hyper sends them on idle connections too) notice a dead
        // peer sooner than the idle timeout would.
        .keep_alive_interval(Some(timeouts.idle.min(Duration::from_secs(60))))
        .keep_alive_timeout(timeouts.idle.min(Duration::from_secs(20)))
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));

    let open_files = conn::open_files_limit();
    let max_connections = conn::connection_cap(config.max_connections, open_files);
    if max_connections < config.max_connections {
        warn!(
            requested = config.max_connections,
            max_connections,
            open_files_limit = open_files,
            "MAX_CONNECTIONS lowered to what the open files limit (ulimit -n) leaves room for"
        );
    }
    match listener.local_addr() {
        Ok(addr) => info!(%addr, max_connections, "listening"),
        Err(err) => warn!(%err, "listening on an unknown address"),
    }
    let registry = Registry::new(max_connections);
    let base = Instant::now();
    let (drain, draining) = watch::channel(());
    let mut accept_errors = AcceptErrors::default();
    let mut refused = Refusals::default();
    tokio::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => {
                accept_errors.recovered();
                conn
            }
            Err(err) => {
                let Some(pause) = accept_errors.failed(&err) else {
                    continue;
                };
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let state = Arc::new(ConnState::new(base));
        let admitted = match registry.admit(&state) {
            Admission::Admitted(admitted) => admitted,
            Admission::Shed(admitted) => {
                debug!(%peer, "at MAX_CONNECTIONS: closing the longest idle connection");
                admitted
            }
            Admission::Full => {
                refused.refused(max_connections);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Watched::new(stream, state.clone()));
        let service = HandlerService {
            handler: handler.clone(),
            conn: state.clone(),
            peer,
        };
        let conn = builder.serve_connection(io, service).into_owned();
        let draining = draining.clone();
        tokio::spawn(async move {
            drive(conn, &state, timeouts, draining, peer).await;
            drop(admitted);
        });
    }

    drop(listener);
    // Connections hold the other receivers; `closed` waits for them alone.
    drop(draining);
    info!(
        connections = registry.len(),
        grace = ?config.shutdown_grace,
        "shutting down: no longer accepting, draining in-flight requests"
    );
    let _ = drain.send(());
    match tokio::time::timeout(config.shutdown_grace, drain.closed()).await {
        Ok(()) => info!("all connections closed"),
        Err(_) => warn!("grace period over, dropping the remaining connections"),
    }
}

type Connection<S> = auto::Connection<'static, TokioIo<Watched<TcpStream>>, S, TokioExecutor>;

/// Runs one connection to its end, closing it when a phase outlives its
/// timeout, when the registry sheds it, or (gracefully) on shutdown.
///
/// The watchdog wakes at the current phase's deadline, and at least every
/// `min(header, idle)`: a phase that begins later cannot end sooner than
/// that, so no deadline is missed, and requests pay no timer work at all.
async fn drive<H, F, B>(
    conn: Connection<HandlerService<H>>,
    state: &ConnState,
    timeouts: Timeouts,
    mut draining: watch::Receiver<()>,
    peer: SocketAddr,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: ResponseBody,
{
    let recheck = timeouts.header.min(timeouts.idle);
    tokio::pin!(conn);
    let wake = tokio::time::sleep(recheck);
    tokio::pin!(wake);
    // When the connection was told to close, if it was.
    let mut closing: Option<Instant> = None;
    let mut drain_seen = false;
    loop {
        let close = tokio::select! {
            ended = conn.as_mut() => {
                if let Err(err) = ended {
                    debug!(%peer, %err, "connection ended with an error");
                }
                return;
            }
            () = &mut wake => false,
            () = state.shed.notified() => true,
            _ = draining.changed() => {
                // The second change is the serve loop returning (its sender
                // dropped): the grace period is over.
                if drain_seen {
                    debug!(%peer, "grace period over: dropping the connection");
                    return;
                }
                drain_seen = true;
                true
            }
        };
        let now = Instant::now();
        let (phase, deadline) = state.deadline(timeouts);
        let expired = deadline.is_some_and(|d| d <= now);
        if expired && matches!(phase, Phase::Handshake | Phase::Head) {
            debug!(%peer, "no complete request head within HEADER_TIMEOUT: closing");
            return;
        }
        if (close || expired) && closing.is_none() {
            if expired {
                debug!(%peer, "idle for IDLE_TIMEOUT: closing");
            }
            conn.as_mut().graceful_shutdown();
            closing = Some(now);
        }
        // A response the peer takes none of (an HTTP/2 peer granting no
        // window, an HTTP/1 peer not reading) must not hold the connection.
        let stalled = state.stalled_since().map(|since| since + timeouts.header);
        if stalled.is_some_and(|d| d <= now) {
            debug!(%peer, "a response not taken by the peer within HEADER_TIMEOUT: closing");
            return;
        }
        // A deadline already passed has been acted on above; waking for it
        // again would spin.
        let mut next = [deadline, stalled]
            .into_iter()
            .flatten()
            .filter(|d| *d > now)
            .fold(now + recheck, Instant::min);
        if let Some(since) = closing {
            // A peer that answers neither GOAWAY nor PING must not hold the
            // connection; one with a request in flight may finish it.
            if matches!(phase, Phase::Idle | Phase::Handshake) {
                if now >= since + CLOSE_GRACE {
                    debug!(%peer, "closed connection not released by the peer: dropping");
                    return;
                }
                next = next.min(since + CLOSE_GRACE);
            }
        }
        wake.as_mut()
            .reset(next.max(now + Duration::from_millis(1)));
    }
}

/// Backoff and a rate-limited log for accept errors. Under EMFILE/ENFILE
/// accept fails until descriptors free up; retrying at once would spin and
/// log thousands of lines a second.
#[derive(Debug, Default)]
struct AcceptErrors {
    pause: Duration,
    /// Failures since the last log line.
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl AcceptErrors {
    const FIRST_PAUSE: Duration = Duration::from_millis(5);
    const MAX_PAUSE: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(1);

    /// Records a failure; returns how long to pause before accepting again
    /// (`None` for an error of that one connection, e.g. reset by its peer).
    fn failed(&mut self, err: &io::Error) -> Option<Duration> {
        use io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
        if matches!(
            err.kind(),
            ConnectionAborted | ConnectionReset | Interrupted
        ) {
            debug!(%err, "accept: connection gone before it was accepted");
            return None;
        }
        self.pause = (self.pause * 2).clamp(Self::FIRST_PAUSE, Self::MAX_PAUSE);
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= Self::LOG_EVERY)
        {
            warn!(
                %err,
                failures = self.unlogged,
                pause = ?self.pause,
                "accept failed: pausing, connections wait in the backlog"
            );
            self.unlogged = 0;
            self.last_logged = Some(now);
        }
        Some(self.pause)
    }

    /// An accept succeeded: the next failure starts the backoff afresh.
    fn recovered(&mut self) {
        if self.pause.is_zero() {
            return;
        }
        info!(
            failures = self.unlogged,
            "accepting again after accept failures"
        );
        self.pause = Duration::ZERO;
        self.unlogged = 0;
    }
}

/// A rate-limited log of connections refused at `MAX_CONNECTIONS`.
#[derive(Debug, Default)]
struct Refusals {
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl Refusals {
    fn refused(&mut self, max_connections: usize) {
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            warn!(
                refused = self.unlogged,
                max_connections, "at MAX_CONNECTIONS with no idle connection: refusing new ones"
            );
            self.unlogged = 0;
            self.last_logged = Some(now);
        }
    }
}

/// Adapts a handler fn to hyper's `Service`, running each call inside the
/// request span and counting it in flight on its connection until hyper has
/// taken the whole response.
#[derive(Clone)]
struct HandlerService<H> {
    handler: H,
    conn: Arc<ConnState>,
    peer: SocketAddr,
}

impl<H, F, B> hyper::service::Service<Request<Incoming>> for HandlerService<H>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F,
    F: Future<Output = Response<B>> + Send + 'static,
    B: ResponseBody,
{
    type Response = Response<Tracked<B>>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Response<Tracked<B>>, Infallible>> + Send + 'static>,
    >;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(&self.conn);
        let span = logging::request_span(&req);
        let response = (self.handler)(req, self.peer);
        Box::pin(
            async move { Ok(response.await.map(|body| Tracked::new(body, in_flight))) }
                .instrument(span),
        )
    }
}

/// Resolves on SIGTERM (what Cloud Run sends before stopping an instance) or
/// SIGINT (Ctrl-C locally). A second signal during the drain that follows
/// exits the process at once, with status 128 + the signal (130 for SIGINT,
/// 143 for SIGTERM), as users expect of Ctrl-C twice. The handlers are
/// installed by this call, not when the future is first polled: a signal
/// that arrives between binding and serving is then not the default
/// (fatal) one. Call it inside the runtime, before binding.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                info!(signal = name, "shutdown requested");
                tokio::spawn(async move {
                    let (name, status) = tokio::select! {
                        _ = term.recv() => ("SIGTERM", 143),
                        _ = int.recv() => ("SIGINT", 130),
                    };
                    warn!(signal = name, "second signal during the drain: exiting now");
                    std::process::exit(status);
                });
            }
            (Err(err), _) | (_, Err(err)) => {
                // Without signal handlers the process can only be killed;
                // keep serving rather than exit at once.
                warn!(%err, "cannot listen for SIGTERM or SIGINT");
                std::future::pending::<()>().await;
            }
        }
    }
}
