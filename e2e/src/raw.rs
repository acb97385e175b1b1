//! Raw-socket helpers for the hostile-client tests (`e2e/tests/adversarial.rs`, `e2e/tests/edge_*.rs`): the
//! kernel's figures of the connector process (`/proc/<pid>/status`, open descriptors), a keys file for
//! api-keys mode, request heads written by hand, and reading answers off a raw connection.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use tokio::{io::AsyncReadExt, net::TcpStream};

use crate::{connector::connector_binary, mcp::PROTOCOL_VERSION};

/// A kernel-level figure of `/proc/<pid>/status` in KiB (`VmHWM:` is the peak resident size).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Raises this process's soft open-files limit (children inherit it), via prlimit(1): no `unsafe` here.
pub fn raise_open_files_limit() {
    let pid = std::process::id().to_string();
    let _ = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=unlimited:"])
        .status();
}

/// Open file descriptors of a process (entries of `/proc/<pid>/fd`); 0 when it is gone.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// A keys file with one key for every tool; returns (directory guard, path, key).
pub fn api_keys() -> (tempdir::Dir, String, String) {
    let (dir, path, mut keys) = keys_file("adversarial-keys", &["adversary-test"]);
    (dir, path, keys.remove(0))
}

/// The hash of API key `key` for a keys file, made by the connector's own `hash-key --stdin`.
pub fn hash_key(key: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(connector_binary())
        .args(["hash-key", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("hash-key");
    writeln!(child.stdin.take().expect("stdin"), "{key}").expect("key");
    let output = child.wait_with_output().expect("hash-key output");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// A keys file in a scratch directory called `name`, with one key per id (all tools), each hashed by
/// the connector's own `hash-key`; returns the directory guard, the file's path and the keys, in order.
pub fn keys_file(name: &str, ids: &[&str]) -> (tempdir::Dir, String, Vec<String>) {
    let dir = tempdir::Dir::new(name);
    let mut entries = String::from("keys:\n");
    let mut keys = Vec::new();
    for id in ids {
        let key = format!(
            "lmk_{}_{id}_0123456789abcdef0123456789abcdef",
            name.replace('-', "_")
        );
        let hash = hash_key(&key);
        entries.push_str(&format!("  - id: {id}\n    hash: {hash}\n    tools: [\"*\"]\n"));
        keys.push(key);
    }
    let path = dir.path.join("keys.yaml");
    std::fs::write(&path, entries).expect("keys file");
    (dir, path.display().to_string(), keys)
}

/// A scratch directory removed on drop (the e2e crate has no tempfile dependency).
pub mod tempdir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }

    impl Dir {
        pub fn new(name: &str) -> Dir {
            let path = std::env::temp_dir().join(format!("lumenore-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&path).expect("scratch dir");
            Dir { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The head of a POST /mcp with the given declared length and extra header lines.
pub fn post_head(content_length: u64, extra: &str) -> String {
    format!(
        "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nmcp-protocol-version: {PROTOCOL_VERSION}\r\n\
         content-length: {content_length}\r\n{extra}\r\n"
    )
}

/// How a raw connection ended from the client's side.
#[derive(Debug)]
pub enum Ending {
    /// An HTTP answer with this status.
    Answer(u16),
    /// Closed or reset by the server without an answer.
    Closed,
    /// Still open when the bound ran out.
    StillOpen,
}

/// Reads until the server closes the connection or `bound` passes; returns what was read as an answer.
pub async fn read_to_close(stream: &mut TcpStream, bound: Duration) -> Ending {
    let mut received = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Ending::StillOpen,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&received).into_owned();
    match text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
    {
        Some(status) => Ending::Answer(status),
        None => Ending::Closed,
    }
}

/// Reads one answer (head and `content-length` bytes of body) without waiting for the connection to close.
pub async fn read_one_answer(stream: &mut TcpStream, bound: Duration) -> Option<(u16, String)> {
    let mut received = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                let status = head.get(9..12)?.parse().ok()?;
                return Some((status, body.to_string()));
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
}
