//! What ships beside the code does what this project needs (there is no Docker engine or
//! cluster here): the compose file, the Dockerfiles, the Kubernetes manifests, `.env.example`,
//! and the cargo-generate template files. Whether they are valid and clean at all is for the
//! outside tools in tests/template/contract.rs (hadolint, kubernetes-validate, yamllint, the compose
//! and KEDA schemas).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml_docs(path: &str) -> Vec<Value> {
    let text = read(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("{} is not a string: {cur:?}", path.join(".")))
}

fn env_keys(service: &Value) -> BTreeSet<String> {
    service["environment"]
        .as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_file_runs_the_pipeline_and_scales_workers() {
    let doc = &yaml_docs("docker-compose.nats.yml")[0];
    let services = &doc["services"];
    let nats = &services["nats"];
    let command = serde_yaml_ng::to_string(&nats["command"]).expect("command");
    assert!(command.contains("--jetstream"), "JetStream on");
    assert!(command.contains("--store_dir"), "file storage");
    assert!(command.contains("8222"), "monitoring port");
    assert!(nats["volumes"].as_sequence().is_some_and(|v| !v.is_empty()));
    assert!(nats["healthcheck"]["test"].is_sequence());
    let postgres = &services["postgres"];
    assert!(
        postgres["volumes"]
            .as_sequence()
            .is_some_and(|v| !v.is_empty())
    );
    assert!(postgres["healthcheck"]["test"].is_sequence());

    for (name, dockerfile, known) in [
        ("api", "Dockerfile.api", nomnom::api::env_vars()),
        ("worker", "Dockerfile.worker", nomnom::worker::env_vars()),
    ] {
        let s = &services[name];
        assert_eq!(str_of(s, &["build", "context"]), ".");
        assert_eq!(str_of(s, &["build", "dockerfile"]), dockerfile);
        for dep in ["nats", "postgres"] {
            assert_eq!(
                str_of(s, &["depends_on", dep, "condition"]),
                "service_healthy",
                "{name} → {dep}"
            );
        }
        let keys = env_keys(s);
        for k in &keys {
            assert!(
                known.contains(&k.as_str()),
                "{name} sets {k}, which it does not read"
            );
        }
        for required in ["NATS_URL", "NATS_STREAM", "DATABASE_URL"] {
            assert!(keys.contains(required), "{name} needs {required}");
        }
        assert_eq!(
            str_of(s, &["environment", "NATS_STREAM"]),
            nomnom::defaults::STREAM
        );
    }
    assert!(
        serde_yaml_ng::to_string(&services["api"]["ports"])
            .expect("ports")
            .contains("8080:8080")
    );
    // NATS and PostgreSQL are reachable from this machine only, and their passwords come from
    // .env (compose fails with a message when one is missing), never from the file.
    for name in ["nats", "postgres"] {
        for port in services[name]["ports"].as_sequence().expect("ports") {
            let port = port.as_str().expect("port string");
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name} publishes {port} beyond 127.0.0.1"
            );
        }
    }
    assert!(
        str_of(postgres, &["environment", "POSTGRES_PASSWORD"])
            .starts_with("${POSTGRES_PASSWORD:?")
    );
    assert!(
        command.contains("${NATS_SERVER_PASSWORD:?"),
        "NATS requires a password from .env"
    );
    for name in ["api", "worker"] {
        let url = str_of(&services[name], &["environment", "DATABASE_URL"]);
        assert!(url.contains("${POSTGRES_PASSWORD:?"), "{name}: {url}");
        assert_eq!(
            str_of(&services[name], &["environment", "NATS_PASSWORD"]),
            "${NATS_SERVER_PASSWORD:?set NATS_SERVER_PASSWORD in .env}"
        );
    }
    let worker = &services["worker"];
    assert!(
        worker["container_name"].is_null(),
        "--scale needs no container_name"
    );
    assert!(
        worker["ports"].is_null(),
        "--scale needs no fixed host port"
    );
}

