//! The accept loop: HTTP/1.1 and h2c (prior knowledge, what Cloud Run's
//! `--use-http2` sends) on one port, a header read timeout, and a graceful
//! drain when the shutdown future resolves.

use std::{convert::Infallible, future::Future, net::SocketAddr, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tracing::{debug, info, warn, Instrument};

use crate::{config::ServerConfig, logging, response::Body};

/// Serves `handler` on `listener` until `shutdown` resolves, then stops
/// accepting and gives open connections `config.shutdown_grace` to finish.
///
/// Every request runs inside a `request` span that carries its trace id, so
/// whatever the handler logs is correlated in Cloud Logging.
pub async fn serve<H, F>(
    listener: TcpListener,
    config: &ServerConfig,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));

    match listener.local_addr() {
        Ok(addr) => info!(%addr, "listening"),
        Err(err) => warn!(%err, "listening on an unknown address"),
    }
    let service = HandlerService(handler);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(err) => {
                        // Usually EMFILE: back off instead of spinning, keep serving.
                        warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service.clone())
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(err) = conn.await {
                        debug!(%peer, err = %err, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }

    drop(listener);
    info!(
        connections = graceful.count(),
        grace = ?config.shutdown_grace,
        "shutting down: no longer accepting, draining in-flight requests"
    );
    match tokio::time::timeout(config.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => info!("all connections closed"),
        Err(_) => warn!("grace period over, dropping the remaining connections"),
    }
}

/// Adapts a handler fn to hyper's `Service`, running each call inside the
/// request span.
#[derive(Clone)]
struct HandlerService<H>(H);

impl<H, F> hyper::service::Service<Request<Incoming>> for HandlerService<H>
where
    H: Fn(Request<Incoming>) -> F,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send + 'static>,
    >;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let span = logging::request_span(&req);
        let response = (self.0)(req);
        Box::pin(async move { Ok(response.await) }.instrument(span))
    }
}

/// Resolves on SIGTERM (what Cloud Run sends before stopping an instance) or
/// SIGINT (Ctrl-C locally). The handlers are installed by this call, not
/// when the future is first polled: a signal that arrives between binding
/// and serving is then not the default (fatal) one. Call it inside the
/// runtime, before binding.
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
    pub async fn serve<H, F>(config: ServerConfig, handler: H) -> std::io::Result<Self>
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        Ok(Self::new(addr, move |stop| async move {
            serve(listener, &config, handler, stop).await;
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
