//! The real `metadata-emulator` binary: flags, start-up, bad input, SIGTERM.

use std::{net::SocketAddr, process::Stdio};

use cloud_run::testing::{exits_zero_on_sigterm, refused};
use tokio::process::{Child, Command};

use crate::support::{bounded, client, id_token, key_path, key_set, url, verify, KEY_2};

fn emulator() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metadata-emulator"));
    cmd.env_clear()
        .env("LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Reads the JSON log until the `listening` line; returns its address.
async fn listening_addr(child: &mut Child) -> SocketAddr {
    cloud_run::testing::listening(child).await.0
}

#[tokio::test]
async fn serves_tokens_then_exits_zero_on_sigterm() {
    bounded(async {
        let mut child = emulator()
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .spawn()
            .expect("spawn");
        let addr = listening_addr(&mut child).await;
        assert!(addr.ip().is_loopback());
        let token = id_token(addr, "http://127.0.0.1:8081", "full").await;
        verify(addr, &token, "http://127.0.0.1:8081")
            .await
            .expect("valid against its own JWKS");
        exits_zero_on_sigterm(&mut child).await;
    })
    .await;
}

#[tokio::test]
async fn port_from_the_environment_and_loopback_by_default() {
    bounded(async {
        let mut child = emulator().env("PORT", "0").spawn().expect("spawn");
        let addr = listening_addr(&mut child).await;
        assert_eq!(addr.ip().to_string(), "127.0.0.1");
        let response = client().get(url(addr, "/")).send().await.expect("response");
        assert_eq!(response.status(), 200);
    })
    .await;
}

#[tokio::test]
async fn key_files_are_published_first_one_signing() {
    bounded(async {
        let mut child = emulator()
            .args(["--port=0", "--key-file", &key_path("test-key-2.pkcs8.pem")])
            .arg(format!("--key-file={}", key_path("test-key-1.pkcs1.pem")))
            .spawn()
            .expect("spawn");
        let addr = listening_addr(&mut child).await;
        let jwks: serde_json::Value = client()
            .get(url(addr, "/oauth2/v3/certs"))
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("json");
        assert_eq!(jwks["keys"].as_array().expect("keys").len(), 2);
        let token = id_token(addr, "aud", "full").await;
        let kid = jsonwebtoken::decode_header(&token).expect("header").kid;
        assert_eq!(kid.as_deref(), Some(key_set(&[KEY_2]).kid()));
    })
    .await;
}

#[tokio::test]
async fn help_lists_every_flag() {
    bounded(async {
        let output = emulator().arg("--help").output().await.expect("run");
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        for flag in [
            "--port",
            "--bind",
            "--email",
            "--project-id",
            "--project-number",
            "--region",
            "default-compute",
            "--key-file",
            "--token-lifetime",
            "--help",
            "/oauth2/v3/certs",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
    })
    .await;
}

#[tokio::test]
async fn bad_flags_exit_2_naming_them() {
    bounded(async {
        for (args, expected) in [
            (&["--port", "eighty"][..], "--port: "),
            (&["--email"][..], "--email needs a value"),
            (&["--verbose"][..], "unknown argument \"--verbose\""),
            (&["--region", "Mars"][..], "--region: "),
            (&["--project-number", "0"][..], "--project-number: "),
            (&["--region"][..], "--region needs a value"),
        ] {
            let (code, message) = refused(emulator().args(args)).await;
            assert_eq!(code, Some(2), "{args:?}");
            assert!(message.starts_with(expected), "{message}");
        }
        let (code, message) = refused(emulator().env("PORT", "x")).await;
        assert_eq!(code, Some(2));
        assert!(message.starts_with("PORT: "), "{message}");
    })
    .await;
}

#[tokio::test]
async fn unusable_key_files_exit_1_naming_them() {
    bounded(async {
        let missing = key_path("no-such-key.pem");
        let not_a_key = key_path("README.md");
        for (path, expected) in [
            (&missing, "cannot read"),
            (&not_a_key, "no PEM private key"),
        ] {
            let (code, message) =
                refused(emulator().args(["--port", "0", "--key-file", path])).await;
            assert_eq!(code, Some(1), "{path}");
            assert!(message.starts_with(path.as_str()), "{message}");
            assert!(message.contains(expected), "{message}");
        }
    })
    .await;
}

/// `GET` of `path` with `Metadata-Flavor: Google`: the body.
async fn metadata_text(addr: SocketAddr, path: &str) -> String {
    let response = client()
        .get(url(addr, path))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), 200, "{path}");
    response.text().await.expect("body")
}

#[tokio::test]
async fn two_emulators_sharing_a_key_file_switch_the_identity() {
    bounded(async {
        // What the local walk does to redeploy the sender as another
        // account: a second emulator, same key file, another --email.
        let key = key_path("test-key-1.pkcs8.pem");
        let mut compute = emulator()
            .args(["--port=0", "--key-file", &key, "--email", "default-compute"])
            .args([
                "--project-number",
                "123456789012",
                "--region",
                "europe-west1",
            ])
            .spawn()
            .expect("spawn");
        let mut dedicated = emulator()
            .args([
                "--port=0",
                "--key-file",
                &key,
                "--project-number=123456789012",
            ])
            .spawn()
            .expect("spawn");
        let compute_addr = listening_addr(&mut compute).await;
        let dedicated_addr = listening_addr(&mut dedicated).await;

        let jwks = |addr| async move {
            let response = client()
                .get(url(addr, "/oauth2/v3/certs"))
                .send()
                .await
                .expect("jwks");
            response.bytes().await.expect("body")
        };
        assert_eq!(jwks(compute_addr).await, jwks(dedicated_addr).await);

        let email = "/computeMetadata/v1/instance/service-accounts/default/email";
        let compute_email = "123456789012-compute@developer.gserviceaccount.com";
        let dedicated_email = "calling-service-sa@local-project.iam.gserviceaccount.com";
        assert_eq!(metadata_text(compute_addr, email).await, compute_email);
        assert_eq!(metadata_text(dedicated_addr, email).await, dedicated_email);
        assert_eq!(
            metadata_text(compute_addr, "/computeMetadata/v1/instance/region").await,
            "projects/123456789012/regions/europe-west1"
        );
        assert_eq!(
            metadata_text(compute_addr, "/computeMetadata/v1/instance/zone").await,
            "projects/123456789012/zones/europe-west1-1"
        );

        // Each one's token verifies against the other's keys, naming its own account.
        let audience = "http://127.0.0.1:8081";
        for (minter, checker, expected) in [
            (compute_addr, dedicated_addr, compute_email),
            (dedicated_addr, compute_addr, dedicated_email),
        ] {
            let token = id_token(minter, audience, "full").await;
            let claims = verify(checker, &token, audience)
                .await
                .expect("valid against the other emulator's JWKS");
            assert_eq!(claims["email"], expected);
        }
    })
    .await;
}
