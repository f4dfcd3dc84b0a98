//! diesel definitions of the infrastructure tables created by `migrations/`.

diesel::table! {
    /// One row per message whose rows were committed or that was dead-lettered.
    message_status (message_id) {
        message_id -> Uuid,
        entity -> Text,
        status -> Text,
        received_at -> Timestamptz,
        processed_at -> Timestamptz,
        row_count -> Integer,
        attempts -> Integer,
        error -> Nullable<Text>,
    }
}

diesel::table! {
    /// Messages that could not be processed, with the reason.
    dead_letters (message_id) {
        message_id -> Uuid,
        entity -> Text,
        body -> Text,
        reason -> Text,
        attempts -> Integer,
        first_seen -> Timestamptz,
        last_seen -> Timestamptz,
    }
}
