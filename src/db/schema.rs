//! diesel definitions of the infrastructure tables created by `migrations/`.

diesel::table! {
    /// One row per message whose rows were committed or that was dead-lettered.
    message_status (message_id) {
        /// The message id (`Nats-Msg-Id`).
        message_id -> Uuid,
        /// The root entity it was posted as.
        entity -> Text,
        /// `processed` or `dead_lettered`.
        status -> Text,
        /// When the api accepted it.
        received_at -> Timestamptz,
        /// When the worker committed its outcome.
        processed_at -> Timestamptz,
        /// Rows written for it (root and derived).
        row_count -> Integer,
        /// Deliveries it took.
        attempts -> Integer,
        /// Why it was dead-lettered, if it was.
        error -> Nullable<Text>,
    }
}

diesel::table! {
    /// Messages that could not be processed, with the reason.
    dead_letters (message_id) {
        /// The message id.
        message_id -> Uuid,
        /// The root entity it was posted as.
        entity -> Text,
        /// The message body's bytes as received.
        body -> Binary,
        /// Why it could not be stored.
        reason -> Text,
        /// Deliveries it took.
        attempts -> Integer,
        /// When it was first dead-lettered.
        first_seen -> Timestamptz,
        /// When it was last dead-lettered (a replay can fail again).
        last_seen -> Timestamptz,
        /// Epoch of the stream where the message first arrived.
        position_epoch -> BigInt,
        /// Its sequence there.
        position_seq -> BigInt,
        /// The id of the last dead-lettering recorded (recording it again changes nothing).
        record_id -> Text,
        /// How many times the message was dead-lettered (replays that failed again).
        times -> Integer,
    }
}