#[test]
fn dockerfiles_are_multi_stage_cached_small_and_non_root() {
    for bin in ["api", "worker"] {
        let text = read(&format!("Dockerfile.{bin}"));
        let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert!(froms.len() >= 3, "{bin}: multi-stage");
        let cook = text
            .find("cargo chef cook")
            .expect("dependency-caching layer");
        let copy_all = text.rfind("COPY . .").expect("sources copied");
        assert!(
            cook < copy_all,
            "{bin}: dependencies are built before the sources are copied"
        );
        assert!(text.contains(&format!("cargo build --release --locked --bin {bin}")));
        assert!(text.contains("cargo chef cook --release --locked"));
        // Tags pinned (not `latest`), shell form and the like: hadolint, in tests/template/contract.rs.
        let runtime = &text[text.rfind("FROM ").expect("runtime stage")..];
        assert!(
            runtime.contains("distroless") || runtime.contains("slim"),
            "small runtime image"
        );
        let user = runtime
            .lines()
            .find(|l| l.starts_with("USER "))
            .expect("USER in the runtime stage");
        let id = user.trim_start_matches("USER ").trim();
        assert!(
            id.split(':').all(|n| n.parse::<u32>().is_ok_and(|n| n > 0)),
            "{bin}: USER {id} must be a numeric non-root uid:gid"
        );
        assert!(
            runtime.contains("HEALTHCHECK")
                && runtime.contains(&format!("\"/app/{bin}\", \"healthcheck\""))
        );
        assert!(runtime.contains(&format!("ENTRYPOINT [\"/app/{bin}\"]")));
    }
    assert!(Path::new(&root().join(".dockerignore")).exists());
}

#[test]
fn env_example_documents_exactly_the_variables_read() {
    let text = read(".env.example");
    let documented: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .filter_map(|l| l.split('=').next())
        .collect();
    let read_by_binaries: BTreeSet<&str> = nomnom::api::env_vars()
        .into_iter()
        .chain(nomnom::worker::env_vars())
        .collect();
    // Variables only docker compose reads (from .env), each used by the compose file.
    let compose_only = ["POSTGRES_PASSWORD", "NATS_SERVER_PASSWORD"];
    let compose = read("docker-compose.nats.yml");
    for var in compose_only {
        assert!(compose.contains(&format!("${{{var}")), "compose uses {var}");
    }
    let documented: BTreeSet<&str> = documented
        .into_iter()
        .filter(|v| !compose_only.contains(v))
        .collect();
    assert_eq!(documented, read_by_binaries);
    let operations = read("docs/OPERATIONS.md");
    for var in &read_by_binaries {
        assert!(
            operations.contains(&format!("`{var}`")),
            "docs/OPERATIONS.md documents {var}"
        );
    }
}

