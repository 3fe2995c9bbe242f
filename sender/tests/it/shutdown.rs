//! Shutdown drains: a request in flight when the signal comes still gets its
//! answer.

use http::StatusCode;

use crate::support::{
    bounded, client, hour, root, FakeMetadata, FakeReceiver, ReceiverMode, Tutorial,
};

#[tokio::test]
async fn an_in_flight_request_survives_shutdown() {
    bounded(async {
        let chain = Tutorial::start(
            FakeMetadata::new(vec![hour()]),
            FakeReceiver::new(ReceiverMode::Hold),
        )
        .await;
        let addr = chain.sender.addr();
        let arrived = chain.receiver.arrived.notified();
        let request = tokio::spawn(client().get(root(addr)).send());
        arrived.await;

        // The request now waits inside the receiver. Signal shutdown and wait
        // until the sender has stopped accepting.
        let Tutorial {
            receiver, sender, ..
        } = chain;
        let stopped = tokio::spawn(sender.stop());
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }

        receiver.gate.open();
        let response = request.await.expect("join").expect("answered, not reset");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.text().await.expect("body"),
            "Response from receiving service: Hello from the receiving service!"
        );
        stopped.await.expect("sender drained and returned");
    })
    .await;
}
