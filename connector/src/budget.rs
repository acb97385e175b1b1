//! The memory budget: the worst case the configured caps allow, checked against the pod's memory limit.
//!
//! ```text
//! worst case = baseline                                  (resident after the backend loaded)
//!            + max_connections   × per connection        (HTTP buffers + kernel socket buffers)
//!            + max_body_reads    × per request           (body, parsed message, result and answer held)
//! must fit in  limit × (1 − HEADROOM)
//! ```
//!
//! Options left at their defaults are derived from the limit: connections get at most
//! [`CONNECTION_SHARE`] of it at start (before the listener opens), body reads what is left once the
//! backend loaded and the baseline is measured. An option set explicitly is kept; when the worst case it
//! allows does not fit, the connector refuses to start and names the options and the figures.
//! The per-item costs are upper bounds built from the limits they come from (buffer sizes, the JSON value
//! budget, the result limits); `docs/hardening.md` sets them beside measured figures. Pure, except
//! [`read_cgroup_limit`] and [`resident_bytes`], which read files they are given.

use std::{fmt, path::Path, str::FromStr};

use crate::{
    http::{
        MAX_SCRAPES,
        jsonrpc::MAX_JSON_VALUES,
        listener::{HTTP1_MAX_BUF_BYTES, HTTP2_MAX_STREAMS},
    },
    metrics::{CapLabels, Metrics, TermLabels},
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Part of the limit kept free: allocator fragmentation, freed pages not yet returned (jemalloc returns
/// them after its 10 s decay), thread stacks, the runtime's own growth.
pub const HEADROOM: f64 = 0.15;
/// Most of the usable memory connections may take when their cap is derived.
pub const CONNECTION_SHARE: f64 = 0.25;
/// Derived caps never go below these (a connector that can serve nobody is of no use): with less room
/// than they need the connector refuses to start.
pub const MIN_CONNECTIONS: usize = 16;
pub const MIN_BODY_READS: usize = 2;
/// A limit this large is "no limit" (cgroup v1 reports 2^63 rounded down to a page).
const UNLIMITED: u64 = 1 << 60;

/// Memory of one JSON value in a parsed tree (serde_json `Value`, its map entry or vector slot).
const PARSED_VALUE_BYTES: u64 = 96;
/// A kept backend result, as a tree, relative to the JSON bytes it is charged (`--max-result-bytes`):
/// one small number charged 2 bytes ("1,") is a 32-byte `Value` plus its slot.
const RESULT_TREE_FACTOR: u64 = 16;
/// Copies of the result as text at once: the tool's text content, the JSON-RPC answer body.
const RESULT_TEXT_COPIES: u64 = 2;
/// A backend answer being read: parsed in place up to 256 KiB, else through a queue of 8 chunks.
const BACKEND_READ_BYTES: u64 = 256 * KIB + 8 * 64 * KIB;
/// Connection state beyond buffers: the task, hyper/h2 state, HPACK table, one header list in flight.
const CONNECTION_STATE_BYTES: u64 = 16 * KIB + 16 * KIB + 4 * KIB;
/// HTTP/2: the frame read buffer and the write buffer (16 KiB frames).
const HTTP2_FRAME_BUFFERS_BYTES: u64 = 2 * 16 * KIB;
/// HTTP/2: one open stream without a body permit, its task and its small answer waiting for a window
/// (measured: 1.1 KiB each, 50 connections × 100 `/healthz` streams at a zero window, docs/hardening.md).
const HTTP2_STREAM_BYTES: u64 = 2 * KIB;
/// `/metrics` answers held at once ([`MAX_SCRAPES`]), at most 64 KiB of text each; added to the measured
/// baseline.
pub const SCRAPES_BYTES: u64 = MAX_SCRAPES as u64 * 64 * KIB;

/// `--memory-limit`: `auto` (the cgroup's, v2 or v1), `none` (no check), or a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryLimitSetting {
    Auto,
    None,
    Bytes(u64),
}

impl FromStr for MemoryLimitSetting {
    type Err = String;

    /// Accepts `auto`, `none`, bytes (`268435456`, as the Kubernetes Downward API gives
    /// `limits.memory`), or a number with a binary (`Ki`, `Mi`, `Gi`, `KiB`, `MiB`, `GiB`) or decimal
    /// (`k`, `M`, `G`, `kB`, `MB`, `GB`) suffix.
    fn from_str(value: &str) -> Result<Self, String> {
        let value = value.trim();
        match value.to_ascii_lowercase().as_str() {
            "auto" => return Ok(Self::Auto),
            "none" => return Ok(Self::None),
            _ => {}
        }
        let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
        let (digits, suffix) = value.split_at(split);
        let number: u64 = digits
            .parse()
            .map_err(|_| "must be auto, none, or a size such as 256Mi, 512MiB or 268435456".to_string())?;
        let unit = match suffix.trim() {
            "" => 1,
            "k" | "K" | "kB" | "KB" => 1000,
            "M" | "MB" => 1000 * 1000,
            "G" | "GB" => 1000 * 1000 * 1000,
            "Ki" | "KiB" => KIB,
            "Mi" | "MiB" => MIB,
            "Gi" | "GiB" => 1024 * MIB,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} (use Ki, Mi, Gi, KiB, MiB, GiB, k, M, G)"
                ));
            }
        };
        match number.checked_mul(unit) {
            Some(0) | None => Err("must be a positive size".into()),
            Some(bytes) => Ok(Self::Bytes(bytes)),
        }
    }
}

