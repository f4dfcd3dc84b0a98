//! The contract, checked by tools nobody here wrote (pinned in `tests/contract/requirements.txt`
//! and installed into a virtualenv under `target/` on first use): schemathesis against the
//! OpenAPI document of the running api binary, hadolint on the Dockerfiles, kubernetes-validate
//! for two Kubernetes versions, PyYAML and ruamel.yaml, yamllint, the Compose Specification's
//! schema and KEDA's CRD schema; and every metric name the Grafana dashboard and the Prometheus
//! rules use, against what the running binaries export.

use crate::{common, support};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::process::{Service, api_command, worker_command};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The virtualenv with the pinned tools, created (under a file lock, so that test binaries
/// running at once share it) when missing or when the requirements changed.
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("contract-venv");
        let requirements = root().join("tests/contract/requirements.txt");
        let wanted = std::fs::read_to_string(&requirements).expect("requirements");
        std::fs::create_dir_all(&dir).expect("venv dir");
        let lock = std::fs::File::create(dir.with_extension("lock")).expect("lock file");
        lock.lock().expect("lock");
        let marker = dir.join("installed-requirements.txt");
        if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
            let python = std::env::var("NOMNOM_PYTHON").unwrap_or_else(|_| "python3".into());
            must(
                Command::new(&python)
                    .args(["-m", "venv", "--clear"])
                    .arg(&dir),
                "create the virtualenv (set NOMNOM_PYTHON to a Python 3.10+ with venv)",
            );
            must(
                Command::new(dir.join("bin/pip"))
                    .args([
                        "install",
                        "--disable-pip-version-check",
                        "--no-input",
                        "--retries",
                        "5",
                        "--timeout",
                        "60",
                        "-r",
                    ])
                    .arg(&requirements),
                "install the pinned tools from PyPI",
            );
            std::fs::write(&marker, &wanted).expect("marker");
        }
        dir
    })
}

