//! An in-memory [`Publish`]: keeps what it is given (or refuses everything), for tests of the
//! api's publishing seam without a broker behind it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::jetstream::context::PublishErrorKind;
use nomnom::nats::publish::{Acked, PublishFuture};
use nomnom::nats::{Outgoing, Publish, PublishFailure};

/// The subjects published (JetStream's message type keeps its payload to itself); `refuse`
/// makes every publish fail as a broker timeout.
#[derive(Default)]
pub(crate) struct MemoryPublisher {
    /// Whether every publish fails.
    pub(crate) refuse: AtomicBool,
    sent: Mutex<Vec<String>>,
}

impl MemoryPublisher {
    /// The subject of every message published, in order.
    pub(crate) fn sent(&self) -> Vec<String> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Publish for MemoryPublisher {
    fn send(
        &self,
        out: Outgoing,
    ) -> PublishFuture<'_, Result<PublishFuture<'static, Acked>, PublishFailure>> {
        let result = if self.refuse.load(Ordering::SeqCst) {
            Err(PublishFailure {
                kind: PublishErrorKind::TimedOut,
                detail: "in-memory broker: timed out at 10.0.0.7:4222".into(),
            })
        } else {
            self.sent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(out.subject);
            let acked: PublishFuture<'static, Acked> = Box::pin(async { Ok(false) });
            Ok(acked)
        };
        Box::pin(async move { result })
    }

    fn max_payload(&self) -> usize {
        1024 * 1024
    }
}
