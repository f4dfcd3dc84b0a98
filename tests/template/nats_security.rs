//! NATS with users, nkeys, tokens and TLS: a nats-server of the test's own that requires them
//! (certificates generated here), the api and the worker working through it with the right
//! settings, and clear errors — without secrets — with wrong ones.

use crate::support::PublishDirect;
use crate::{common, support};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nomnom::nats::{NatsAuth, NatsConfig};
use support::servers::{NatsNode, TestPki, free_port, nats_with_config};

const API_PASSWORD: &str = "api-password-for-this-test-7";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nomnom-{name}-{}", common::unique()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A server requiring mutual TLS and a user: `api` with a password, and an nkey user.
struct SecureNats {
    node: NatsNode,
    dir: PathBuf,
    pki: TestPki,
    nkey_seed_file: PathBuf,
}

impl SecureNats {
    fn start() -> Self {
        let dir = scratch("nats-tls");
        let pki = TestPki::generate(&dir.join("pki"), &["localhost", "127.0.0.1"]);
        let worker_key = nkeys::KeyPair::new_user();
        let nkey_seed_file = dir.join("worker.nk");
        std::fs::write(&nkey_seed_file, worker_key.seed().expect("seed")).expect("write seed");
        let port = free_port();
        let config = format!(
            r#"
listen: 127.0.0.1:{port}
jetstream {{ store_dir: "{store}" }}
tls {{
  cert_file: "{cert}"
  key_file: "{key}"
  ca_file: "{ca}"
  verify: true
  timeout: 2
}}
authorization {{
  users = [
    {{ user: "api", password: "{API_PASSWORD}" }}
    {{ nkey: "{nkey}" }}
  ]
}}
"#,
            store = dir.join("js").display(),
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
            ca = pki.ca.display(),
            nkey = worker_key.public_key(),
        );
        let node = nats_with_config(&dir, port, &config);
        Self {
            node,
            dir,
            pki,
            nkey_seed_file,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.node.port)
    }

    /// TLS settings that the server accepts.
    fn tls(&self, auth: NatsAuth) -> NatsAuth {
        NatsAuth {
            tls_ca: Some(self.pki.ca.clone()),
            tls_client: Some((self.pki.client_cert.clone(), self.pki.client_key.clone())),
            ..auth
        }
    }

    fn config(&self, stream: &str, auth: NatsAuth) -> NatsConfig {
        NatsConfig {
            url: self.url(),
            stream: stream.to_string(),
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
            limits: Default::default(),
            auth,
        }
    }
}

