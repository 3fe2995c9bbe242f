//! Accept errors: out of descriptors, the loop backs off (to 1 s), logs at
//! most one line a second with a count, and serves again once descriptors
//! free up. The server runs in a child process (this test binary again)
//! under a low `ulimit -n`, where a handler can use up every descriptor.

use std::{
    process::Stdio,
    sync::Mutex,
    time::{Duration, Instant},
};

use cloud_run::{
    response::text,
    testing::{listening_live, next_message},
};
use http::StatusCode;
use tokio::{
    net::{TcpListener, TcpStream},
    process::Command,
};

use crate::support::{bounded, config, get, get_path};

/// Set in the child's environment: run the server instead of returning.
const CHILD: &str = "CLOUD_RUN_SERVE_TEST_CHILD";

/// Descriptors this process holds on purpose, to starve `accept`.
static HOG: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());

/// Not a test of its own, so ignored: the server that the test below runs
/// in a child process. `GET /hog` opens files until none is left; `GET
/// /free` closes them.
#[tokio::test]
#[ignore = "run by out_of_descriptors_accept_backs_off_logs_once_a_second_and_recovers"]
async fn child_server_under_a_low_open_files_limit() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    cloud_run::logging::init(&|name| std::env::var(name).ok()).expect("logging");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let handler = |req: http::Request<hyper::body::Incoming>| async move {
        let Ok(mut hog) = HOG.lock() else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "poisoned");
        };
        match req.uri().path() {
            "/hog" => {
                while let Ok(file) = std::fs::File::open("/dev/null") {
                    hog.push(file);
                }
            }
            "/free" => hog.clear(),
            _ => {}
        }
        text(StatusCode::OK, format!("{}", hog.len()))
    };
    cloud_run::serve(listener, &config(), handler, std::future::pending()).await;
}

#[tokio::test]
async fn out_of_descriptors_accept_backs_off_logs_once_a_second_and_recovers() {
    bounded(async {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -S -n 64 && exec "$0" "$@""#)
            .arg(exe)
            .args([
                "accept::child_server_under_a_low_open_files_limit",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let (addr, mut lines) = listening_live(&mut child).await;

        let mut control = TcpStream::connect(addr).await.expect("connect");
        let hogged = get_path(&mut control, "/hog").await;
        assert!(hogged.starts_with("HTTP/1.1 200"), "{hogged}");
        // These wait in the backlog while every accept fails with EMFILE.
        let mut waiting = Vec::new();
        for _ in 0..3 {
            waiting.push(TcpStream::connect(addr).await.expect("connect"));
        }

        let start = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let entry = next_message(&mut lines, "accept failed").await;
            seen.push((start.elapsed(), entry));
        }
        for pair in seen.windows(2) {
            let gap = pair[1].0 - pair[0].0;
            assert!(
                gap >= Duration::from_millis(800),
                "two lines {gap:?} apart: {seen:?}"
            );
        }
        let failures: Vec<u64> = seen
            .iter()
            .map(|(_, e)| e["failures"].as_u64().expect("failures count"))
            .collect();
        assert!(
            failures[1] > 1,
            "failures in between are counted: {failures:?}"
        );

        let freed = get_path(&mut control, "/free").await;
        assert!(freed.starts_with("HTTP/1.1 200"), "{freed}");
        let freed_at = Instant::now();
        let mut first = waiting.remove(0);
        let answer = tokio::time::timeout(Duration::from_secs(3), get(&mut first))
            .await
            .expect("a waiting connection is served once descriptors are free");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let mut new = TcpStream::connect(addr).await.expect("connect");
        assert!(get(&mut new).await.starts_with("HTTP/1.1 200"));
        assert!(
            freed_at.elapsed() < Duration::from_millis(1500),
            "{:?}",
            freed_at.elapsed()
        );
    })
    .await;
}