/// The memory limit the budget is checked against, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    pub bytes: u64,
    pub source: String,
}

impl Limit {
    /// What the budget may use: the limit less the headroom.
    pub fn usable(&self) -> u64 {
        (self.bytes as f64 * (1.0 - HEADROOM)) as u64
    }
}

/// Resolves `--memory-limit`: the cgroup of this process for `auto`, nothing for `none` or when no cgroup
/// limit is set.
pub fn resolve_limit(setting: MemoryLimitSetting) -> Option<Limit> {
    match setting {
        MemoryLimitSetting::None => None,
        MemoryLimitSetting::Bytes(bytes) => Some(Limit {
            bytes,
            source: "--memory-limit".into(),
        }),
        MemoryLimitSetting::Auto => {
            let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
            read_cgroup_limit(Path::new("/sys/fs/cgroup"), &cgroups)
        }
    }
}

/// The smallest memory limit on the way from this process's cgroup up to the root, cgroup v2
/// (`memory.max`) or v1 (`memory.limit_in_bytes`), under `root` (the cgroup file system mount). In a
/// container the mount usually shows the container's own cgroup at its root, so the mount root's file is
/// read too.
pub fn read_cgroup_limit(root: &Path, proc_self_cgroup: &str) -> Option<Limit> {
    let mut best: Option<Limit> = None;
    let mut consider = |file: std::path::PathBuf| {
        let Ok(text) = std::fs::read_to_string(&file) else {
            return;
        };
        let Ok(bytes) = text.trim().parse::<u64>() else {
            return; // "max": no limit at this level
        };
        if bytes >= UNLIMITED || best.as_ref().is_some_and(|best| best.bytes <= bytes) {
            return;
        }
        best = Some(Limit {
            bytes,
            source: file.display().to_string(),
        });
    };
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let (directory, file) = if controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else if controllers.split(',').any(|controller| controller == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut level = Path::new(path.trim_start_matches('/'));
        loop {
            consider(directory.join(level).join(file));
            match level.parent() {
                Some(parent) => level = parent,
                None => break,
            }
        }
    }
    best
}

/// Resident memory of this process now (`VmRSS`), in bytes.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status_field_bytes(&status, "VmRSS:")
}

fn status_field_bytes(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * KIB)
}

/// The kernel's default socket buffer sizes (`tcp_rmem` and `tcp_wmem`, middle values), charged to the
/// pod's memory cgroup for data a peer sent that was not read yet, and answers it did not take.
pub fn kernel_socket_bytes() -> u64 {
    let middle = |file: &str, fallback: u64| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|text| text.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(fallback)
    };
    middle("/proc/sys/net/ipv4/tcp_rmem", 128 * KIB) + middle("/proc/sys/net/ipv4/tcp_wmem", 16 * KIB)
}

/// Worst case of one open connection: connection state, the kernel's socket buffers, and the larger of
/// HTTP/1's read and write buffers (64 KiB each) and HTTP/2's frame buffers with every stream it may have
/// open. HTTP/2 request bodies and tool answers are counted per request: the body permit is held from a
/// body's first byte until its answer was sent, streams refused a permit are answered at once, and the
/// other answers are small (health, 401, 503) except `/metrics`, whose answers are capped in all
/// ([`SCRAPES_BYTES`]).
pub fn per_connection_bytes(kernel_socket_bytes: u64) -> u64 {
    let http1 = 2 * HTTP1_MAX_BUF_BYTES as u64;
    let http2 = HTTP2_FRAME_BUFFERS_BYTES + u64::from(HTTP2_MAX_STREAMS) * HTTP2_STREAM_BYTES;
    http1.max(http2) + CONNECTION_STATE_BYTES + kernel_socket_bytes
}