/// Every workload runs non-root with a numeric user, a read-only root filesystem, no
/// capabilities, RuntimeDefault seccomp and resources; images carry a version tag; each has a
/// PodDisruptionBudget and a NetworkPolicy; credentials come from Secrets.
fn hardened(docs: &[Value]) {
    for (kind_name, name) in [
        ("StatefulSet", "nats"),
        ("Deployment", "api"),
        ("Deployment", "worker"),
    ] {
        let w = kind(docs, kind_name, name);
        let pod = &w["spec"]["template"]["spec"];
        let sc = &pod["securityContext"];
        assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true), "{name}");
        assert!(sc["runAsUser"].as_u64().is_some_and(|u| u > 0), "{name}");
        assert_eq!(str_of(sc, &["seccompProfile", "type"]), "RuntimeDefault");
        for c in pod["containers"].as_sequence().expect("containers") {
            let csc = &c["securityContext"];
            assert_eq!(
                csc["readOnlyRootFilesystem"].as_bool(),
                Some(true),
                "{name}"
            );
            assert_eq!(
                csc["allowPrivilegeEscalation"].as_bool(),
                Some(false),
                "{name}"
            );
            assert_eq!(
                csc["capabilities"]["drop"][0].as_str(),
                Some("ALL"),
                "{name}"
            );
            let image = str_of(c, &["image"]);
            assert!(
                image.contains(':') && !image.ends_with(":latest"),
                "{name}: image {image} has no version tag"
            );
            assert!(c["resources"]["requests"]["memory"].is_string(), "{name}");
            assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
            for e in c["env"].as_sequence().into_iter().flatten() {
                let var = e["name"].as_str().unwrap_or("");
                if var.contains("PASSWORD") || var == "DATABASE_URL" {
                    assert!(
                        e["valueFrom"]["secretKeyRef"]["name"].is_string(),
                        "{name}: {var} must come from a Secret"
                    );
                }
            }
        }
        let pdb = kind(docs, "PodDisruptionBudget", name);
        assert_eq!(
            str_of(pdb, &["spec", "selector", "matchLabels", "app"]),
            name
        );
        let policy = kind(docs, "NetworkPolicy", name);
        assert_eq!(
            str_of(policy, &["spec", "podSelector", "matchLabels", "app"]),
            name
        );
    }
    let api = kind(docs, "Deployment", "api");
    let env = &api["spec"]["template"]["spec"]["containers"][0]["env"];
    let value = |var: &str| {
        env.as_sequence()
            .expect("env")
            .iter()
            .find(|e| e["name"].as_str() == Some(var))
            .and_then(|e| e["value"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        value("REQUIRE_AUTH"),
        "true",
        "production refuses to run open"
    );
    assert!(!value("API_KEYS_FILE").is_empty());
    assert!(!value("METRICS_PORT").is_empty());
    // The api takes HTTP from the ingress controller only.
    let api_policy = kind(docs, "NetworkPolicy", "api");
    let from = serde_yaml_ng::to_string(&api_policy["spec"]["ingress"][0]).expect("yaml");
    assert!(
        from.contains("ingress-nginx") && from.contains("8080"),
        "{from}"
    );
}

fn kind<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn kubernetes_manifests_deploy_nats_api_and_keda_scaled_workers() {
    let kustomization = &yaml_docs("deploy/k8s/kustomization.yaml")[0];
    let mut docs = Vec::new();
    for r in kustomization["resources"].as_sequence().expect("resources") {
        docs.extend(yaml_docs(&format!(
            "deploy/k8s/{}",
            r.as_str().expect("file")
        )));
    }
    let nats = kind(&docs, "StatefulSet", "nats");
    assert_eq!(nats["spec"]["replicas"].as_u64(), Some(3));
    let conf = str_of(
        kind(&docs, "ConfigMap", "nats-config"),
        &["data", "nats.conf"],
    );
    assert!(conf.contains("jetstream") && conf.contains("cluster") && conf.contains("8222"));

    let config = kind(&docs, "ConfigMap", "app-config");
    assert_eq!(str_of(config, &["data", "NATS_STREAM_REPLICAS"]), "3");
    let known: BTreeSet<&str> = nomnom::api::env_vars()
        .into_iter()
        .chain(nomnom::worker::env_vars())
        .collect();
    for k in config["data"].as_mapping().expect("data").keys() {
        assert!(
            known.contains(k.as_str().expect("key")),
            "ConfigMap sets unknown {k:?}"
        );
    }
    // No Secret is part of what the kustomization applies (no password is committed); the
    // example lists the ones the manifests read, with placeholders only.
    assert!(
        docs.iter().all(|d| d["kind"].as_str() != Some("Secret")),
        "Secrets belong outside the repository"
    );
    let secrets = yaml_docs("deploy/k8s/secrets.example.yaml");
    for name in ["database", "nats-users", "api-keys"] {
        let secret = kind(&secrets, "Secret", name);
        let text = serde_yaml_ng::to_string(&secret["stringData"]).expect("yaml");
        assert!(
            text.contains("REPLACE_ME"),
            "{name} holds placeholders only"
        );
    }
    hardened(&docs);

    let worker = kind(&docs, "Deployment", "worker");
    let w = &worker["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(str_of(w, &["readinessProbe", "httpGet", "path"]), "/ready");
    assert_eq!(str_of(w, &["livenessProbe", "httpGet", "path"]), "/health");

    let api = kind(&docs, "Deployment", "api");
    let c = &api["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(str_of(c, &["readinessProbe", "httpGet", "path"]), "/ready");
    assert_eq!(str_of(c, &["livenessProbe", "httpGet", "path"]), "/health");
    // The console listens on the pod's loopback and no Service, port or policy leads to it.
    let env_value = |name: &str| {
        c["env"]
            .as_sequence()
            .expect("env")
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("the api sets {name}"))
            .to_string()
    };
    let admin_port: u64 = env_value("ADMIN_PORT").parse().expect("port");
    assert!(
        env_value("ADMIN_HOST")
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    );
    let numbers = |ports: &Value, field: &str| -> Vec<u64> {
        ports
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|p| p[field].as_u64())
            .collect()
    };
    assert!(!numbers(&c["ports"], "containerPort").contains(&admin_port));
    let service = kind(&docs, "Service", "api");
    assert!(!numbers(&service["spec"]["ports"], "port").contains(&admin_port));
    assert!(!numbers(&service["spec"]["ports"], "targetPort").contains(&admin_port));
    let policy = docs
        .iter()
        .find(|d| {
            d["kind"].as_str() == Some("NetworkPolicy")
                && d["spec"]["podSelector"]["matchLabels"]["app"].as_str() == Some("api")
        })
        .expect("the api's NetworkPolicy");
    for rule in policy["spec"]["ingress"].as_sequence().expect("ingress") {
        assert!(
            !numbers(&rule["ports"], "port").contains(&admin_port),
            "{rule:?}"
        );
    }

    let worker = kind(&docs, "Deployment", "worker");
    for d in [api, worker] {
        let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
        let db = env
            .as_sequence()
            .expect("env")
            .iter()
            .find(|e| e["name"].as_str() == Some("DATABASE_URL"))
            .expect("DATABASE_URL");
        assert_eq!(
            str_of(db, &["valueFrom", "secretKeyRef", "name"]),
            "database"
        );
    }
    let scaled = kind(&docs, "ScaledObject", "worker");
    assert_eq!(
        str_of(scaled, &["spec", "scaleTargetRef", "name"]),
        "worker"
    );
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(str_of(trigger, &["type"]), "nats-jetstream");
    assert!(str_of(trigger, &["metadata", "natsServerMonitoringEndpoint"]).ends_with(":8222"));
    assert_eq!(
        str_of(trigger, &["metadata", "stream"]),
        str_of(config, &["data", "NATS_STREAM"])
    );
    assert_eq!(
        str_of(trigger, &["metadata", "consumer"]),
        str_of(config, &["data", "NATS_CONSUMER"])
    );
    assert!(
        str_of(trigger, &["metadata", "lagThreshold"])
            .parse::<u64>()
            .is_ok()
    );
}

/// `text` without its template-only blocks (lines from `# template-only {` to
/// `# } template-only`): what a generated project does not get.
fn without_template_only(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        match line.trim() {
            "# template-only {" => inside = true,
            "# } template-only" => inside = false,
            _ if !inside => out.push_str(line),
            _ => {}
        }
    }
    out
}

