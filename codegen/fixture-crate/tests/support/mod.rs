//! What the fixtures' database tests share: a database of one test with a fixture's tables,
//! and reading rows back as text.
#![allow(dead_code)]

/// A database of one test with a fixture's tables, dropped by [`FixtureDb::drop`].
pub(crate) struct FixtureDb {
    admin: tokio_postgres::Client,
    name: String,
    /// Its URL.
    pub(crate) url: String,
}

impl FixtureDb {
    /// A new database holding `tables`.
    pub(crate) async fn create(tables: &[nomnom_runtime::TableDef]) -> Self {
        Self::create_with(tables, "").await
    }

    /// With `options` after `CREATE DATABASE <name>` (e.g. a collation).
    pub(crate) async fn create_with(tables: &[nomnom_runtime::TableDef], options: &str) -> Self {
        let base = std::env::var("TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("nomnom_fixture_{}", uuid::Uuid::new_v4().simple());
        let admin = pg(&format!("{base}/test")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name} {options}"))
            .await
            .expect("create db");
        let db = Self {
            admin,
            url: format!("{base}/{name}"),
            name,
        };
        let mut conn = db.connect().await;
        for t in tables {
            diesel_async::RunQueryDsl::execute(diesel::sql_query(t.create_sql), &mut conn)
                .await
                .expect("create table");
        }
        db
    }

    /// A diesel-async connection to it.
    pub(crate) async fn connect(&self) -> diesel_async::AsyncPgConnection {
        <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(&self.url)
            .await
            .expect("connect")
    }

    /// Drops it.
    pub(crate) async fn drop(self) {
        self.admin
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .await
            .expect("drop db");
    }
}

/// A tokio-postgres client of `url`.
pub(crate) async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432");
    tokio::spawn(conn);
    client
}

/// Every row of `sql`, its columns as text joined by `|` (`NULL` for null).
pub(crate) async fn texts(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    client
        .simple_query(sql)
        .await
        .expect("query")
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect()
}

/// The origin of a row from the message at `epoch:sequence` (its id made from the sequence, so
/// that a test can tell which message wrote a row).
pub(crate) fn origin(epoch: i64, sequence: i64) -> nomnom_runtime::Origin {
    nomnom_runtime::Origin {
        position: nomnom_runtime::Position { epoch, sequence },
        message_id: nomnom_runtime::Uuid::from_u128(sequence as u128),
    }
}

/// Field errors as `(field, error)` pairs, for comparing.
pub(crate) type Errors = Vec<(String, String)>;

/// The parse's outcome (`parsed`), after checking that the validate-only path (`checked`: what
/// the api runs) agrees with it error for error.
pub(crate) fn agreeing<M>(
    checked: Result<(), Vec<nomnom_runtime::FieldError>>,
    parsed: Result<M, Vec<nomnom_runtime::FieldError>>,
) -> Result<M, Errors> {
    let pairs = |errors: Vec<nomnom_runtime::FieldError>| -> Errors {
        errors.into_iter().map(|e| (e.field, e.error)).collect()
    };
    let parsed = parsed.map_err(pairs);
    assert_eq!(
        checked.map_err(pairs),
        parsed.as_ref().map(drop).map_err(Clone::clone),
        "validate-only and parse disagree"
    );
    parsed
}
