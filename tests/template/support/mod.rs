//! Support of the template repository's own tests and benchmarks, which are about the TPC-H
//! example schema: its sample messages, servers of a test's own (NATS, PostgreSQL, TLS
//! certificates) and worker memory sampling. Not generated into a project (cargo-generate.toml
//! leaves it out): a project's tests (`tests/entities.rs`) follow its own entities.
//! (When you change `entities/`, give the benchmarks your own bodies with `--body`.)
#![allow(dead_code)]

pub(crate) mod memory;
pub(crate) mod publisher;
pub(crate) mod sample;
pub(crate) mod servers;
pub(crate) mod store;

#[allow(unused_imports)]
pub(crate) use sample::{customer, order};

/// Publishing straight to a test pipeline's stream, bypassing the api (on subjects of the
/// example's `order` entity: the worker reads the entity from the envelope).
pub(crate) trait PublishDirect {
    /// Publishes an envelope as the api does (headers and body).
    async fn publish(&self, envelope: &nomnom::envelope::MessageEnvelope);
    /// Publishes `bodies` as one group, as the api does with messages that arrive together;
    /// returns the members' ids.
    async fn publish_group(&self, bodies: Vec<bytes::Bytes>) -> Vec<uuid::Uuid>;
    /// Publishes bytes without envelope headers (an older api's JSON envelope, or garbage).
    async fn publish_raw(&self, payload: Vec<u8>);
}

impl PublishDirect for crate::common::Pipeline {
    async fn publish(&self, envelope: &nomnom::envelope::MessageEnvelope) {
        let subject = nomnom::nats::message_subject(&self.stream, "order", &envelope.message_id);
        self.jetstream
            .send_publish(subject, envelope.to_publish(false))
            .await
            .expect("publish")
            .await
            .expect("ack");
    }

    async fn publish_group(&self, bodies: Vec<bytes::Bytes>) -> Vec<uuid::Uuid> {
        let group = nomnom::envelope::MessageGroup {
            first_id: nomnom::envelope::new_group_id(),
            bodies,
        };
        let subject = nomnom::nats::message_subject(&self.stream, "order", &group.first_id);
        self.jetstream
            .send_publish(subject, group.to_publish())
            .await
            .expect("publish")
            .await
            .expect("ack");
        (0..group.bodies.len())
            .map(|i| nomnom::envelope::member_id(&group.first_id, i))
            .collect()
    }

    async fn publish_raw(&self, payload: Vec<u8>) {
        self.jetstream
            .publish(format!("{}.order.raw", self.stream), payload.into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
}