/// A tool of the virtualenv, run from the repository root.
fn tool(name: &str) -> Command {
    let mut cmd = Command::new(venv().join("bin").join(name));
    cmd.current_dir(root());
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`; panics with its output unless it succeeds.
fn must(cmd: &mut Command, what: &str) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "could not {what} ({:?} exited {}):\n{}",
        cmd.get_program(),
        out.status,
        text(&out)
    );
    text(&out)
}

/// A file under this test binary's scratch directory (unique per process).
fn scratch(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("contract-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

/// Every YAML file that ships for deployment (templates render to these; tests/template/deploy.rs).
fn deployment_yaml() -> Vec<String> {
    let mut files = vec!["docker-compose.nats.yml".to_string()];
    for dir in ["deploy/k8s", "deploy/prometheus"] {
        let mut names: Vec<String> = std::fs::read_dir(root().join(dir))
            .expect("deploy dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
            .map(|n| format!("{dir}/{n}"))
            .collect();
        names.sort();
        files.extend(names);
    }
    files
}

/// The Kubernetes manifests (not the kustomization, which is kustomize's own file).
fn manifests() -> Vec<String> {
    deployment_yaml()
        .into_iter()
        .filter(|f| f.starts_with("deploy/k8s/") && !f.ends_with("kustomization.yaml"))
        .collect()
}

#[test]
fn dockerfiles_pass_hadolint() {
    for dockerfile in ["Dockerfile.api", "Dockerfile.worker"] {
        let out = must(
            tool("hadolint").args(["--no-color", dockerfile]),
            &format!("lint {dockerfile} cleanly"),
        );
        assert!(out.trim().is_empty(), "{dockerfile}: {out}");
    }
}

#[test]
fn manifests_are_valid_for_two_kubernetes_versions() {
    for version in ["1.30.0", "1.34.0"] {
        let out = must(
            tool("kubernetes-validate")
                .args(["--strict", "--quiet", "-k", version])
                .args(manifests()),
            &format!("validate the manifests for Kubernetes {version}"),
        );
        // Only KEDA's resource has no built-in schema; it is checked against KEDA's CRD below.
        let unexpected: Vec<&str> = out
            .lines()
            .filter(|l| {
                !l.trim().is_empty()
                    && !l.contains("kind ScaledObject with api version keda.sh/v1alpha1")
            })
            .collect();
        assert!(
            unexpected.is_empty(),
            "Kubernetes {version}:\n{}",
            unexpected.join("\n")
        );
    }
}

#[test]
fn scaled_object_matches_kedas_crd_schema() {
    must(
        tool("python")
            .arg("tests/contract/yaml_checks.py")
            .args(["crd", "deploy/schemas/keda.sh_scaledobject_v1alpha1.json"])
            .args(["keda.sh/v1alpha1", "ScaledObject"])
            .args(manifests()),
        "validate the ScaledObject against KEDA's CRD schema",
    );
    // The check bites: a misspelt field is refused.
    let broken = scratch("broken-worker.yaml");
    let worker = std::fs::read_to_string(root().join("deploy/k8s/worker.yaml")).expect("worker");
    std::fs::write(
        &broken,
        worker.replace("pollingInterval", "pollingIntervall"),
    )
    .expect("write");
    let out = output(
        tool("python")
            .arg("tests/contract/yaml_checks.py")
            .args(["crd", "deploy/schemas/keda.sh_scaledobject_v1alpha1.json"])
            .args(["keda.sh/v1alpha1", "ScaledObject"])
            .arg(&broken),
    );
    assert!(
        !out.status.success() && text(&out).contains("pollingIntervall"),
        "{}",
        text(&out)
    );
}

#[test]
fn compose_file_matches_the_compose_specification() {
    must(
        tool("check-jsonschema").args([
            "--builtin-schema",
            "vendor.compose-spec",
            "docker-compose.nats.yml",
        ]),
        "validate docker-compose.nats.yml against the Compose Specification",
    );
}

#[test]
fn deployment_yaml_reads_the_same_in_yaml_1_1_and_1_2_and_passes_yamllint() {
    let files = deployment_yaml();
    assert!(files.iter().any(|f| f.starts_with("deploy/prometheus/")));
    must(
        tool("python")
            .arg("tests/contract/yaml_checks.py")
            .arg("parse")
            .args(&files),
        "read every file alike with PyYAML (YAML 1.1) and ruamel.yaml (YAML 1.2)",
    );
    // yamllint's own defaults (no configuration file of ours), warnings counted as errors.
    must(
        tool("yamllint")
            .args(["--strict", "--no-warnings", "-d", "default"])
            .args(&files),
        "pass yamllint's default rules",
    );
}

/// The api and worker binaries on a test database and stream of their own.
/// Dropping it (a failed assertion too) stops both.
struct Binaries {
    api: Service,
    worker: Service,
    api_url: String,
    /// The console's port.
    admin_url: String,
    worker_metrics: String,
    db: common::TestDb,
    stream: String,
    /// The worker's durable consumer.
    consumer: String,
}

/// An API key for the contract runs: every entity and the metrics.
const KEY: &str = "contract-test-key-0123456789";
/// An API key for the console's contract run: the `admin` scope.
const ADMIN_KEY: &str = "contract-admin-key-0123456789";

impl Binaries {
    async fn start(keys: bool) -> Self {
        let db = common::TestDb::create().await;
        let id = common::unique();
        let stream = format!("CONTRACT_{id}");
        let consumer = format!("c_{id}");
        let (api_port, metrics_port, admin_port) = (
            support::servers::free_port(),
            support::servers::free_port(),
            support::servers::free_port(),
        );
        let worker = Service::spawn(
            "contract-worker",
            worker_command(&stream, &consumer, &db.url, metrics_port).env("RUST_LOG", "warn"),
        );
        let mut api = api_command(&stream, &db.url, api_port);
        api.env("RUST_LOG", "warn")
            .env("ADMIN_PORT", admin_port.to_string())
            .env("NATS_CONSUMER", &consumer);
        if keys {
            api.env(
                "API_KEYS",
                format!("contract:{KEY}:*|metrics,console:{ADMIN_KEY}:admin"),
            );
        }
        let api = Service::spawn("contract-api", &mut api);
        let mut b = Self {
            api,
            worker,
            api_url: format!("http://127.0.0.1:{api_port}"),
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            worker_metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
            db,
            stream,
            consumer,
        };
        let start = Duration::from_secs(60);
        b.api.wait_ok(&format!("{}/ready", b.api_url), start).await;
        b.worker.wait_ok(&b.worker_metrics, start).await;
        b
    }

    /// `/metrics` of the api (with the key when keys are on) and of the worker.
    async fn metrics(&self) -> (String, String) {
        let client = reqwest::Client::new();
        let api = client
            .get(format!("{}/metrics", self.api_url))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("api metrics")
            .text()
            .await
            .expect("text");
        let worker = reqwest::get(&self.worker_metrics)
            .await
            .expect("worker metrics")
            .text()
            .await
            .expect("text");
        (api, worker)
    }

    /// Waits until the worker has finished every message the stream stored: its consumer has
    /// been delivered the last one and has nothing pending or unacknowledged (a message is
    /// acknowledged once committed, terminated once dead-lettered; a group of requests is one
    /// message, so the worker's per-request counters cannot be compared with the stream).
    async fn drained(&self) {
        let nats = async_nats::connect(common::nats_url()).await.expect("nats");
        let js = async_nats::jetstream::new(nats);
        let start = Instant::now();
        loop {
            let mut stream = js.get_stream(&self.stream).await.expect("stream");
            let last = stream
                .info()
                .await
                .expect("stream info")
                .state
                .last_sequence;
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
                .get_consumer(&self.consumer)
                .await
                .expect("the worker's consumer");
            let info = consumer.info().await.expect("consumer info");
            if last > 0
                && info.delivered.stream_sequence >= last
                && info.num_pending == 0
                && info.num_ack_pending == 0
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the worker has not finished the stream's {last} messages: delivered up to {}, {} pending, {} unacknowledged",
                info.delivered.stream_sequence,
                info.num_pending,
                info.num_ack_pending
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn stop(self) {
        let Self {
            api,
            worker,
            db,
            stream,
            ..
        } = self;
        drop((api, worker));
        common::delete_streams(&stream).await;
        db.drop_db().await;
    }
}

/// The sum of every sample of `metric` in exposition `text`.
fn sum(metric: &str, text: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// schemathesis with `--checks all` against the running api (keys on), in two runs: every
/// operation but the batches with all phases including the stateful one (202 answers link to
/// the status lookup); then the batches, whose lines are judged one by one so that the
/// `negative_data_rejection` check gives way to the hooks' `batch_refuses_violating_lines`.
/// Afterwards the worker must have stored every message the api accepted: nothing
/// dead-lettered.
#[tokio::test(flavor = "multi_thread")]
async fn openapi_contract_holds_under_schemathesis() {
    let api = Binaries::start(true).await;
    let tally = scratch("batch-tally");
    let _ = std::fs::remove_file(&tally);
    let seed = std::env::var("NOMNOM_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let examples = std::env::var("NOMNOM_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "40".into());
    // `positive_data_acceptance` gives way to the hooks' `valid_messages_are_accepted`, which
    // also knows the one rule the JSON Schema cannot state (derived rows repeating a key).
    let runs: [&[&str]; 2] = [
        &[
            "--exclude-path-regex",
            "^/ingest/batch",
            "--exclude-checks",
            "positive_data_acceptance",
        ],
        &[
            "--include-path-regex",
            "^/ingest/batch",
            "--exclude-checks",
            "negative_data_rejection,positive_data_acceptance",
            "--phases",
            "examples,coverage,fuzzing",
        ],
    ];
    for run in runs {
        let mut cmd = tool("schemathesis");
        cmd.env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
            .env("PYTHONPATH", root().join("tests/contract"))
            .env("NOMNOM_BATCH_TALLY", &tally)
            .args(["--config-file", "tests/contract/schemathesis.toml", "run"])
            .arg(format!("{}/api-docs/openapi.json", api.api_url))
            .args([
                "--checks",
                "all",
                "--no-color",
                "--generation-database",
                "none",
            ])
            .args(["--seed", &seed, "--max-examples", &examples])
            .args(["-H", &format!("Authorization: Bearer {KEY}")])
            .args(run);
        let out = output(&mut cmd);
        let report = text(&out);
        assert!(
            out.status.success(),
            "schemathesis {run:?} found problems (seed {seed}):\n{report}"
        );
        assert!(report.contains("No issues found"), "{report}");
    }
    // The console's endpoints, against their own document on ADMIN_PORT. `since` and the page
    // cursor are free text to the schema that the endpoints parse (a 400 for most strings), so
    // `positive_data_acceptance` cannot judge them; every other check runs. Replays publish real
    // copies of whatever dead letters exist (none here) and are recorded in the audit.
    let store = nomnom::store::pg::PgStore::open(&api.db.url, 1).expect("store");
    let mut seeded = Vec::new();
    for n in 0..2 {
        let id = uuid::Uuid::now_v7();
        nomnom::store::Store::record_dead_letter(
            &store,
            &nomnom::store::DeadLetter {
                message_id: id,
                // Of an entity this build no longer has: replay skips them (the fuzzer's
                // replays leave them in place), the other operations find them.
                entity: format!("Retired{n}"),
                body: bytes::Bytes::from_static(b"{\"retired\": true}"),
                class: nomnom::store::ReasonClass::UnknownEntity,
                reason: "seeded for the contract run: unknown entity".into(),
                attempts: 1,
                received_at: chrono::Utc::now(),
                position: Default::default(),
                record_id: format!("{id}:seed"),
            },
        )
        .await
        .expect("seeded");
        seeded.push(id.to_string());
    }
    let mut cmd = tool("schemathesis");
    cmd.env("NOMNOM_SHOWN_DEAD_LETTER", &seeded[0])
        .env("NOMNOM_DISCARDED_DEAD_LETTER", &seeded[1])
        .args([
            "--config-file",
            "tests/contract/schemathesis-console.toml",
            "run",
        ])
        .arg(format!("{}/api-docs/admin.json", api.admin_url))
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--no-color",
            "--generation-database",
            "none",
        ])
        .args(["--seed", &seed, "--max-examples", &examples])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_KEY}")]);
    let out = output(&mut cmd);
    let report = text(&out);
    assert!(
        out.status.success() && report.contains("No issues found"),
        "schemathesis on the console's document found problems (seed {seed}):\n{report}"
    );
    // The batch check judged real schema-violating batches.
    let judged = std::fs::read_to_string(&tally)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(judged > 0, "no schema-violating batch was judged");

    api.drained().await;
    let (_, worker) = api.metrics().await;
    let dead = sum("nomnom_worker_dead_lettered_total", &worker);
    let reasons = api.db.rows("SELECT reason FROM dead_letters LIMIT 5").await;
    assert_eq!(
        dead, 0.0,
        "accepted by the api, dead-lettered by the worker: {reasons:?}"
    );
    assert!(sum("nomnom_worker_processed_total", &worker) > 0.0);
    api.stop().await;
}

/// Metric names in PromQL text: every `nomnom_…` identifier.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("nomnom_") {
        let start = i + at;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if !preceded {
            into.insert(expr[start..end].to_string());
        }
        i = end;
    }
}

fn collect_exprs(v: &serde_json::Value, into: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => metric_names(e, into),
                    _ => collect_exprs(v, into),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, into)),
        _ => {}
    }
}

/// Every metric the dashboard and the alert rules query exists in `/metrics` of a running api
/// and worker (after a message, a refused message and a dead letter, so labelled series exist).
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_and_alert_rules_use_only_exported_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/nomnom.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let rules: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("deploy/prometheus/alerts.yaml")).expect("rules"),
    )
    .expect("rules YAML");
    let mut used = BTreeSet::new();
    collect_exprs(&dashboard, &mut used);
    let dashboard_count = used.len();
    let mut alert_names = BTreeSet::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            metric_names(rule["expr"].as_str().expect("expr"), &mut used);
            alert_names.insert(rule["alert"].as_str().expect("alert name").to_string());
        }
    }
    assert!(dashboard_count >= 6, "the dashboard queries {used:?}");
    for wanted in [
        "NomnomConsumerLagGrowing",
        "NomnomDeadLetters",
        "NomnomDatabaseOutage",
    ] {
        assert!(
            alert_names.contains(wanted),
            "no alert {wanted}: {alert_names:?}"
        );
    }

    let b = Binaries::start(false).await;
    let client = reqwest::Client::new();
    let order = support::order(1, 2);
    let posted = client
        .post(format!("{}/ingest/message/order", b.api_url))
        .json(&order)
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), 202);
    let refused = client
        .post(format!("{}/ingest/message/order", b.api_url))
        .json(&serde_json::json!({"order_key": 1}))
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 422);
    // A message only the worker can refuse (published around the api) dead-letters.
    let nats = async_nats::connect(common::nats_url()).await.expect("nats");
    let subject = format!("{}.order.raw", b.stream);
    let js = async_nats::jetstream::new(nats);
    js.publish(subject, "not json".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let start = Instant::now();
    let (api, worker) = loop {
        let (api, worker) = b.metrics().await;
        if sum("nomnom_worker_dead_lettered_total", &worker) >= 1.0
            && sum("nomnom_worker_processed_total", &worker) >= 1.0
        {
            break (api, worker);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no dead letter:\n{worker}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let exported: BTreeSet<String> = api
        .lines()
        .chain(worker.lines())
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = used.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {exported:?}"
    );
    b.stop().await;
}
