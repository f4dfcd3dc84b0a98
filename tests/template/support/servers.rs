//! Servers a test starts for itself (so stopping them or configuring them disturbs no other
//! test): nats-server processes and PostgreSQL clusters on free ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on now, never the same twice in one test process (the kernel may
/// hand a port out again once its probe socket is closed, and two servers of one test must
/// not be given the same one).
pub(crate) fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub(crate) fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

pub(crate) use crate::common::process::signal;

/// A nats-server process of this test.
pub(crate) struct NatsNode {
    pub(crate) args: Vec<String>,
    pub(crate) port: u16,
    child: Option<Child>,
}

impl NatsNode {
    pub(crate) fn start(args: Vec<String>, port: u16) -> Self {
        let mut node = Self {
            args,
            port,
            child: None,
        };
        node.spawn();
        node
    }

    pub(crate) fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH");
        self.child = Some(child);
        let start = Instant::now();
        while !port_open(self.port) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `sig` (e.g. `-STOP`, `-CONT`) and leaves the process running.
    pub(crate) fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            signal(c, sig);
        }
    }

    /// Stops the server: SIGTERM (graceful) or SIGKILL.
    pub(crate) fn stop(&mut self, sig: &str) {
        if let Some(mut c) = self.child.take() {
            signal(&c, sig);
            let _ = c.wait();
        }
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        self.stop("-KILL");
    }
}

/// A PostgreSQL server of this test (`initdb` into a scratch directory, `pg_ctl` on a free
/// port), so stopping it disturbs no other test. Removed when dropped.
pub(crate) struct OwnPostgres {
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (initdb refuses root).
pub(crate) fn as_postgres(tool: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", tool]);
        c
    } else {
        Command::new(tool)
    }
}

impl OwnPostgres {
    pub(crate) fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Initialises a cluster, lets `configure` edit its data directory (it runs as the test
    /// user; files it writes are handed to `postgres` afterwards), then starts it.
    pub(crate) fn start_with(configure: impl FnOnce(&std::path::Path)) -> Self {
        let dir = std::env::temp_dir().join(format!("nomnom-pg-{}", crate::common::unique()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let _ = Command::new("chown")
            .args(["postgres:postgres", &dir.to_string_lossy()])
            .status();
        let data = dir.join("data");
        let ok = as_postgres("initdb")
            .args([
                "-D",
                &data.to_string_lossy(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ])
            .stdout(Stdio::null())
            .status()
            .expect("initdb on PATH")
            .success();
        assert!(ok, "initdb failed");
        configure(&data);
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres", &data.to_string_lossy()])
            .status();
        let pg = Self {
            dir,
            port: free_port(),
        };
        pg.pg_ctl_start();
        pg
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    pub(crate) fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let ok = as_postgres("pg_ctl")
            .args(["-D", &self.dir.join("data").to_string_lossy()])
            .args([
                "-o",
                &options,
                "-l",
                &self.dir.join("log").to_string_lossy(),
            ])
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl on PATH")
            .success();
        assert!(ok, "pg_ctl start failed");
    }

    pub(crate) fn pg_ctl_stop(&self, mode: &str) {
        let _ = as_postgres("pg_ctl")
            .args(["-D", &self.dir.join("data").to_string_lossy()])
            .args(["-m", mode, "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.pg_ctl_stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Certificates for a test's TLS servers, written as PEM files: a CA, a server certificate it
/// signed (for the given names), a client certificate it signed, and an unrelated CA.
pub(crate) struct TestPki {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// A CA that signed nothing here (a client trusting only it must refuse the server).
    pub other_ca: PathBuf,
    /// The server's certificate and key.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate (mutual TLS) and its key.
    pub client_cert: PathBuf,
    /// The client's key.
    pub client_key: PathBuf,
}

impl TestPki {
    /// Generates everything into `dir`; the server certificate is valid for `server_names`
    /// (DNS names or IP addresses).
    pub(crate) fn generate(dir: &std::path::Path, server_names: &[&str]) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        std::fs::create_dir_all(dir).expect("pki dir");
        let ca_of = |name: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.self_signed(&key).expect("CA certificate");
            (cert, key)
        };
        let (ca, ca_key) = ca_of("nomnom test CA");
        let (other, _) = ca_of("unrelated test CA");
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.extended_key_usages = vec![usage];
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params
                .signed_by(&key, &ca, &ca_key)
                .expect("leaf certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key_pem) = leaf(
            server_names.iter().map(|s| s.to_string()).collect(),
            ExtendedKeyUsagePurpose::ServerAuth,
            server_names.first().copied().unwrap_or("server"),
        );
        let (client_pem, client_key_pem) = leaf(
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            "nomnom client",
        );
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write pem");
            path
        };
        Self {
            ca: write("ca.pem", &ca.pem()),
            other_ca: write("other-ca.pem", &other.pem()),
            server_cert: write("server.pem", &server_pem),
            server_key: write("server-key.pem", &server_key_pem),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client-key.pem", &client_key_pem),
        }
    }
}

/// A nats-server of the test's own, started from a configuration file written into `dir`.
pub(crate) fn nats_with_config(dir: &std::path::Path, port: u16, config: &str) -> NatsNode {
    std::fs::create_dir_all(dir).expect("nats dir");
    let path = dir.join("nats.conf");
    std::fs::write(&path, config).expect("write nats.conf");
    // `-t` checks the configuration and says what is wrong with it.
    let check = Command::new("nats-server")
        .args(["-c", &path.to_string_lossy(), "-t"])
        .output()
        .expect("nats-server on PATH");
    assert!(
        check.status.success(),
        "nats-server refuses {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    NatsNode::start(vec!["-c".into(), path.to_string_lossy().into_owned()], port)
}
