//! A real Redis server (Debian `redis-server`, installed by `.ci/install-tools.sh`) as a child process on a
//! loopback port, for the shared rate-limit tests: started, killed, stalled (SIGSTOP) and started again
//! on the same port, and read with `redis-cli`.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::tools;

pub struct RedisServer {
    server: PathBuf,
    cli: PathBuf,
    pub port: u16,
    password: String,
    child: Option<Child>,
    /// With TLS: the directory holding `ca.pem`, `server.pem` and `server.key`.
    tls: Option<PathBuf>,
}

/// A certificate authority and a server certificate for 127.0.0.1 signed by it, made with `openssl` in
/// `dir` (`ca.pem`, `server.pem`, `server.key`).
pub fn make_certificates(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec: &[&str] = &[
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca: &[&str] = &[
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=lumenore-test-ca",
    ];
    openssl(&[&["req", "-x509"][..], ec, ca].concat());
    let server: &[&str] = &[
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ];
    openssl(&[&["req"][..], ec, server].concat());
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("san.cnf");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "san.cnf",
    ]);
}

impl RedisServer {
    /// Finds `redis-server` and `redis-cli` (None after a skip message locally; panics under CI).
    pub fn find() -> Option<(PathBuf, PathBuf)> {
        let server = tools::require("redis-server", tools::find("redis-server"))?;
        let cli = tools::require("redis-cli", tools::find("redis-cli"))?;
        Some((server, cli))
    }

    /// Starts a server with `password` on a free port, no persistence; waits until it answers PING.
    pub fn start(binaries: &(PathBuf, PathBuf), password: &str) -> RedisServer {
        Self::launch(binaries, password, None)
    }

    /// Starts a server that speaks TLS only, with the certificates [`make_certificates`] made in `dir`
    /// (clients are not asked for certificates).
    pub fn start_tls(binaries: &(PathBuf, PathBuf), password: &str, dir: &std::path::Path) -> RedisServer {
        Self::launch(binaries, password, Some(dir.to_path_buf()))
    }

    fn launch(binaries: &(PathBuf, PathBuf), password: &str, tls: Option<PathBuf>) -> RedisServer {
        let mut server = RedisServer {
            server: binaries.0.clone(),
            cli: binaries.1.clone(),
            port: crate::free_port(),
            password: password.to_string(),
            child: None,
            tls,
        };
        server.start_again();
        server
    }

    /// `redis://127.0.0.1:PORT` (the password goes in its own variable).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port (after [`Self::kill`]), empty.
    pub fn start_again(&mut self) {
        let port = self.port.to_string();
        let listen: Vec<String> = match &self.tls {
            None => vec!["--port".into(), port],
            Some(dir) => {
                let file = |name: &str| dir.join(name).display().to_string();
                vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port,
                    "--tls-cert-file".into(),
                    file("server.pem"),
                    "--tls-key-file".into(),
                    file("server.key"),
                    "--tls-ca-cert-file".into(),
                    file("ca.pem"),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ]
            }
        };
        let child = Command::new(&self.server)
            .args(&listen)
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                &self.password,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not answer PING");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Changes the running server's password (`CONFIG SET requirepass`): connections made with the old
    /// one stay, new ones need the new one.
    pub fn set_password(&mut self, password: &str) {
        let answer = self.cli(&["CONFIG", "SET", "requirepass", password]);
        assert_eq!(answer.trim(), "OK", "CONFIG SET requirepass");
        self.password = password.to_string();
    }

    /// SIGKILL: the store is gone, connections reset.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP or SIGCONT: a stalled store keeps its connections open and answers nothing.
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success(), "kill -{signal}");
        }
    }

    /// One `redis-cli` command; its standard output (empty when the server does not answer in 5 s).
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("timeout");
        command
            .arg("5")
            .arg(&self.cli)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "--no-auth-warning",
                "-a",
            ])
            .arg(&self.password);
        if let Some(dir) = &self.tls {
            command.arg("--tls").arg("--cacert").arg(dir.join("ca.pem"));
        }
        let output = command.args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The names of the keys matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.cli(&["--raw", "KEYS", pattern])
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(String::from)
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.signal("CONT");
        self.kill();
    }
}
