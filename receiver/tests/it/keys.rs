//! The signing keys: cached per `max-age`, refreshed in the background,
//! refetched (rate-limited, one at a time) for an unknown `kid`, kept when
//! the endpoint fails, and awaited with 503 when it was never reached.

use std::{
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use http::StatusCode;
use id_token::STRIPPED_REASON;
use tokio::task::JoinSet;

use crate::{
    support::{
        auth_config, bounded, error_description, now, FakeJwks, Gate, JwksMode, ManualClock,
        Verifying,
    },
    tokens::{self, b64, claims, header, keys, signed, token, Signing},
};

/// A token from the allowed caller whose header names `kid`, with a real
/// RS256 signature from the unpublished key (made once: a key that is not
/// found is never used to check it).
fn made_up_kid(kid: &str) -> String {
    static SIGNED: LazyLock<String> =
        LazyLock::new(|| token(&header("x"), &claims(now()), Signing::Rs256(&keys().rogue)));
    let (_, rest) = SIGNED.split_once('.').expect("jwt");
    format!("{}.{rest}", b64(header(kid).to_string().as_bytes()))
}

#[tokio::test]
async fn keys_are_fetched_once_while_fresh() {
    bounded(async {
        let k = keys();
        let fake = FakeJwks::serving(&[&k.one, &k.two], 3600);
        let _jwks = fake.start().await;
        let receiver = Verifying::ready(auth_config(_jwks.addr())).await;
        for i in 0..30 {
            let key = if i % 2 == 0 { &k.one } else { &k.two };
            let response = receiver.get_with(&signed(key, &claims(now()))).await;
            assert_eq!(response.status(), StatusCode::OK);
        }
        assert_eq!(fake.fetches(), 1);
    })
    .await;
}

#[tokio::test]
async fn keys_are_refreshed_in_the_background_before_they_expire() {
    bounded(async {
        let k = keys();
        let fake = FakeJwks::serving(&[&k.one], 5);
        let jwks = fake.start().await;
        let mut auth = auth_config(jwks.addr());
        auth.keys.min_refresh = Duration::ZERO;
        let receiver = Verifying::ready(auth).await;
        let loaded = Instant::now();
        // Google rotates: the next key set holds key-2 only.
        fake.set(JwksMode::Serve(tokens::jwks(&[&k.two]), 5));
        receiver.keys_loaded(2).await;
        let refreshed_after = loaded.elapsed();
        assert!(
            refreshed_after < Duration::from_secs(5),
            "refreshed after {refreshed_after:?}, past max-age"
        );
        assert!(
            refreshed_after >= Duration::from_secs(3),
            "refreshed after {refreshed_after:?}, long before it was due"
        );
        assert_eq!(fake.fetches(), 2, "no request asked for this fetch");
        let response = receiver.get_with(&signed(&k.two, &claims(now()))).await;
        assert_eq!(response.status(), StatusCode::OK);
        // The key rotated out is gone.
        let response = receiver.get_with(&signed(&k.one, &claims(now()))).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error_description(&response), "unknown signing key (kid)");
    })
    .await;
}

