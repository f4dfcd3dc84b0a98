//! Structural checks of what ships beside the code (there is no Docker engine or cluster here):
//! the compose file, the Dockerfiles, the Kubernetes manifests, `.env.example`, and the
//! cargo-generate template files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nomnom::config::{API_ENV_VARS, WORKER_ENV_VARS};
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
        ("api", "Dockerfile.api", API_ENV_VARS),
        ("worker", "Dockerfile.worker", WORKER_ENV_VARS),
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
        assert!(text.contains(&format!("cargo build --release --bin {bin}")));
        let runtime = &text[text.rfind("FROM ").expect("runtime stage")..];
        assert!(
            runtime.contains("distroless") || runtime.contains("slim"),
            "small runtime image"
        );
        let user = runtime
            .lines()
            .find(|l| l.starts_with("USER "))
            .expect("USER in the runtime stage");
        assert!(!user.contains("root:root") && !user.ends_with(" 0") && !user.ends_with(" root"));
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
    let read_by_binaries: BTreeSet<&str> = API_ENV_VARS
        .iter()
        .chain(WORKER_ENV_VARS)
        .copied()
        .collect();
    assert_eq!(documented, read_by_binaries);
    let readme = read("README.md");
    for var in &read_by_binaries {
        assert!(
            readme.contains(&format!("`{var}`")),
            "README documents {var}"
        );
    }
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
    let known: BTreeSet<&str> = API_ENV_VARS
        .iter()
        .chain(WORKER_ENV_VARS)
        .copied()
        .collect();
    for k in config["data"].as_mapping().expect("data").keys() {
        assert!(
            known.contains(k.as_str().expect("key")),
            "ConfigMap sets unknown {k:?}"
        );
    }
    kind(&docs, "Secret", "database");

    let api = kind(&docs, "Deployment", "api");
    let c = &api["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(str_of(c, &["readinessProbe", "httpGet", "path"]), "/ready");
    assert_eq!(str_of(c, &["livenessProbe", "httpGet", "path"]), "/health");
    kind(&docs, "Service", "api");

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
        assert_eq!(
            render_defaults(&read(&rel)),
            read(target),
            "{rel} and {target} have drifted apart: make the same change in both"
        );
        assert!(
            hook.contains(&format!("\"{rel}\"")),
            "the post hook does not move {rel}"
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
