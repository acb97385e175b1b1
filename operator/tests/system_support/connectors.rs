//! Real `lumenore-connector` processes beside the operator, for the share-mode scenario (issue 23), and
//! the kubelet's part between them: projecting a ConfigMap's key into each pod's mounted file (written
//! beside and renamed into place, as the kubelet swaps its `..data` link, so a reader never sees half a
//! file). The binary is `lumenore_e2e::connector::connector_binary`'s.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use super::cluster::{free_port, http_get, must};

/// One connector process (embedded backend, loopback, no caller authentication); killed on drop.
pub struct ConnectorProc {
    child: Child,
    pub port: u16,
    /// Its mounted shares file.
    pub shares_file: PathBuf,
}

impl ConnectorProc {
    /// Starts a connector whose limits are `env`, reading its shares from `shares_file`; waits for
    /// `/readyz`.
    pub fn start(binary: &Path, shares_file: PathBuf, env: &[(&str, &str)]) -> ConnectorProc {
        let port = free_port();
        let child = Command::new(binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LUMENORE_BACKEND", "embedded")
            .env("LUMENORE_LISTEN", format!("127.0.0.1:{port}"))
            .env("LUMENORE_RATE_LIMIT_SHARES_FILE", &shares_file)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("lumenore-connector");
        let proc = ConnectorProc {
            child,
            port,
            shares_file,
        };
        must("a connector ready", Duration::from_secs(60), || {
            http_get(port, "/readyz").is_some_and(|(code, _)| code == 200)
        });
        proc
    }

    /// `lumenore_connector_rate_limit_shares`, as its `/metrics` says.
    pub fn shares(&self) -> Option<i64> {
        let (_, text) = http_get(self.port, "/metrics")?;
        text.lines()
            .find_map(|l| l.strip_prefix("lumenore_connector_rate_limit_shares "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Sends `calls` tool calls one after another; how many were admitted (200, not 429).
    pub fn admitted_of(&self, calls: usize) -> usize {
        (0..calls).filter(|_| self.tool_call() == Some(200)).count()
    }

    fn tool_call(&self) -> Option<u16> {
        tool_call(self.port)
    }
}

/// One `get_dataset_metadata` tool call to the connector on `port` (stateless, no session): the HTTP
/// status.
pub fn tool_call(port: u16) -> Option<u16> {
    let body = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "get_dataset_metadata", "arguments": {}}}))
    .ok()?;
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(&body).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

impl Drop for ConnectorProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the kubelet does for a ConfigMap volume: the key's value into the file, atomically.
pub fn project(value: &str, file: &Path) {
    let staged = file.with_extension("staged");
    std::fs::write(&staged, value).expect("stage the projected file");
    std::fs::rename(&staged, file).expect("swap the projected file in");
}