/// What one request holding a body permit may hold at once: its body, the parsed message (strings
/// copied, at most [`MAX_JSON_VALUES`] values), the kept result as a tree, its text copies, and for a
/// remote backend the answer being read.
pub fn per_request_bytes(max_request_bytes: usize, max_result_bytes: usize, remote_backend: bool) -> u64 {
    let body = max_request_bytes as u64;
    let values = (MAX_JSON_VALUES as u64).min(body / 2 + 1);
    let message = body + values * PARSED_VALUE_BYTES;
    let result = max_result_bytes as u64 * (RESULT_TREE_FACTOR + RESULT_TEXT_COPIES);
    let reading = if remote_backend { BACKEND_READ_BYTES } else { 0 };
    body + message + result + reading
}

/// The caps a budget decides, and whether each was set explicitly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    pub value: usize,
    pub explicit: bool,
}

/// The connection cap at start: an explicit one is kept; a default one is lowered to what
/// [`CONNECTION_SHARE`] of the usable memory holds, not below [`MIN_CONNECTIONS`].
pub fn connections(limit: Option<&Limit>, cap: Cap, per_connection: u64) -> usize {
    match limit {
        Some(limit) if !cap.explicit => {
            let share = (limit.usable() as f64 * CONNECTION_SHARE) as u64;
            let fits = (share / per_connection.max(1)) as usize;
            cap.value.min(fits).max(MIN_CONNECTIONS)
        }
        _ => cap.value,
    }
}

/// The budget once the baseline is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub limit: Option<Limit>,
    pub baseline: u64,
    pub connections: usize,
    pub per_connection: u64,
    pub body_reads: usize,
    pub per_request: u64,
}

impl Budget {
    pub fn connections_bytes(&self) -> u64 {
        self.connections as u64 * self.per_connection
    }

    pub fn requests_bytes(&self) -> u64 {
        self.body_reads as u64 * self.per_request
    }

    /// The worst case the caps allow.
    pub fn worst_case(&self) -> u64 {
        self.baseline + self.connections_bytes() + self.requests_bytes()
    }

