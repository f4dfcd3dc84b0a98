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
        /// The message body as received.
        body -> Text,
        /// Why it could not be stored.
        reason -> Text,
        /// Deliveries it took.
        attempts -> Integer,
        /// When it was first dead-lettered.
        first_seen -> Timestamptz,
        /// When it was last dead-lettered (a replay can fail again).
        last_seen -> Timestamptz,
    }
}
