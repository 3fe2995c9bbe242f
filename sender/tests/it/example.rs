//! `examples/call.rs`: its `call` compiled into this test binary and run
//! in-process, and the example binary `cargo test` builds, run as a user
//! runs it.

use std::path::PathBuf;

use http::StatusCode;

use crate::support::{bounded, hour, root, FakeMetadata, FakeReceiver};

#[allow(dead_code)] // its `main` is the example binary's
#[path = "../../examples/call.rs"]
mod call_example;

/// The example binary `cargo test` built: `target/PROFILE/examples/call-HASH`
/// beside this test binary's `target/PROFILE/deps/it-HASH` (cargo names no
/// example to tests, as it does binaries with `CARGO_BIN_EXE_*`, and links
/// the plain `call` only for `cargo build --example`). The newest, should
/// several builds have left one.
fn example_binary() -> Option<PathBuf> {
    let test = std::env::current_exe().expect("the test binary's path");
    let examples = test.parent()?.parent()?.join("examples");
    let is_call = |name: &str| {
        let name = name.strip_suffix(std::env::consts::EXE_SUFFIX)?;
        let hash = name
            .strip_prefix("call-")
            .or((name == "call").then_some(""))?;
        hash.bytes().all(|b| b.is_ascii_hexdigit()).then_some(())
    };
    std::fs::read_dir(examples)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_str().and_then(is_call).is_some())
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .max()
        .map(|(_, path)| path)
}

#[tokio::test]
async fn call_gets_a_token_from_the_library_and_relays_the_answer() {
    bounded(async {
        let metadata = FakeMetadata::new(vec![hour()]);
        let metadata_server = metadata.start().await;
        let receiver = FakeReceiver::hello();
        let receiver_server = receiver.start().await;
        let env = cloud_run::testing::env(&[
            (
                "RECEIVING_SERVICE_URL",
                &format!("{}path", root(receiver_server.addr())),
            ),
            ("GCE_METADATA_HOST", &metadata_server.addr().to_string()),
        ]);
        let (status, answer) = call_example::call(&env).await.expect("call");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer, format!("{}{}", sender::PREFIX, receiver::HELLO));
        let minted = metadata.minted();
        assert_eq!(
            receiver.authorizations(),
            vec![Some(format!("Bearer {}", minted[0]))]
        );
        // The audience is the URL's origin, as the sender's.
        let audience = metadata.calls.lock().expect("lock")[0].audience.clone();
        assert_eq!(audience, Some(format!("http://{}", receiver_server.addr())));
    })
    .await;
}

#[tokio::test]
async fn the_call_example_prints_the_relayed_answer_and_its_status() {
    bounded(async {
        let path = example_binary().expect(
            "no example binary: `cargo test -p sender` builds it (`--test it` alone does not)",
        );
        let metadata = FakeMetadata::new(vec![hour()]);
        let metadata_server = metadata.start().await;
        let receiver = FakeReceiver::hello();
        let receiver_server = receiver.start().await;
        let output = cloud_run::testing::command(path.to_str().expect("utf-8"))
            .env("RECEIVING_SERVICE_URL", root(receiver_server.addr()))
            .env("GCE_METADATA_HOST", metadata_server.addr().to_string())
            .output()
            .await
            .expect("run the example");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{output:?}");
        assert_eq!(stdout, format!("{}{}\n", sender::PREFIX, receiver::HELLO));
        assert_eq!(receiver.request_count(), 1);

        // A refusal is printed too, and the exit status says so.
        let refusing = FakeReceiver::new(crate::support::ReceiverMode::Answer(
            StatusCode::FORBIDDEN,
            bytes::Bytes::from_static(b"<h1>Error: Forbidden</h1>"),
        ));
        let refusing_server = refusing.start().await;
        let output = cloud_run::testing::command(path.to_str().expect("utf-8"))
            .env("RECEIVING_SERVICE_URL", root(refusing_server.addr()))
            .env("GCE_METADATA_HOST", metadata_server.addr().to_string())
            .output()
            .await
            .expect("run the example");
        assert!(!output.status.success());
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("{}<h1>Error: Forbidden</h1>\n", sender::PREFIX)
        );
        assert!(String::from_utf8_lossy(&output.stderr).contains("403"));

        // Without its URL, one line naming the variable.
        let output = cloud_run::testing::command(path.to_str().expect("utf-8"))
            .output()
            .await
            .expect("run the example");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("RECEIVING_SERVICE_URL"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    })
    .await;
}
