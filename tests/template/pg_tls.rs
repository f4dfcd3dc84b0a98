//! PostgreSQL over TLS: a server of the test's own with `ssl=on`, a certificate generated here,
//! and a pg_hba.conf that refuses plaintext to the application's role. `sslmode` of
//! `DATABASE_URL` is honoured (require, verify-ca, verify-full with sslrootcert), wrong
//! certificates fail with a clear message, and the whole pipeline runs through it.

use crate::{common, support};
use std::path::PathBuf;

use nomnom::store::pg::connect as pg;
use support::servers::{OwnPostgres, TestPki};

/// A server that speaks TLS with a certificate for `localhost` only, signed by the test CA;
/// role `app` may only connect over TLS, `postgres` (the harness) also without.
struct TlsPostgres {
    pg: OwnPostgres,
    pki: TestPki,
    pki_dir: PathBuf,
}

impl TlsPostgres {
    fn start() -> Self {
        let pki_dir = std::env::temp_dir().join(format!("nomnom-pgpki-{}", common::unique()));
        let pki = TestPki::generate(&pki_dir, &["localhost"]);
        let pg = OwnPostgres::start_with(|data| {
            std::fs::copy(&pki.server_cert, data.join("server.crt")).expect("copy cert");
            std::fs::copy(&pki.server_key, data.join("server.key")).expect("copy key");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("key permissions");
            let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
            conf.push_str(
                "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            );
            std::fs::write(data.join("postgresql.conf"), conf).expect("write conf");
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 trust\n\
                 hostnossl all postgres 127.0.0.1/32 trust\n\
                 hostnossl all all 127.0.0.1/32 reject\n",
            )
            .expect("write pg_hba.conf");
        });
        Self { pg, pki, pki_dir }
    }

    /// The `app` role's URL to database `db` with extra parameters.
    fn app_url(&self, host: &str, db: &str, params: &str) -> String {
        format!("postgres://app@{host}:{}/{db}?{params}", self.pg.port)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pki_dir);
    }
}

/// Whether the session of `url` is encrypted (`pg_stat_ssl`), or the connect error.
async fn encrypted(url: &str) -> Result<bool, String> {
    let target = pg::parse_config(url).map_err(|e| e.to_string())?;
    let (client, _) = pg::connect_client(&target)
        .await
        .map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_is_honoured_and_wrong_certificates_are_refused_clearly() {
    let server = TlsPostgres::start();
    let admin = common::pg(&format!("{}/postgres", server.pg.url())).await;
    admin
        .batch_execute("CREATE ROLE app LOGIN")
        .await
        .expect("role");
    let ca = server.pki.ca.display().to_string();
    let other_ca = server.pki.other_ca.display().to_string();
    let url = |host: &str, params: &str| server.app_url(host, "postgres", params);

    // Plaintext is refused by the server for `app`: TLS below really is required.
    let e = encrypted(&url("127.0.0.1", "sslmode=disable"))
        .await
        .expect_err("plaintext");
    assert!(
        e.contains("pg_hba.conf") && e.contains("no encryption"),
        "{e}"
    );
    // Without sslmode (prefer), require, verify-ca, verify-full: encrypted sessions.
    for (host, params) in [
        ("127.0.0.1", String::new()),
        ("127.0.0.1", "sslmode=require".to_string()),
        ("127.0.0.1", format!("sslmode=verify-ca&sslrootcert={ca}")),
        ("localhost", format!("sslmode=verify-full&sslrootcert={ca}")),
    ] {
        assert_eq!(
            encrypted(&url(host, &params)).await,
            Ok(true),
            "{host} {params}"
        );
    }
    // verify-full: the certificate names `localhost`, not 127.0.0.1.
    let e = encrypted(&url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .expect_err("name mismatch");
    assert!(
        e.contains("TLS handshake failed") && e.contains("not valid for name"),
        "{e}"
    );
    assert!(e.contains("sslrootcert"), "{e}");
    // A CA that did not sign the server's certificate.
    for mode in ["verify-ca", "verify-full", "require"] {
        let e = encrypted(&url(
            "localhost",
            &format!("sslmode={mode}&sslrootcert={other_ca}"),
        ))
        .await
        .expect_err("untrusted");
        assert!(e.contains("UnknownIssuer"), "{mode}: {e}");
    }
    // Settings that cannot work are refused before connecting.
    let e = encrypted(&url("localhost", "sslmode=verify-full"))
        .await
        .expect_err("no root");
    assert!(e.contains("needs sslrootcert"), "{e}");
    // A server without TLS under sslmode=require: the shared one has ssl on, so use a
    // plaintext-only server of our own.
    let plain = OwnPostgres::start_with(|data| {
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
        conf.push_str("\nssl = off\n");
        std::fs::write(data.join("postgresql.conf"), conf).expect("write conf");
    });
    let e = encrypted(&format!("{}/postgres?sslmode=require", plain.url()))
        .await
        .expect_err("no TLS offered");
    assert!(e.contains("does not offer TLS"), "{e}");
    assert_eq!(
        encrypted(&format!("{}/postgres", plain.url())).await,
        Ok(false),
        "prefer falls back to plaintext"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_over_verify_full_tls() {
    let server = TlsPostgres::start();
    let admin_url = server.pg.url();
    let db = common::TestDb::create_on(&admin_url, "postgres").await;
    let admin = common::pg(&format!("{admin_url}/postgres")).await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE app LOGIN; ALTER DATABASE {} OWNER TO app",
            db.name
        ))
        .await
        .expect("role");
    let ca = server.pki.ca.display().to_string();
    let app = common::TestDb {
        name: db.name.clone(),
        url: server.app_url(
            "localhost",
            &db.name,
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
    };
    let mut p = common::Pipeline::paused_on(app, |_| {}).await;
    p.start_worker().await;
    let (status, answer) = p
        .post("/ingest/message/order", &support::order(3, 4).to_string())
        .await;
    assert_eq!(status, 202, "{answer}");
    // Read back as the harness (plaintext `postgres`): the worker wrote over TLS as `app`.
    db.wait_count("SELECT 1 FROM order_line_items", 4).await;
    assert_eq!(
        db.rows("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'app' AND NOT s.ssl")
            .await,
        vec![vec![Some("0".to_string())]]
    );
    // The SQLSTATE tap reads through TLS: a server error's code is seen.
    let mut conn = nomnom::store::pg::connect(&p.db.url)
        .await
        .expect("TLS connection");
    let failed =
        diesel_async::RunQueryDsl::execute(diesel::sql_query("SELECT 1/0"), &mut *conn).await;
    assert!(failed.is_err());
    assert_eq!(
        conn.take_sqlstate().map(|c| c.to_string()).as_deref(),
        Some("22012")
    );
    drop(conn);
    p.stop().await;
}