/// Templates that are not their sibling rendered: the generated project's own README (the
/// template repository's README.md tells the template's story).
const OWN_TEMPLATES: &[&str] = &["README.md.template"];

/// Renders a template with the defaults the repository uses.
fn render_defaults(text: &str) -> String {
    text.replace("{{project-name}}", "nomnom")
        .replace("{{stream_name}}", nomnom::defaults::STREAM)
        .replace("{{database_name}}", nomnom::defaults::DATABASE)
}

fn template_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() && name != "target" && name != ".git" {
            template_files(&p, out);
        } else if name.ends_with(".template") {
            out.push(p);
        }
    }
}

#[test]
fn each_template_renders_to_the_file_it_replaces() {
    let mut templates = Vec::new();
    template_files(&root(), &mut templates);
    templates.sort();
    if templates.is_empty() {
        // A generated project: the post hook already moved the templates into place.
        return;
    }
    let hook = read("hooks/post-generate.rhai");
    for t in &templates {
        let rel = t
            .strip_prefix(root())
            .expect("inside")
            .to_string_lossy()
            .into_owned();
        let target = rel.trim_end_matches(".template");
        assert!(
            hook.contains(&format!("\"{rel}\"")),
            "the post hook does not move {rel}"
        );
        if OWN_TEMPLATES.contains(&rel.as_str()) {
            continue;
        }
        assert_eq!(
            render_defaults(&read(&rel)),
            without_template_only(&read(target)),
            "{rel} and {target} have drifted apart: make the same change in both"
        );
    }
    let config: toml::Value =
        toml::from_str(&read("cargo-generate.toml")).expect("cargo-generate.toml");
    for (name, default) in [
        ("stream_name", nomnom::defaults::STREAM),
        ("database_name", nomnom::defaults::DATABASE),
    ] {
        let p = &config["placeholders"][name];
        assert_eq!(p["type"].as_str(), Some("string"));
        assert_eq!(p["default"].as_str(), Some(default));
        assert!(
            p["regex"]
                .as_str()
                .is_some_and(|r| r.starts_with('^') && r.ends_with('$'))
        );
    }
}

/// The generated project's README lists the entities it is generated with (every entity of
/// `entities/*.yaml`, with its tables), and both READMEs stay short (details live in `docs/`).
#[test]
fn the_readmes_are_short_and_the_generated_one_lists_the_example_entities() {
    for (file, limit) in [("README.md", 10_240), ("README.md.template", 10_240)] {
        if !root().join(file).exists() {
            // A generated project: its README was the template.
            continue;
        }
        let size = read(file).len();
        assert!(
            size <= limit,
            "{file} is {size} bytes: move details into docs/"
        );
    }
    if !root().join("README.md.template").exists() {
        return;
    }
    let readme = read("README.md.template");
    for table in nomnom::generated::TABLES {
        assert!(
            readme.contains(&format!("`{}`", table.entity))
                && readme.contains(&format!("`{}`", table.table)),
            "README.md.template does not list entity `{}` and its table `{}`",
            table.entity,
            table.table
        );
    }
    for entity in nomnom::generated::RootEntity::ALL {
        assert!(
            readme.contains(&format!("/ingest/message/{}", entity.snake_name())),
            "README.md.template does not list the route of `{entity}`"
        );
    }
}