    /// Exports the budget and the caps in `/metrics`.
    pub fn record(&self, metrics: &Metrics) {
        let mut terms = vec![
            ("baseline", self.baseline),
            ("per_connection", self.per_connection),
            ("connections", self.connections_bytes()),
            ("per_request", self.per_request),
            ("requests", self.requests_bytes()),
            ("worst_case", self.worst_case()),
        ];
        if let Some(limit) = &self.limit {
            terms.push(("limit", limit.bytes));
            terms.push(("usable", limit.usable()));
        }
        for (term, bytes) in terms {
            metrics
                .memory_budget
                .get_or_create(&TermLabels { term })
                .set(bytes as i64);
        }
        for (cap, value) in [
            ("max_connections", self.connections),
            ("max_concurrent_body_reads", self.body_reads),
        ] {
            metrics.caps.get_or_create(&CapLabels { cap }).set(value as i64);
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |bytes: u64| bytes as f64 / MIB as f64;
        write!(
            f,
            "worst case {:.1} MiB = baseline {:.1} MiB + {} connections × {:.0} KiB + {} body reads × {:.2} MiB",
            mib(self.worst_case()),
            mib(self.baseline),
            self.connections,
            self.per_connection as f64 / KIB as f64,
            self.body_reads,
            mib(self.per_request),
        )?;
        if let Some(limit) = &self.limit {
            write!(
                f,
                "; usable {:.1} MiB of the {:.1} MiB limit ({})",
                mib(limit.usable()),
                mib(limit.bytes),
                limit.source
            )?;
        }
        Ok(())
    }
}

/// The body-read cap once the backend loaded: an explicit one is kept, a default one lowered to what is
/// left of the usable memory after the baseline and the connections. Refuses (naming the options and the
/// figures) when even the smallest caps do not fit.
pub fn plan(
    limit: Option<Limit>,
    baseline: u64,
    connections: usize,
    per_connection: u64,
    body_reads: Cap,
    per_request: u64,
) -> Result<Budget, String> {
    let mut budget = Budget {
        limit,
        baseline,
        connections,
        per_connection,
        body_reads: body_reads.value,
        per_request,
    };
    let Some(limit) = budget.limit.clone() else {
        return Ok(budget);
    };
    let left = limit
        .usable()
        .saturating_sub(baseline + budget.connections_bytes());
    if !body_reads.explicit {
        let fits = (left / per_request.max(1)) as usize;
        budget.body_reads = body_reads.value.min(fits);
    }
    if budget.body_reads >= MIN_BODY_READS.min(body_reads.value) && budget.worst_case() <= limit.usable() {
        return Ok(budget);
    }
    let mut remedies = vec![format!(
        "raise the memory limit (--memory-limit, LUMENORE_MEMORY_LIMIT, or the pod's limits.memory) to at least \
         {} MiB",
        (baseline + budget.connections_bytes() + MIN_BODY_READS as u64 * per_request) as f64
            / (1.0 - HEADROOM)
            / MIB as f64
    )];
    if body_reads.explicit {
        remedies.push("lower --max-concurrent-body-reads (LUMENORE_MAX_CONCURRENT_BODY_READS)".into());
    }
    remedies.push("lower --max-connections (LUMENORE_MAX_CONNECTIONS)".into());
    remedies.push(
        "lower --max-request-bytes or --max-result-bytes (LUMENORE_MAX_REQUEST_BYTES, LUMENORE_MAX_RESULT_BYTES)"
            .into(),
    );
    Err(format!(
        "the memory budget does not fit: {budget}; {}",
        remedies.join(", or ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(mib: u64) -> Limit {
        Limit {
            bytes: mib * MIB,
            source: "test".into(),
        }
    }

    #[test]
    fn memory_limit_sizes_parse_kubernetes_and_binary_units() {
        assert_eq!("auto".parse(), Ok(MemoryLimitSetting::Auto));
        assert_eq!("None".parse(), Ok(MemoryLimitSetting::None));
        assert_eq!("268435456".parse(), Ok(MemoryLimitSetting::Bytes(256 * MIB)));
        assert_eq!("256Mi".parse(), Ok(MemoryLimitSetting::Bytes(256 * MIB)));
        assert_eq!("256MiB".parse(), Ok(MemoryLimitSetting::Bytes(256 * MIB)));
        assert_eq!("1Gi".parse(), Ok(MemoryLimitSetting::Bytes(1024 * MIB)));
        assert_eq!("300M".parse(), Ok(MemoryLimitSetting::Bytes(300_000_000)));
        assert!("0".parse::<MemoryLimitSetting>().is_err());
        assert!("12Qi".parse::<MemoryLimitSetting>().unwrap_err().contains("unit"));
        assert!("lots".parse::<MemoryLimitSetting>().is_err());
        assert!("99999999999999999999Gi".parse::<MemoryLimitSetting>().is_err());
    }

    #[test]
    fn cgroup_v2_limit_is_the_smallest_on_the_way_to_the_root() {
        let root = tempfile::tempdir().unwrap();
        let pod = root.path().join("kubepods/pod1");
        let container = pod.join("c1");
        std::fs::create_dir_all(&container).unwrap();
        std::fs::write(root.path().join("kubepods/memory.max"), "max\n").unwrap();
        std::fs::write(pod.join("memory.max"), format!("{}\n", 512 * MIB)).unwrap();
        std::fs::write(container.join("memory.max"), format!("{}\n", 256 * MIB)).unwrap();
        let found = read_cgroup_limit(root.path(), "0::/kubepods/pod1/c1\n").unwrap();
        assert_eq!(found.bytes, 256 * MIB);
        assert!(found.source.ends_with("kubepods/pod1/c1/memory.max"));
        // A namespaced mount: the process sees "/" and the limit is at the mount's root.
        let namespaced = tempfile::tempdir().unwrap();
        std::fs::write(namespaced.path().join("memory.max"), format!("{}\n", 300 * MIB)).unwrap();
        assert_eq!(
            read_cgroup_limit(namespaced.path(), "0::/\n").unwrap().bytes,
            300 * MIB
        );
        // "max" everywhere: no limit.
        std::fs::write(pod.join("memory.max"), "max\n").unwrap();
        std::fs::write(container.join("memory.max"), "max\n").unwrap();
        assert_eq!(read_cgroup_limit(root.path(), "0::/kubepods/pod1/c1\n"), None);
    }

    #[test]
    fn cgroup_v1_limit_is_read_from_the_memory_controller_and_unlimited_is_none() {
        let root = tempfile::tempdir().unwrap();
        let group = root.path().join("memory/docker/abc");
        std::fs::create_dir_all(&group).unwrap();
        std::fs::write(group.join("memory.limit_in_bytes"), format!("{}\n", 128 * MIB)).unwrap();
        let cgroups = "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n";
        assert_eq!(read_cgroup_limit(root.path(), cgroups).unwrap().bytes, 128 * MIB);
        std::fs::write(group.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        assert_eq!(read_cgroup_limit(root.path(), cgroups), None);
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_field_bytes(status, "VmRSS:"), Some(1024 * KIB));
        assert!(resident_bytes().unwrap() > 0);
    }

    #[test]
    fn a_default_connection_cap_is_derived_from_the_limit_and_an_explicit_one_is_kept() {
        let per = per_connection_bytes(144 * KIB);
        let derived = connections(
            Some(&limit(256)),
            Cap {
                value: 2048,
                explicit: false,
            },
            per,
        );
        assert!((MIN_CONNECTIONS..2048).contains(&derived), "{derived}");
        assert!(derived as u64 * per <= (limit(256).usable() as f64 * CONNECTION_SHARE) as u64);
        assert_eq!(
            connections(
                Some(&limit(256)),
                Cap {
                    value: 2048,
                    explicit: true
                },
                per
            ),
            2048
        );
        assert_eq!(
            connections(
                None,
                Cap {
                    value: 2048,
                    explicit: false
                },
                per
            ),
            2048
        );
        // A large limit keeps the default.
        assert_eq!(
            connections(
                Some(&limit(64 * 1024)),
                Cap {
                    value: 2048,
                    explicit: false
                },
                per
            ),
            2048
        );
    }

    #[test]
    fn default_body_reads_take_what_is_left_and_the_worst_case_fits() {
        let per_connection = per_connection_bytes(144 * KIB);
        let per_request = per_request_bytes(64 * 1024, 1024 * 1024, true);
        let connections = connections(
            Some(&limit(256)),
            Cap {
                value: 2048,
                explicit: false,
            },
            per_connection,
        );
        let budget = plan(
            Some(limit(256)),
            93 * MIB,
            connections,
            per_connection,
            Cap {
                value: 64,
                explicit: false,
            },
            per_request,
        )
        .unwrap();
        assert!(
            budget.body_reads >= MIN_BODY_READS && budget.body_reads < 64,
            "{budget}"
        );
        assert!(budget.worst_case() <= limit(256).usable(), "{budget}");
        // One more body read would not fit: the cap is the largest that does.
        assert!(budget.worst_case() + per_request > limit(256).usable());
        let text = budget.to_string();
        assert!(
            text.contains("body reads") && text.contains("256.0 MiB limit (test)"),
            "{text}"
        );
    }

    #[test]
    fn explicit_caps_that_do_not_fit_refuse_naming_the_options() {
        let per_request = per_request_bytes(1024 * 1024, 1024 * 1024, true);
        let error = plan(
            Some(limit(256)),
            93 * MIB,
            100,
            per_connection_bytes(144 * KIB),
            Cap {
                value: 64,
                explicit: true,
            },
            per_request,
        )
        .unwrap_err();
        assert!(error.contains("--max-concurrent-body-reads"), "{error}");
        assert!(error.contains("at least"), "{error}");
        // A baseline above the limit refuses even with defaults.
        let error = plan(
            Some(limit(64)),
            80 * MIB,
            16,
            per_connection_bytes(144 * KIB),
            Cap {
                value: 64,
                explicit: false,
            },
            per_request,
        )
        .unwrap_err();
        assert!(
            error.contains("does not fit") && error.contains("--memory-limit"),
            "{error}"
        );
        // Without a limit nothing is checked.
        assert!(
            plan(
                None,
                80 * MIB,
                2048,
                1,
                Cap {
                    value: 64,
                    explicit: true
                },
                per_request
            )
            .is_ok()
        );
    }

    #[test]
    fn the_per_request_cost_grows_with_the_limits_it_comes_from() {
        let small = per_request_bytes(64 * 1024, 1024 * 1024, false);
        assert!(per_request_bytes(1024 * 1024, 1024 * 1024, false) > small);
        assert!(per_request_bytes(64 * 1024, 2 * 1024 * 1024, false) > small);
        assert!(per_request_bytes(64 * 1024, 1024 * 1024, true) > small);
    }
}
