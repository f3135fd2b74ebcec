//! A throwaway PostgreSQL for the tests. Once per test binary a cluster is
//! made with the server binaries under /usr/lib/postgresql/*/bin (the
//! newest), on a free port of 127.0.0.1, TLS on with a CA made here,
//! password (SCRAM) authentication for TCP, and a watchdog that stops it
//! when the test binary exits. Each test takes a database of its own
//! ([`fresh_database`]). `COUNTERSIGN_TEST_PG=postgres://user:password@host:port/db`
//! points the tests at an existing server instead (the role needs
//! CREATEDB). Without either, the PostgreSQL tests fail, saying why: they
//! are never skipped in silence.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// The role the tests connect as over TCP, with a password.
const ROLE: &str = "countersign_test";

/// A PostgreSQL server the tests may create databases on.
pub struct Server {
    /// Host the tests connect to.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Role for the tests.
    pub user: String,
    /// That role's password.
    pub password: String,
    /// How the harness connects to create databases.
    admin: postgres::Config,
    admin_client: Mutex<Option<postgres::Client>>,
    /// Present when the harness runs the server itself.
    cluster: Option<Cluster>,
}

/// The shared server for this test binary.
pub fn shared() -> &'static Server {
    static SHARED: OnceLock<Server> = OnceLock::new();
    SHARED.get_or_init(|| match std::env::var("COUNTERSIGN_TEST_PG") {
        Ok(url) if !url.is_empty() => Server::external(&url),
        _ => Server::local(),
    })
}

/// A server this harness runs (for TLS settings and the CA): the shared one
/// when it is local, else one started for this purpose.
pub fn local() -> &'static Server {
    static LOCAL: OnceLock<Server> = OnceLock::new();
    if shared().cluster.is_some() {
        return shared();
    }
    LOCAL.get_or_init(Server::local)
}

/// The shared test database (created once): a DSN without password,
/// `sslmode=disable`.
pub fn database_url() -> String {
    static DB: OnceLock<String> = OnceLock::new();
    DB.get_or_init(|| shared().fresh_database()).clone()
}

/// A new, empty database on the shared server: a DSN without password.
pub fn fresh_database() -> String {
    shared().fresh_database()
}

/// The password of the role in the DSNs handed out here.
pub fn password() -> &'static str {
    &shared().password
}

impl Server {
    /// Starts a cluster of its own (stopped on drop): for a test that
    /// stops and restarts the database.
    pub fn local() -> Server {
        let cluster = Cluster::create();
        let password = format!("pw-{}", countersign::audit::record::new_action_id());
        let mut admin = postgres::Config::new();
        admin
            .host_path(&cluster.dir)
            .port(cluster.port)
            .user("postgres")
            .dbname("postgres");
        let mut client = admin
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to the test cluster's socket: {e}"));
        client
            .batch_execute(&format!(
                "CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{password}'"
            ))
            .expect("create the test role");
        Server {
            host: "127.0.0.1".into(),
            port: cluster.port,
            user: ROLE.into(),
            password,
            admin,
            admin_client: Mutex::new(Some(client)),
            cluster: Some(cluster),
        }
    }

    fn external(url: &str) -> Server {
        let admin = postgres::Config::from_str(url)
            .unwrap_or_else(|e| panic!("COUNTERSIGN_TEST_PG is not a PostgreSQL URL: {e}"));
        let host = match admin.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            _ => panic!("COUNTERSIGN_TEST_PG must name a TCP host"),
        };
        let password = admin
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .expect("COUNTERSIGN_TEST_PG must carry the role's password");
        Server {
            host,
            port: admin.get_ports().first().copied().unwrap_or(5432),
            user: admin
                .get_user()
                .expect("COUNTERSIGN_TEST_PG names no user")
                .into(),
            password,
            admin,
            admin_client: Mutex::new(None),
            cluster: None,
        }
    }

    /// The DSN of database `db` for the tests' role (no password in it).
    pub fn dsn(&self, db: &str) -> String {
        let mode = if self.cluster.is_some() {
            "disable"
        } else {
            "prefer"
        };
        format!(
            "postgres://{}@{}:{}/{db}?sslmode={mode}",
            self.user, self.host, self.port
        )
    }

    /// Creates an empty database; returns its DSN.
    pub fn fresh_database(&self) -> String {
        let name = format!(
            "test_{}",
            &countersign::audit::record::new_action_id()[..16]
        );
        self.admin_exec(&format!("CREATE DATABASE {name} OWNER {}", self.user));
        self.dsn(&name)
    }

    /// Runs SQL as the harness's administrator (superuser on a local
    /// cluster), in the maintenance database.
    pub fn admin_exec(&self, sql: &str) {
        let mut guard = self.admin_client.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(
                self.admin
                    .connect(postgres::NoTls)
                    .expect("admin connection"),
            );
        }
        let client = guard.as_mut().expect("just connected");
        client
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// A client on database `db` as the administrator, to look behind the
    /// store's back (what a DBA or an attacker with access would do).
    pub fn admin_client(&self, db: &str) -> postgres::Client {
        let mut cfg = self.admin.clone();
        cfg.dbname(db);
        cfg.connect(postgres::NoTls).expect("admin connection")
    }

    /// The CA that signed the local cluster's certificate (for
    /// `localhost` and 127.0.0.1).
    pub fn ca_file(&self) -> PathBuf {
        self.cluster().dir.join("ca.pem")
    }

    /// A CA file that did not sign the server's certificate.
    pub fn other_ca_file(&self) -> PathBuf {
        self.cluster().dir.join("other-ca.pem")
    }

    fn cluster(&self) -> &Cluster {
        self.cluster
            .as_ref()
            .expect("this test needs a cluster the harness runs itself")
    }

    /// Stops the server at once (like a crash: `-m immediate`).
    pub fn stop(&self) {
        self.cluster().pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }

    /// Starts it again on the same port with the same data.
    pub fn start(&self) {
        self.cluster().start();
    }
}