#[tokio::test]
async fn a_key_rotated_in_is_accepted_at_first_sight() {
    bounded(async {
        let k = keys();
        let fake = FakeJwks::serving(&[&k.one], 3600);
        let jwks = fake.start().await;
        let receiver = Verifying::ready(auth_config(jwks.addr())).await;
        assert_eq!(fake.fetches(), 1);
        fake.set(JwksMode::Serve(tokens::jwks(&[&k.one, &k.two]), 3600));
        let response = receiver.get_with(&signed(&k.two, &claims(now()))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(fake.fetches(), 2);
        for key in [&k.one, &k.two] {
            let response = receiver.get_with(&signed(key, &claims(now()))).await;
            assert_eq!(response.status(), StatusCode::OK);
        }
        assert_eq!(fake.fetches(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_flood_of_made_up_kids_costs_one_fetch_per_window() {
    bounded(async {
        let k = keys();
        let fake = FakeJwks::serving(&[&k.one], 3600);
        let jwks = fake.start().await;
        let clock = ManualClock::new();
        let mut auth = auth_config(jwks.addr());
        auth.clock = clock.clock();
        let interval = auth.keys.refetch_interval;
        assert_eq!(interval, Duration::from_secs(10), "the production default");
        let receiver = Arc::new(Verifying::ready(auth).await);
        assert_eq!(fake.fetches(), 1);

        let flood = |from: usize, count: usize| {
            let receiver = Arc::clone(&receiver);
            async move {
                let mut requests = JoinSet::new();
                for i in from..from + count {
                    let receiver = Arc::clone(&receiver);
                    requests.spawn(async move {
                        receiver
                            .get_with(&made_up_kid(&format!("made-up-{i}")))
                            .await
                    });
                }
                while let Some(response) = requests.join_next().await {
                    let response = response.expect("request task");
                    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
                    assert_eq!(error_description(&response), "unknown signing key (kid)");
                }
            }
        };
        flood(0, 200).await;
        assert_eq!(fake.fetches(), 2, "200 made-up kids, one refetch");
        flood(200, 50).await;
        assert_eq!(fake.fetches(), 2, "still within the window");
        // Real callers are unharmed.
        let response = receiver.get_with(&signed(&k.one, &claims(now()))).await;
        assert_eq!(response.status(), StatusCode::OK);

        clock.advance(interval);
        flood(250, 50).await;
        assert_eq!(fake.fetches(), 3, "one more refetch per window");
        // A key rotated in during a flood is picked up in the next window.
        fake.set(JwksMode::Serve(tokens::jwks(&[&k.one, &k.two]), 3600));
        let rotated = signed(&k.two, &claims(now()));
        assert_eq!(
            receiver.get_with(&rotated).await.status(),
            StatusCode::UNAUTHORIZED
        );
        clock.advance(interval);
        assert_eq!(receiver.get_with(&rotated).await.status(), StatusCode::OK);
        assert_eq!(fake.fetches(), 4);
    })
    .await;
}

#[tokio::test]
async fn one_fetch_at_a_time() {
    bounded(async {
        let k = keys();
        let fake = FakeJwks::gated(
            JwksMode::Serve(tokens::jwks(&[&k.one]), 3600),
            Gate::closed(),
        );
        let jwks = fake.start().await;
        let mut auth = auth_config(jwks.addr());
        // Nothing but single flight holds the requests back.
        auth.keys.refetch_interval = Duration::ZERO;
        let receiver = Arc::new(Verifying::start(auth).await);
        // The start-up fetch is held at the gate.
        fake.wait_for_arrivals(1).await;
        let mut requests = JoinSet::new();
        for _ in 0..20 {
            let receiver = Arc::clone(&receiver);
            requests.spawn(async move {
                let token = signed(&keys().one, &claims(now()));
                receiver.get_with(&token).await.status()
            });
        }
        // Asserts an absence, so it can only wait a while: no request
        // starts a second fetch while the first is in flight.
        let second = tokio::time::timeout(Duration::from_millis(300), fake.wait_for_arrivals(2));
        assert!(second.await.is_err(), "a second fetch started");
        fake.gate.open();
        while let Some(status) = requests.join_next().await {
            assert_eq!(status.expect("request task"), StatusCode::OK);
        }
        assert_eq!(fake.fetches(), 1);
    })
    .await;
}

/// A 503 that tells the caller when to try again.
fn assert_retry_later(response: &reqwest::Response, context: &str) {
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{context}"
    );
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .unwrap_or_else(|| panic!("{context}: no Retry-After"))
        .to_str()
        .expect("ascii")
        .parse::<u64>()
        .expect("Retry-After in seconds");
    assert!(retry_after > 0, "{context}");
}

#[tokio::test]
async fn a_failed_refetch_keeps_the_last_good_keys() {
    bounded(async {
        let k = keys();
        let fake = FakeJwks::serving(&[&k.one], 3600);
        let jwks = fake.start().await;
        let mut auth = auth_config(jwks.addr());
        auth.keys.refetch_interval = Duration::ZERO;
        let receiver = Verifying::ready(auth).await;
        let valid = signed(&k.one, &claims(now()));

        fake.set(JwksMode::Fail(StatusCode::INTERNAL_SERVER_ERROR));
        let response = receiver.get_with(&made_up_kid("made-up")).await;
        // The kid may be a key rotated in that could not be fetched.
        assert_retry_later(&response, "refetch answered 500");
        assert_eq!(fake.fetches(), 2, "the refetch was tried");
        assert_eq!(receiver.get_with(&valid).await.status(), StatusCode::OK);

        // The endpoint gone altogether: connections refused.
        jwks.stop().await;
        let response = receiver.get_with(&made_up_kid("made-up-again")).await;
        assert_retry_later(&response, "refetch refused");
        assert_eq!(receiver.get_with(&valid).await.status(), StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn an_unknown_kid_is_503_while_the_key_endpoint_fails_and_401_once_it_answers() {
    bounded(async {
        let k = keys();
        let fake = FakeJwks::serving(&[&k.one], 3600);
        let jwks = fake.start().await;
        let clock = ManualClock::new();
        let mut auth = auth_config(jwks.addr());
        auth.clock = clock.clock();
        auth.keys.fetch_timeout = Duration::from_millis(300);
        let interval = auth.keys.refetch_interval;
        let receiver = Verifying::ready(auth).await;
        let valid = signed(&k.one, &claims(now()));
        // Signed by a key rotated in while the endpoint is failing.
        let rotated = signed(&k.two, &claims(now()));

        for (failure, mode) in [
            ("5xx", JwksMode::Fail(StatusCode::BAD_GATEWAY)),
            (
                "not a JWKS",
                JwksMode::Serve(serde_json::json!("<html>"), 3600),
            ),
            ("timeout", JwksMode::Hang),
        ] {
            fake.set(mode);
            let tried = fake.arrivals();
            assert_retry_later(&receiver.get_with(&rotated).await, failure);
            assert_eq!(fake.arrivals(), tried + 1, "{failure}: one refetch");
            // Within the window the refetch is not repeated, and the last
            // one failed: the kid's status is still unknown.
            assert_retry_later(&receiver.get_with(&rotated).await, failure);
            assert_retry_later(&receiver.get_with(&made_up_kid("x")).await, failure);
            assert_eq!(fake.arrivals(), tried + 1, "{failure}: rate-limited");
            assert_eq!(receiver.get_with(&valid).await.status(), StatusCode::OK);
            clock.advance(interval);
        }

        // The endpoint answers again, with the rotated key.
        fake.set(JwksMode::Serve(tokens::jwks(&[&k.one, &k.two]), 3600));
        assert_eq!(receiver.get_with(&rotated).await.status(), StatusCode::OK);
        // A kid the endpoint just said it does not know is refused...
        clock.advance(interval);
        let tried = fake.arrivals();
        let response = receiver.get_with(&made_up_kid("made-up")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error_description(&response), "unknown signing key (kid)");
        assert_eq!(fake.arrivals(), tried + 1);
        // ...and so is one within the window after that successful refetch.
        fake.set(JwksMode::Fail(StatusCode::SERVICE_UNAVAILABLE));
        let response = receiver.get_with(&made_up_kid("made-up-2")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(fake.arrivals(), tried + 1, "rate-limited");
    })
    .await;
}

#[tokio::test]
async fn a_refresh_after_a_failed_refetch_confirms_the_keys_within_the_window() {
    bounded(async {
        let k = keys();
        let fake = FakeJwks::serving(&[&k.one], 3600);
        let jwks = fake.start().await;
        let clock = ManualClock::new();
        let mut auth = auth_config(jwks.addr());
        auth.clock = clock.clock();
        let receiver = Verifying::ready(auth).await;
        fake.set(JwksMode::Fail(StatusCode::INTERNAL_SERVER_ERROR));
        assert_retry_later(
            &receiver.get_with(&made_up_kid("a")).await,
            "refetch failed",
        );
        // The background's next fetch succeeds inside the window: a kid
        // missing now is known to be missing.
        fake.set(JwksMode::Serve(tokens::jwks(&[&k.one]), 3600));
        receiver.keys.refresh().await.expect("refresh");
        let tried = fake.arrivals();
        let response = receiver.get_with(&made_up_kid("b")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(fake.arrivals(), tried, "rate-limited");
    })
    .await;
}

#[tokio::test]
async fn without_keys_requests_get_503_until_they_arrive() {
    bounded(async {
        let k = keys();
        let fake = FakeJwks::new(JwksMode::Fail(StatusCode::SERVICE_UNAVAILABLE));
        let jwks = fake.start().await;
        let mut auth = auth_config(jwks.addr());
        auth.keys.refetch_interval = Duration::ZERO;
        // The background tries once; every later fetch is a request's.
        auth.keys.retry_min = Duration::from_secs(3600);
        auth.keys.retry_max = Duration::from_secs(3600);
        let receiver = Verifying::start(auth).await;
        fake.wait_for_fetches(1).await;
        let valid = signed(&k.one, &claims(now()));

        let response = receiver.get_with(&valid).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.text().await.expect("body"),
            "signing keys not available yet\n"
        );
        // What needs no key is still answered precisely.
        assert_eq!(
            receiver.get(&[]).await.status(),
            StatusCode::UNAUTHORIZED,
            "no token"
        );
        let (message, _) = valid.rsplit_once('.').expect("jwt");
        let response = receiver
            .get_with(&format!("{message}.SIGNATURE_REMOVED_BY_GOOGLE"))
            .await;
        assert_eq!(error_description(&response), STRIPPED_REASON);
        let response = receiver
            .get_with(&token(
                &serde_json::json!({ "alg": "none" }),
                &claims(now()),
                Signing::Unsigned,
            ))
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        fake.set(JwksMode::Serve(tokens::jwks(&[&k.one]), 3600));
        let response = receiver.get_with(&valid).await;
        assert_eq!(response.status(), StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn without_keys_the_background_retries_until_they_arrive() {
    bounded(async {
        let k = keys();
        let fake = FakeJwks::new(JwksMode::Fail(StatusCode::BAD_GATEWAY));
        let jwks = fake.start().await;
        let mut auth = auth_config(jwks.addr());
        // Requests may trigger one fetch only: the retries seen are the
        // background's.
        auth.keys.refetch_interval = Duration::from_secs(3600);
        let receiver = Verifying::start(auth).await;
        let valid = signed(&k.one, &claims(now()));
        fake.wait_for_fetches(3).await;
        for _ in 0..3 {
            let response = receiver.get_with(&valid).await;
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        fake.set(JwksMode::Serve(tokens::jwks(&[&k.one]), 3600));
        receiver.keys_loaded(1).await;
        assert_eq!(receiver.get_with(&valid).await.status(), StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_key_endpoint_at_start_means_503_not_an_exit() {
    bounded(async {
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = dead.local_addr().expect("addr");
        drop(dead);
        let receiver = Verifying::start(auth_config(addr)).await;
        let valid = signed(&keys().one, &claims(now()));
        let response = receiver.get_with(&valid).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.text().await.expect("body"),
            "signing keys not available yet\n"
        );
    })
    .await;
}

#[tokio::test]
async fn a_token_verified_before_is_refused_once_its_key_rotates_out() {
    bounded(async {
        let k = keys();
        let fake = FakeJwks::serving(&[&k.one], 3600);
        let jwks = fake.start().await;
        let receiver = Verifying::ready(auth_config(jwks.addr())).await;
        let token = signed(&k.one, &claims(now()));
        for _ in 0..3 {
            assert_eq!(receiver.get_with(&token).await.status(), StatusCode::OK);
        }
        fake.set(JwksMode::Serve(tokens::jwks(&[&k.two]), 3600));
        receiver.keys.refresh().await.expect("refetch");
        let response = receiver.get_with(&token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error_description(&response), "unknown signing key (kid)");
    })
    .await;
}

#[tokio::test]
async fn a_token_verified_before_still_expires() {
    bounded(async {
        let k = keys();
        let fake = FakeJwks::serving(&[&k.one], 3600);
        let jwks = fake.start().await;
        let clock = ManualClock::new();
        let mut auth = auth_config(jwks.addr());
        auth.clock = clock.clock();
        let receiver = Verifying::ready(auth).await;
        let token = signed(&k.one, &claims(clock.unix_seconds()));
        assert_eq!(receiver.get_with(&token).await.status(), StatusCode::OK);
        // Past exp and the 60 s of leeway: the signature verdict was cached,
        // the claims are checked again.
        clock.advance(Duration::from_secs(3590 + 61));
        let response = receiver.get_with(&token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error_description(&response), "token expired");
    })
    .await;
}
