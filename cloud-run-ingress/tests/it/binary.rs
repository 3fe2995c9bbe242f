//! The real binary: `--help`, a bad flag, a missing policy, SIGTERM.

use cloud_run::testing::{command, exits_zero_on_sigterm, listening, refused};

use crate::support::{bounded, jwks, policy_file, service_policy};

const BIN: &str = env!("CARGO_BIN_EXE_cloud-run-ingress");

#[tokio::test]
async fn help_lists_every_flag_with_its_variable() {
    bounded(async {
        let output = command(BIN).arg("--help").output().await.expect("run");
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        for (flag, var) in [
            ("--port", "PORT"),
            ("--bind", "BIND_ADDR"),
            ("--upstream", "INGRESS_UPSTREAM"),
            ("--audience", "INGRESS_AUDIENCES"),
            ("--policy", "INGRESS_POLICY"),
            ("--jwks-url", "AUTH_JWKS_URL"),
            ("--use-http2", "INGRESS_USE_HTTP2"),
            ("--timeout", "INGRESS_TIMEOUT"),
        ] {
            assert!(
                help.contains(flag) && help.contains(var),
                "{flag} {var}: {help}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn bad_settings_exit_non_zero_naming_them() {
    bounded(async {
        let (code, message) = refused(command(BIN).arg("--verbose")).await;
        assert_eq!(code, Some(2));
        assert!(message.contains("--verbose"), "{message}");
        let (code, message) = refused(command(BIN).args([
            "--upstream",
            "http://127.0.0.1:1",
            "--audience",
            "https://a.run.app",
        ]))
        .await;
        assert_eq!(code, Some(2));
        assert!(message.starts_with("INGRESS_POLICY: "), "{message}");
        let (code, message) = refused(command(BIN).args([
            "--upstream",
            "http://127.0.0.1:1",
            "--audience",
            "https://a.run.app",
            "--policy",
            "/nonexistent/policy.json",
        ]))
        .await;
        assert_eq!(code, Some(1));
        assert!(message.contains("/nonexistent/policy.json"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn serves_then_exits_zero_on_sigterm() {
    bounded(async {
        let keys = jwks().await;
        let policy = policy_file(
            "binary",
            &service_policy("roles/run.invoker", &["allUsers"]),
        );
        let mut child = command(BIN)
            .args([
                "--upstream",
                "http://127.0.0.1:1",
                "--audience",
                "https://a.run.app",
            ])
            .arg("--policy")
            .arg(&policy)
            .args(["--jwks-url", &format!("http://{}/", keys.addr())])
            .spawn()
            .expect("spawn");
        let (addr, _logs) = listening(&mut child).await;
        // Nothing listens upstream: the front end's 503.
        let response = cloud_run::testing::client()
            .get(format!("http://{addr}/"))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        exits_zero_on_sigterm(&mut child).await;
    })
    .await;
}
