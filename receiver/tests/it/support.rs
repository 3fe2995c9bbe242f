//! Helpers shared by the receiver's tests.

use std::{future::Future, net::SocketAddr, time::Duration};

use cloud_run::{ServerConfig, Spawned};
use tokio::net::TcpListener;

/// Every test finishes within this, or fails instead of hanging.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Runs `test` under [`LIMIT`].
pub async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("test took too long")
}

/// Server settings for tests: loopback, any port, short timeouts.
pub fn server_config() -> ServerConfig {
    ServerConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        shutdown_grace: Duration::from_secs(2),
        header_read_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    }
}

/// The receiver, in-process.
pub async fn start_receiver(config: receiver::Config) -> Spawned {
    let listener = TcpListener::bind(config.server.addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    Spawned::new(addr, move |stop| receiver::run(config, listener, stop))
}

/// A receiver with test settings.
pub async fn receiver() -> Spawned {
    start_receiver(receiver::Config {
        server: server_config(),
    })
    .await
}

/// An HTTP client that never goes through a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// `http://ADDR/PATH`.
pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}