impl Drop for SecureNats {
    fn drop(&mut self) {
        self.node.stop("-KILL");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn password_auth(password: &str) -> NatsAuth {
    NatsAuth {
        user: Some(("api".into(), password.into())),
        ..NatsAuth::default()
    }
}

fn nkey_auth(seed_file: &Path) -> NatsAuth {
    NatsAuth {
        creds: Some(seed_file.to_path_buf()),
        ..NatsAuth::default()
    }
}

async fn connect_error(config: &NatsConfig) -> String {
    match nomnom::nats::connect(config).await {
        Ok(_) => panic!("connected with {:?}", config.auth),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_worker_work_through_tls_with_a_password_and_an_nkey() {
    let nats = SecureNats::start();
    let stream = format!("SEC_{}", common::unique());
    let api_nats = nats.config(&stream, nats.tls(password_auth(API_PASSWORD)));
    let worker_nats = nats.config(&stream, nats.tls(nkey_auth(&nats.nkey_seed_file)));
    // The api connects as `api` with its password, the worker with its nkey seed.
    let p = common::Pipeline::paused_full(
        common::TestDb::create().await,
        |w| w.nats = api_nats.clone(),
        |_| {},
    )
    .await;
    let mut p = p;
    p.worker_config.nats = worker_nats;
    p.start_worker().await;
    let (status, answer) = p
        .post("/ingest/message/order", &support::order(1, 3).to_string())
        .await;
    assert_eq!(status, 202, "{answer}");
    p.db.wait_count("SELECT 1 FROM order_line_items", 3).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_or_certificates_fail_clearly_and_keep_secrets() {
    let nats = SecureNats::start();
    let stream = format!("SEC_{}", common::unique());
    // A wrong password: an authorization error naming the settings, not the password.
    let e =
        connect_error(&nats.config(&stream, nats.tls(password_auth("wrong-password-123")))).await;
    assert!(
        e.contains("authorization") && e.contains("NATS_USER/NATS_PASSWORD"),
        "{e}"
    );
    assert!(!e.contains("wrong-password-123"), "{e}");
    // No credentials at all.
    let e = connect_error(&nats.config(&stream, nats.tls(NatsAuth::default()))).await;
    assert!(e.contains("authorization"), "{e}");
    // The server's certificate does not chain to the CA the client trusts.
    let untrusted = NatsAuth {
        tls_ca: Some(nats.pki.other_ca.clone()),
        ..nats.tls(password_auth(API_PASSWORD))
    };
    let e = connect_error(&nats.config(&stream, untrusted)).await;
    assert!(e.contains("NATS_TLS_CA"), "{e}");
    // No client certificate: the server (verify: true) refuses the handshake.
    let no_client_cert = NatsAuth {
        tls_client: None,
        ..nats.tls(password_auth(API_PASSWORD))
    };
    let e = connect_error(&nats.config(&stream, no_client_cert)).await;
    assert!(
        e.starts_with("cannot connect to NATS at nats://127.0.0.1:") && e.contains("NATS_TLS_CERT"),
        "{e}"
    );
    // Files that cannot be used are named with their variable.
    let missing = NatsAuth {
        tls_ca: Some("/nonexistent/ca.pem".into()),
        ..NatsAuth::default()
    };
    let e = connect_error(&nats.config(&stream, missing)).await;
    assert!(
        e.starts_with("NATS_TLS_CA=/nonexistent/ca.pem: cannot read it"),
        "{e}"
    );
    let not_a_seed = nats.dir.join("garbage.creds");
    std::fs::write(&not_a_seed, "hello").expect("write");
    let e = connect_error(&nats.config(&stream, nkey_auth(&not_a_seed))).await;
    assert!(
        e.contains("NATS_CREDS=") && e.contains("neither a .creds file"),
        "{e}"
    );
    // A password in the URL is never echoed.
    let mut in_url = nats.config(&stream, nats.tls(NatsAuth::default()));
    in_url.url = format!(
        "nats://api:url-secret-password@127.0.0.1:{}",
        nats.node.port
    );
    let e = connect_error(&in_url).await;
    assert!(
        !e.contains("url-secret-password") && e.contains("api:***@"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_server_takes_the_token_and_refuses_others() {
    let dir = scratch("nats-token");
    let port = free_port();
    let config = format!(
        "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\nauthorization {{ token: \"the-test-token-0123\" }}\n",
        dir.join("js").display()
    );
    let mut node = nats_with_config(&dir, port, &config);
    let stream = format!("TOK_{}", common::unique());
    let mut config = NatsConfig {
        url: format!("nats://127.0.0.1:{port}"),
        stream,
        duplicate_window: Duration::from_secs(120),
        replicas: 1,
        limits: Default::default(),
        auth: NatsAuth {
            token: Some("the-test-token-0123".into()),
            ..NatsAuth::default()
        },
    };
    let js = nomnom::nats::connect(&config)
        .await
        .expect("token accepted");
    nomnom::nats::ensure_stream(&js, &config)
        .await
        .expect("stream with a token");
    config.auth.token = Some("not-the-token".into());
    let e = connect_error(&config).await;
    assert!(
        e.contains("NATS_TOKEN") && !e.contains("not-the-token"),
        "{e}"
    );
    node.stop("-KILL");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `authorization` block of deploy/k8s/nats.yaml, for `stream` and `consumer`, with
/// passwords filled in.
fn manifest_auth_conf(stream: &str, consumer: &str, api_pw: &str, worker_pw: &str) -> String {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s/nats.yaml"),
    )
    .expect("deploy/k8s/nats.yaml");
    let config_map = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <serde_yaml_ng::Value as serde::Deserialize>::deserialize(d).expect("yaml"))
        .find(|d| d["kind"].as_str() == Some("ConfigMap"))
        .expect("nats ConfigMap");
    let auth = config_map["data"]["auth.conf"]
        .as_str()
        .expect("auth.conf in the ConfigMap");
    assert!(
        config_map["data"]["nats.conf"]
            .as_str()
            .is_some_and(|c| c.contains("include ./auth.conf")),
        "nats.conf includes auth.conf"
    );
    // The manifest names the project's default stream and consumer.
    auth.replace(nomnom::defaults::CONSUMER, consumer)
        .replace(nomnom::defaults::STREAM, stream)
        .replace("$NATS_API_PASSWORD", &format!("\"{api_pw}\""))
        .replace("$NATS_WORKER_PASSWORD", &format!("\"{worker_pw}\""))
        // The test's own cleanup user (the manifest has none that may delete streams).
        .replacen(
            "users = [",
            "users = [\n    { user: \"cleanup\", password: \"cleanup-pw-0123456789\" }",
            1,
        )
}

/// A connection as `config`'s user that records the server's permission violations (the
/// server answers a forbidden publish or request with `-ERR 'Permissions Violation …'`).
async fn watched(config: &NatsConfig) -> (async_nats::jetstream::Context, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let client = nomnom::nats::connect_options(config)
        .expect("options")
        .request_timeout(Some(Duration::from_millis(1500)))
        .event_callback(move |event| {
            let sink = sink.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    sink.lock().expect("lock").push(e.to_string());
                }
            }
        })
        .connect(config.url.as_str())
        .await
        .expect("connects");
    (async_nats::jetstream::new(client), seen)
}

/// Waits (up to 5 s) for a permission violation naming `subject`.
async fn refused(seen: &Arc<Mutex<Vec<String>>>, subject: &str) -> bool {
    for _ in 0..50 {
        if seen
            .lock()
            .expect("lock")
            .iter()
            .any(|e| e.to_lowercase().contains("permissions violation") && e.contains(subject))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The api and the worker, logged in as the manifest's `api` and `worker` users, run the whole
/// pipeline (publish, groups, status of a pending message, consume, ack, trim, dead-letter,
/// record, replay, stream set-up on start), and each is refused what it does not need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_least_privilege_users_run_the_pipeline_and_nothing_more() {
    let id = common::unique();
    let stream = format!("LP_{id}");
    let consumer = format!("c_{id}");
    let dir = scratch("nats-lp");
    let port = free_port();
    let config = format!(
        "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\n{}",
        dir.join("js").display(),
        manifest_auth_conf(
            &stream,
            &consumer,
            "api-pw-0123456789",
            "worker-pw-0123456789"
        )
    );
    let mut node = nats_with_config(&dir, port, &config);
    let user = |name: &str, password: &str| NatsConfig {
        url: format!("nats://127.0.0.1:{port}"),
        stream: stream.clone(),
        duplicate_window: Duration::from_secs(120),
        replicas: 1,
        limits: Default::default(),
        auth: NatsAuth {
            user: Some((name.into(), password.into())),
            ..NatsAuth::default()
        },
    };
    let api = user("api", "api-pw-0123456789");
    let worker = user("worker", "worker-pw-0123456789");
    let mut p = common::Pipeline::paused_full(
        common::TestDb::create().await,
        |w| {
            w.nats = api.clone();
            w.consumer = consumer.clone();
        },
        |_| {},
    )
    .await;
    // Accepted while no worker runs: its status comes from the stream (direct get).
    let (status, answer) = p
        .post("/ingest/message/order", &support::order(5, 2).to_string())
        .await;
    assert_eq!(status, 202, "{answer}");
    let message_id = answer["message_id"].as_str().expect("id").to_string();
    let (status, answer) = p.get(&format!("/ingest/status/{message_id}")).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("pending")),
        "{answer}"
    );
    // A keyed message, its retry (a duplicate), and the key with another body (409): the
    // digests live in the idempotency bucket, with the api's rights.
    let keyed = support::order(6, 1).to_string();
    for (body, want) in [(&keyed, 202), (&keyed, 202)] {
        let (status, answer) = p
            .post_with(
                "/ingest/message/order",
                body,
                &[("idempotency-key", "lp-key-1")],
            )
            .await;
        assert_eq!(status, want, "{answer}");
    }
    let (status, answer) = p
        .post_with(
            "/ingest/message/order",
            &support::order(7, 1).to_string(),
            &[("idempotency-key", "lp-key-1")],
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    // Concurrent requests share JetStream messages (groups).
    let orders: Vec<String> = (10..30).map(|n| support::order(n, 1).to_string()).collect();
    let answers =
        futures::future::join_all(orders.iter().map(|b| p.post("/ingest/message/order", b))).await;
    assert!(answers.iter().all(|(s, _)| *s == 202), "{answers:?}");
    // A message the worker must dead-letter, published with the api's rights, and one the
    // database refuses (replayed below).
    p.publish_raw(b"not json".to_vec()).await;
    p.db.client()
        .await
        .batch_execute("ALTER TABLE orders ADD CONSTRAINT no_clerk_9 CHECK (clerk <> 'Clerk#9')")
        .await
        .expect("constraint");
    let mut refused_order = support::order(40, 1);
    refused_order["clerk"] = serde_json::json!("Clerk#9");
    let (status, _) = p
        .post("/ingest/message/order", &refused_order.to_string())
        .await;
    assert_eq!(status, 202);
    p.worker_config.nats = worker.clone();
    let metrics = p.start_worker().await;
    p.db.wait_count("SELECT 1 FROM order_line_items", 23).await;
    p.db.wait_count("SELECT 1 FROM dead_letters", 2).await;
    // The console's overview with the api's rights: the workers' backlog, what waits per
    // entity (counting consumers), the roster the worker reports to with its own rights.
    let (console_js, console_seen) = watched(&api).await;
    let console_store = nomnom::store::pg::PgStore::open(&p.db.url, 1).expect("store");
    let sources = nomnom::admin::stats::Sources {
        store: &console_store,
        jetstream: &console_js,
        stream: &stream,
        consumer: &consumer,
        started: std::time::Instant::now(),
    };
    let mut overview = nomnom::admin::stats::overview(&sources)
        .await
        .expect("overview");
    for _ in 0..100 {
        if !overview.workers.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        overview = nomnom::admin::stats::overview(&sources)
            .await
            .expect("overview");
    }
    assert_eq!(overview.stream.error, None, "{overview:?}");
    assert_eq!(overview.workers_error, None, "{overview:?}");
    assert_eq!(overview.workers.len(), 1, "{overview:?}");
    assert!(
        overview.entities.iter().all(|e| e.waiting.is_some()),
        "{overview:?}"
    );
    assert!(
        console_seen.lock().expect("lock").is_empty(),
        "{:?}",
        console_seen.lock().expect("lock")
    );
    let (status, answer) = p.get(&format!("/ingest/status/{message_id}")).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("processed")),
        "{answer}"
    );
    // Replay (the worker's command) publishes the dead letter again with the worker's rights;
    // the copy is refused again and recorded again.
    let js = nomnom::nats::connect(&worker)
        .await
        .expect("worker connects");
    let store = nomnom::store::pg::PgStore::open(&p.db.url, 1).expect("store");
    let report = nomnom::admin::replay(
        &nomnom::nats::JetStreamPublisher::new(js),
        &stream,
        &store,
        &nomnom::store::DeadLetterFilter::default(),
    )
    .await
    .expect("replay");
    assert_eq!(report.replayed.len(), 1, "{report:?}");
    p.db.wait_count("SELECT 1 FROM dead_letters WHERE times = 2", 1)
        .await;
    // The worker trims what it has finished: the stream ends empty, no trim failed.
    let mut handle = p.jetstream.get_stream(&stream).await.expect("stream");
    let mut left = u64::MAX;
    for _ in 0..100 {
        left = handle.info().await.expect("info").state.messages;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "the stream was not trimmed");
    assert_eq!(metrics.trim_failures.get(), 0);
    // What neither may do: delete the streams; the api: consume, or forge dead letters. The
    // server refuses each with a permissions violation naming the subject.
    let dlq = nomnom::worker::dead_letter::dlq_stream_name(&stream);
    for (who, config) in [("api", &api), ("worker", &worker)] {
        let (js, seen) = watched(config).await;
        for name in [&stream, &dlq] {
            assert!(
                js.delete_stream(name).await.is_err(),
                "{who} deleted {name}"
            );
            let subject = format!("$JS.API.STREAM.DELETE.{name}");
            assert!(
                refused(&seen, &subject).await,
                "{who}: no violation for {subject}"
            );
        }
    }
    let (api_js, seen) = watched(&api).await;
    let stream_handle = api_js.get_stream(&stream).await.expect("stream info");
    let consumer_attempt = stream_handle
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("intruder".into()),
            ..Default::default()
        })
        .await;
    assert!(consumer_attempt.is_err(), "the api created a consumer");
    assert!(refused(&seen, &format!("$JS.API.CONSUMER.CREATE.{stream}.intruder")).await);
    // Counting consumers do not let the api read messages, nor remove the workers' consumer.
    assert!(stream_handle.delete_consumer(&consumer).await.is_err());
    assert!(
        refused(
            &seen,
            &format!("$JS.API.CONSUMER.DELETE.{stream}.{consumer}")
        )
        .await
    );
    let _ = api_js
        .client()
        .publish(
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            "1".into(),
        )
        .await;
    assert!(
        refused(
            &seen,
            &format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}")
        )
        .await,
        "the api pulled messages"
    );
    let _ = api_js
        .client()
        .publish(format!("{dlq}.order.x"), "forged".into())
        .await;
    assert!(
        refused(&seen, &format!("{dlq}.order.x")).await,
        "the api forged a dead letter"
    );
    // Cleanup (deleting streams) is the test's own user's job.
    p.jetstream = nomnom::nats::connect(&user("cleanup", "cleanup-pw-0123456789"))
        .await
        .expect("cleanup user");
    p.stop().await;
    node.stop("-KILL");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A NATS JWT signed by `issuer` (header, claims, ed25519 signature; base64url without padding).
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": common::unique().to_uppercase(),
        "iat": chrono::Utc::now().timestamp(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let claims = b64.encode(claims.to_string());
    let signed = format!("{header}.{claims}");
    let signature = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", b64.encode(signature))
}

/// Decentralised auth (operator, account and user JWTs): the api and the worker log in with a
/// `.creds` file, as with NGS or an `nsc`-managed server; a creds file of an unknown user fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_logs_in_to_an_operator_mode_server() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "test-operator",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
    });
    let account_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        "test-account",
        serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    // JetStream needs a system account in operator mode.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = nats_jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let user_jwt = nats_jwt(
        &account,
        &user.public_key(),
        "test-user",
        serde_json::json!({"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1}),
    );
    let dir = scratch("nats-jwt");
    let port = free_port();
    let config = format!(
        "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\noperator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\nresolver_preload: {{\n  {acct}: {account_jwt}\n  {sys}: {system_jwt}\n}}\n",
        dir.join("js").display(),
        acct = account.public_key(),
        sys = system.public_key(),
    );
    let mut node = nats_with_config(&dir, port, &config);
    let creds = |jwt: &str, seed: &str| {
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        )
    };
    let creds_file = dir.join("user.creds");
    std::fs::write(&creds_file, creds(&user_jwt, &user.seed().expect("seed"))).expect("write");
    let stream = format!("JWT_{}", common::unique());
    let config = NatsConfig {
        url: format!("nats://127.0.0.1:{port}"),
        stream: stream.clone(),
        duplicate_window: Duration::from_secs(120),
        replicas: 1,
        limits: Default::default(),
        auth: nkey_auth(&creds_file),
    };
    let mut p = common::Pipeline::paused_full(
        common::TestDb::create().await,
        |w| w.nats = config.clone(),
        |_| {},
    )
    .await;
    p.start_worker().await;
    let (status, answer) = p
        .post("/ingest/message/order", &support::order(8, 2).to_string())
        .await;
    assert_eq!(status, 202, "{answer}");
    p.db.wait_count("SELECT 1 FROM order_line_items", 2).await;
    // A user the account never signed.
    let stranger = nkeys::KeyPair::new_user();
    let other_account = nkeys::KeyPair::new_account();
    let forged_jwt = nats_jwt(
        &other_account,
        &stranger.public_key(),
        "stranger",
        serde_json::json!({"type": "user", "version": 2}),
    );
    let forged = dir.join("stranger.creds");
    std::fs::write(&forged, creds(&forged_jwt, &stranger.seed().expect("seed"))).expect("write");
    let e = connect_error(&NatsConfig {
        auth: nkey_auth(&forged),
        ..config.clone()
    })
    .await;
    assert!(
        e.contains("authorization") && e.contains("NATS_CREDS"),
        "{e}"
    );
    p.stop().await;
    node.stop("-KILL");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A worker whose NATS user may not purge the stream (the manifest's `worker` user without
/// `$JS.API.STREAM.PURGE`) says so at start: the failed trim is counted (and logged), before any
/// message could pile up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_may_not_trim_says_so_at_start() {
    let id = common::unique();
    let stream = format!("NT_{id}");
    let consumer = format!("c_{id}");
    let dir = scratch("nats-notrim");
    let port = free_port();
    let auth = manifest_auth_conf(
        &stream,
        &consumer,
        "api-pw-0123456789",
        "worker-pw-0123456789",
    );
    let purge = format!("\"$JS.API.STREAM.PURGE.{stream}\"");
    assert!(
        auth.contains(&purge),
        "the manifest grants the worker the trim"
    );
    let config = format!(
        "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\n{}",
        dir.join("js").display(),
        auth.replace(&purge, "")
    );
    let mut node = nats_with_config(&dir, port, &config);
    let worker = NatsConfig {
        url: format!("nats://127.0.0.1:{port}"),
        stream: stream.clone(),
        duplicate_window: Duration::from_secs(120),
        replicas: 1,
        limits: Default::default(),
        auth: NatsAuth {
            user: Some(("worker".into(), "worker-pw-0123456789".into())),
            ..NatsAuth::default()
        },
    };
    let mut p = common::Pipeline::paused_full(
        common::TestDb::create().await,
        |w| {
            w.nats = worker.clone();
            w.consumer = consumer.clone();
        },
        |_| {},
    )
    .await;
    let metrics = p.start_worker().await;
    let start = std::time::Instant::now();
    while metrics.trim_failures.get() == 0 && start.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metrics.trim_failures.get(),
        1,
        "one failed permission check at start"
    );
    p.jetstream = nomnom::nats::connect(&NatsConfig {
        auth: NatsAuth {
            user: Some(("cleanup".into(), "cleanup-pw-0123456789".into())),
            ..NatsAuth::default()
        },
        ..worker.clone()
    })
    .await
    .expect("cleanup user");
    p.stop().await;
    node.stop("-KILL");
    let _ = std::fs::remove_dir_all(&dir);
}