/// A cluster the harness runs: its directory (data, socket, log, certs).
struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// Removes the directory when the cluster is dropped.
    _tmp: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run_pg(&["stop", "-m", "immediate", "-w"]);
    }
}

/// The newest PostgreSQL server binaries on this machine.
fn server_binaries() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "the PostgreSQL tests need a PostgreSQL server: no initdb under /usr/lib/postgresql/*/bin. \
             Install it (apt-get install -y postgresql-15, as .ci/run does) or set \
             COUNTERSIGN_TEST_PG=postgres://user:password@host:port/db"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command run as the `postgres` OS user when the tests run as root
/// (the server refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn id_of(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the tests run as root, so they need a `postgres` OS user (installed with the postgresql package)"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Cluster {
    fn create() -> Cluster {
        let bin = server_binaries();
        let tmp = tempfile::Builder::new()
            .prefix("cs-pg-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        write_pki(&dir);
        if is_root() {
            let (uid, gid) = (id_of("-u"), id_of("-g"));
            for p in ["", "server.crt", "server.key"] {
                std::os::unix::fs::chown(dir.join(p), Some(uid), Some(gid)).expect("chown");
            }
        }
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-N",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Setup goes through the socket as the superuser; the tests come
        // over TCP with a password.
        std::fs::write(
            dir.join("data/pg_hba.conf"),
            "local all all trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n\
             host all all ::1/128 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        let mut cluster = Cluster {
            dir,
            bin,
            port: 0,
            _tmp: tmp,
        };
        let mut last = String::new();
        for _ in 0..3 {
            cluster.port = free_port();
            match cluster.try_start() {
                Ok(()) => {
                    cluster.watch_over_me();
                    return cluster;
                }
                Err(e) => last = e,
            }
        }
        panic!("cannot start the test PostgreSQL cluster: {last}");
    }

    fn server_options(&self) -> String {
        let d = self.dir.display();
        format!(
            "-p {} -k {d} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=300 \
             -c ssl=on -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key",
            self.port
        )
    }

    fn try_start(&self) -> Result<(), String> {
        let out = self.run_pg(&["start", "-w", "-t", "60", "-o", &self.server_options()])?;
        if out.status.success() {
            Ok(())
        } else {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            Err(format!(
                "{}{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn start(&self) {
        if let Err(e) = self.try_start() {
            panic!("cannot restart the test PostgreSQL cluster: {e}");
        }
    }

    fn run_pg(&self, args: &[&str]) -> Result<std::process::Output, String> {
        as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = self.run_pg(args).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A detached shell that stops the cluster and removes its directory
    /// once this test binary has exited, however it exited.
    fn watch_over_me(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let run_as = if is_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while [ -e /proc/{pid} ]; do sleep 1; done; \
             {run_as}'{pg_ctl}' -D '{data}' stop -m immediate >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = pg_ctl.display(),
            data = self.dir.join("data").display(),
            dir = self.dir.display(),
        );
        // `--fork`: setsid returns at once, leaving the shell in a session
        // of its own that outlives this process and its signals.
        let started = Command::new("setsid")
            .args(["--fork", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("start the cluster's watchdog");
        assert!(started.success(), "cannot start the cluster's watchdog");
    }
}

/// The server's certificate (for `localhost` and 127.0.0.1) signed by a
/// CA made here, and a second CA that signed nothing.
fn write_pki(dir: &Path) {
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA cert");
        (cert, Issuer::new(params, key))
    };
    let (ca_cert, issuer) = ca("countersign test CA");
    let (other_cert, _) = ca("some other CA");
    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&server_key, &issuer)
        .expect("server cert");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write CA");
    std::fs::write(dir.join("other-ca.pem"), other_cert.pem()).expect("write other CA");
    std::fs::write(dir.join("server.crt"), server.pem()).expect("write cert");
    let key = dir.join("server.key");
    std::fs::write(&key, server_key.serialize_pem()).expect("write key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
}

/// Waits until `probe` holds, up to `limit`.
pub fn wait_until(limit: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if probe() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    probe()
}
