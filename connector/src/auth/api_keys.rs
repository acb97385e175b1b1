//! API keys: a keys file of SHA-256 hashes, checked in constant time, re-read when it changes.
//!
//! The file (YAML, or JSON which is read the same way) lists the keys:
//!
//! ```yaml
//! keys:
//!   - id: claude-desktop-alice          # caller id in audit events and rate limits
//!     hash: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//!     tools: ["*"]                      # or a list of tool names
//!   - id: reporting-bot
//!     hash: sha256:…
//!     tools: [get_dataset_metadata, get_metadata_info]
//!     revoked: true                     # optional, default false
//! ```
//!
//! Why SHA-256 and not a password hash: keys are 256-bit random tokens made by `lumenore-connector
//! hash-key`, so nothing can be guessed from a fast hash, and a slow hash (argon2, scrypt) would only make
//! every request expensive. The presented key is hashed once and compared with every entry using
//! `subtle`'s constant-time equality.
//!
//! Reload: the file is read every few seconds and swapped in when its content changed (Kubernetes Secret
//! volumes are updated by a symlink swap, which watching the resolved content handles). A file that cannot
//! be read or is invalid keeps the last good set and logs an error that names the rule and the entry
//! index or id, never a key or hash.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::{AuthFailure, Caller, CallerKind, ToolSet};
use crate::{
    metrics::{Metrics, OutcomeLabels},
    tools::ToolName,
};

/// The prefix of keys made by `hash-key`; any printable key is accepted, the prefix only helps secret
/// scanners recognise a leaked key.
pub const KEY_PREFIX: &str = "lmk_";
const HASH_PREFIX: &str = "sha256:";
const MAX_KEY_LEN: usize = 512;
const MAX_ID_LEN: usize = 128;

#[derive(Clone)]
struct Entry {
    id: Arc<str>,
    hash: [u8; 32],
    tools: ToolSet,
    revoked: bool,
}

/// A parsed keys file.
#[derive(Clone, Default)]
pub struct KeySet {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Ids only: hashes stay out of any output.
        f.debug_struct("KeySet")
            .field("ids", &self.entries.iter().map(|e| &*e.id).collect::<Vec<_>>())
            .finish()
    }
}

/// SHA-256 of a key, as bytes.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The `hash` value of a key in the keys file: `sha256:<64 lowercase hex digits>`.
pub fn hash_line(key: &str) -> String {
    format!("{HASH_PREFIX}{}", hex::encode(digest(key)))
}

/// A new random key: `lmk_` and 64 hex digits (256 bits from the operating system's CSPRNG via
/// `rand::rng()`, a ChaCha generator seeded and reseeded from the OS).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

impl KeySet {
    /// Parses and checks a keys file. Errors name the rule and the entry (index and id), never a value.
    pub fn parse(text: &str) -> Result<KeySet, String> {
        let document: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|error| {
                format!(
                    "not valid JSON (line {}, column {})",
                    error.line(),
                    error.column()
                )
            })?
        } else {
            serde_saphyr::from_str(text).map_err(|error| match error.location() {
                Some(location) => format!(
                    "not valid YAML (line {}, column {})",
                    location.line(),
                    location.column()
                ),
                None => "not valid YAML".to_string(),
            })?
        };
        let Some(top) = document.as_object() else {
            return Err("the file must be a mapping with a `keys` list".into());
        };
        if let Some(field) = top.keys().find(|k| *k != "keys") {
            return Err(format!(
                "unknown top-level field `{}` (only `keys` is allowed)",
                shown_field(field)
            ));
        }
        let Some(list) = top.get("keys").and_then(Value::as_array) else {
            return Err("`keys` must be a list".into());
        };
        let mut entries = Vec::with_capacity(list.len());
        let mut ids = HashSet::new();
        let mut hashes = HashSet::new();
        for (index, item) in list.iter().enumerate() {
            let entry = parse_entry(index, item)?;
            if !ids.insert(entry.id.clone()) {
                return Err(format!("entry {index} (id {}): duplicate id", entry.id));
            }
            if !hashes.insert(entry.hash) {
                return Err(format!(
                    "entry {index} (id {}): the same hash appears in another entry",
                    entry.id
                ));
            }
            entries.push(entry);
        }
        Ok(KeySet { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn revoked(&self) -> usize {
        self.entries.iter().filter(|e| e.revoked).count()
    }

    /// Finds the entry whose hash is the presented key's. Every entry is compared, in constant time.
    pub fn authenticate(&self, key: &str) -> Result<Caller, AuthFailure> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(AuthFailure::UnknownKey);
        }
        let presented = digest(key);
        let mut found: Option<&Entry> = None;
        for entry in &self.entries {
            let equal: bool = entry.hash.ct_eq(&presented).into();
            if equal {
                found = Some(entry);
            }
        }
        match found {
            None => Err(AuthFailure::UnknownKey),
            Some(entry) if entry.revoked => Err(AuthFailure::RevokedKey),
            Some(entry) => Ok(Caller {
                id: entry.id.clone(),
                tools: entry.tools,
                kind: CallerKind::ApiKey,
            }),
        }
    }
}

fn shown_field(name: &str) -> String {
    name.chars().take(40).filter(|c| !c.is_control()).collect()
}

fn parse_entry(index: usize, item: &Value) -> Result<Entry, String> {
    let Some(map) = item.as_object() else {
        return Err(format!(
            "entry {index}: must be a mapping with id, hash and tools"
        ));
    };
    let id = match map.get("id") {
        Some(Value::String(id)) => id.clone(),
        Some(_) => return Err(format!("entry {index}: `id` must be a string")),
        None => return Err(format!("entry {index}: `id` is missing")),
    };
    if id.is_empty()
        || id.len() > MAX_ID_LEN
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'))
    {
        return Err(format!(
            "entry {index}: `id` must be 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 - _ . @ :"
        ));
    }
    let at = |rule: &str| format!("entry {index} (id {id}): {rule}");
    for field in map.keys() {
        if !matches!(
            field.as_str(),
            "id" | "hash" | "tools" | "revoked" | "description"
        ) {
            return Err(at(&format!(
                "unknown field `{}` (allowed: id, hash, tools, revoked, description)",
                shown_field(field)
            )));
        }
    }
    let hash = match map.get("hash") {
        Some(Value::String(hash)) => parse_hash(hash).ok_or_else(|| {
            at("`hash` must be `sha256:` followed by 64 hex digits (see `lumenore-connector hash-key`)")
        })?,
        Some(_) => return Err(at("`hash` must be a string")),
        None => return Err(at("`hash` is missing")),
    };
    let tools = match map.get("tools") {
        Some(Value::String(star)) if star == "*" => ToolSet::ALL,
        Some(Value::Array(names)) if !names.is_empty() => {
            let mut set = ToolSet::EMPTY;
            for name in names {
                match name.as_str() {
                    Some("*") => set = ToolSet::ALL,
                    Some(name) => match ToolName::parse(name) {
                        Some(tool) => set = set.with(tool),
                        None => {
                            return Err(at(&format!(
                                "`tools` names an unknown tool `{}`",
                                shown_field(name)
                            )));
                        }
                    },
                    None => return Err(at("`tools` entries must be strings")),
                }
            }
            set
        }
        Some(_) => return Err(at("`tools` must be \"*\" or a non-empty list of tool names")),
        None => return Err(at("`tools` is missing (use [\"*\"] for every tool)")),
    };
    let revoked = match map.get("revoked") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(revoked)) => *revoked,
        Some(_) => return Err(at("`revoked` must be true or false")),
    };
    if let Some(description) = map.get("description")
        && !description.is_string()
    {
        return Err(at("`description` must be a string"));
    }
    Ok(Entry {
        id: Arc::from(id.as_str()),
        hash,
        tools,
        revoked,
    })
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex_digits = text.trim().strip_prefix(HASH_PREFIX)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut out).ok()?;
    Some(out)
}

/// What a reload check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Loaded {
        keys: usize,
        revoked: usize,
    },
    /// The file changed but could not be used; the last good set stays.
    Rejected(String),
}

/// The keys in force, and the file they come from.
pub struct ApiKeyStore {
    path: PathBuf,
    current: RwLock<Arc<KeySet>>,
    /// SHA-256 of the content last seen (good or bad), so a bad file is reported once, not every poll.
    seen: Mutex<[u8; 32]>,
    metrics: Metrics,
}

impl ApiKeyStore {
    /// Loads the file; at start a missing or invalid file is an error (there is no last good set yet).
    pub fn load(path: &Path, metrics: Metrics) -> Result<ApiKeyStore, String> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            format!(
                "cannot read the API keys file {}: {}",
                path.display(),
                error.kind()
            )
        })?;
        let set = KeySet::parse(&text)
            .map_err(|error| format!("the API keys file {} is invalid: {error}", path.display()))?;
        tracing::info!(keys = set.len(), revoked = set.revoked(), "API keys loaded");
        Ok(ApiKeyStore {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(set)),
            seen: Mutex::new(Sha256::digest(text.as_bytes()).into()),
            metrics,
        })
    }

    pub fn current(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn authenticate(&self, key: &str) -> Result<Caller, AuthFailure> {
        self.current().authenticate(key)
    }

    /// Re-reads the file and swaps the set in when the content changed and is valid.
    pub fn reload_if_changed(&self) -> Reload {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) => {
                // During a Secret update the file can be briefly missing; report once per state.
                let marker: [u8; 32] = Sha256::digest(format!("unreadable:{:?}", error.kind())).into();
                return self.reject_once(marker, format!("cannot read the file: {}", error.kind()));
            }
        };
        let fingerprint: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if self.seen() == fingerprint {
            return Reload::Unchanged;
        }
        match KeySet::parse(&text) {
            Ok(set) => {
                let (keys, revoked) = (set.len(), set.revoked());
                match self.current.write() {
                    Ok(mut guard) => *guard = Arc::new(set),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
                }
                self.set_seen(fingerprint);
                self.count("success");
                tracing::info!(keys, revoked, "API keys file changed: new keys in force");
                Reload::Loaded { keys, revoked }
            }
            Err(error) => self.reject_once(fingerprint, error),
        }
    }

    fn reject_once(&self, fingerprint: [u8; 32], error: String) -> Reload {
        if self.seen() != fingerprint {
            self.set_seen(fingerprint);
            self.count("error");
            tracing::error!(
                path = %self.path.display(),
                %error,
                "API keys file rejected: the last good keys stay in force"
            );
        }
        Reload::Rejected(error)
    }

    fn seen(&self) -> [u8; 32] {
        match self.seen.lock() {
            Ok(guard) => *guard,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    fn set_seen(&self, fingerprint: [u8; 32]) {
        match self.seen.lock() {
            Ok(mut guard) => *guard = fingerprint,
            Err(poisoned) => *poisoned.into_inner() = fingerprint,
        }
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .api_key_reloads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Polls the file every `interval` until `stop`. Polling (rather than file-system events) follows
    /// Kubernetes' symlink swaps of Secret volumes without special cases. Reading is blocking file I/O, so
    /// it runs on the blocking pool.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        interval: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = stop.cancelled() => return,
                }
                let store = store.clone();
                let _ = tokio::task::spawn_blocking(move || store.reload_if_changed()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entries: &str) -> String {
        format!("keys:\n{entries}")
    }

    #[test]
    fn generated_keys_are_long_random_and_prefixed() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 64);
        assert_eq!(hash_line(&a).len(), HASH_PREFIX.len() + 64);
    }

    #[test]
    fn known_key_authenticates_with_its_tools_and_others_fail() {
        let text = file(&format!(
            "  - id: alice\n    hash: {}\n    tools: [get_dataset_metadata]\n  - id: bob\n    hash: {}\n    tools: \"*\"\n    revoked: true\n",
            hash_line("key-a"),
            hash_line("key-b")
        ));
        let set = KeySet::parse(&text).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.revoked(), 1);
        let alice = set.authenticate("key-a").unwrap();
        assert_eq!(&*alice.id, "alice");
        assert!(alice.may_call(ToolName::GetDatasetMetadata));
        assert!(!alice.may_call(ToolName::NlqToData));
        assert_eq!(set.authenticate("key-b").unwrap_err(), AuthFailure::RevokedKey);
        assert_eq!(set.authenticate("key-c").unwrap_err(), AuthFailure::UnknownKey);
        assert_eq!(set.authenticate("").unwrap_err(), AuthFailure::UnknownKey);
        // A hash is not a key.
        assert_eq!(
            set.authenticate(&hash_line("key-a")).unwrap_err(),
            AuthFailure::UnknownKey
        );
    }

    #[test]
    fn json_files_are_read_too() {
        let text = format!(
            r#"{{"keys": [{{"id": "ci", "hash": "{}", "tools": ["*"]}}]}}"#,
            hash_line("k")
        );
        let set = KeySet::parse(&text).unwrap();
        assert_eq!(set.authenticate("k").unwrap().tools, ToolSet::ALL);
    }

    #[test]
    fn errors_name_the_rule_and_never_the_hash() {
        let hash = hash_line("secret-key");
        let cases = [
            (
                file(&format!("  - id: a\n    hash: {hash}\n")),
                "`tools` is missing",
            ),
            (
                file(&format!("  - id: a\n    hash: {hash}\n    tools: [drop_table]\n")),
                "unknown tool",
            ),
            (
                file("  - id: a\n    hash: md5:abc\n    tools: [\"*\"]\n"),
                "`hash` must be",
            ),
            (
                file(&format!("  - id: a\n    hash: {hash}\n    tools: []\n")),
                "non-empty",
            ),
            (
                file(&format!(
                    "  - id: a\n    hash: {hash}\n    tools: [\"*\"]\n  - id: a\n    hash: {}\n    tools: [\"*\"]\n",
                    hash_line("other")
                )),
                "duplicate id",
            ),
            (
                file(&format!(
                    "  - id: a\n    hash: {hash}\n    tools: [\"*\"]\n  - id: b\n    hash: {hash}\n    tools: [\"*\"]\n"
                )),
                "same hash",
            ),
            (
                file(&format!(
                    "  - id: a\n    hash: {hash}\n    tools: [\"*\"]\n    key: {hash}\n"
                )),
                "unknown field `key`",
            ),
            (
                file(&format!(
                    "  - id: \"a b\"\n    hash: {hash}\n    tools: [\"*\"]\n"
                )),
                "`id` must be",
            ),
            (format!("keys: [\n  {hash}"), "not valid YAML"),
            ("[]".to_string(), "mapping"),
            (format!("keys: []\nextra: {hash}\n"), "unknown top-level field"),
        ];
        for (text, expected) in cases {
            let error = KeySet::parse(&text).unwrap_err();
            assert!(error.contains(expected), "{error:?} should contain {expected:?}");
            assert!(!error.contains(&hash[8..20]), "error shows the hash: {error}");
        }
    }

    #[test]
    fn reload_swaps_good_files_and_keeps_the_last_good_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        let entry =
            |id: &str, key: &str| format!("  - id: {id}\n    hash: {}\n    tools: [\"*\"]\n", hash_line(key));
        std::fs::write(&path, file(&entry("one", "k1"))).unwrap();
        let store = ApiKeyStore::load(&path, Metrics::new()).unwrap();
        assert!(store.authenticate("k1").is_ok());
        assert_eq!(store.reload_if_changed(), Reload::Unchanged);

        std::fs::write(&path, file(&entry("two", "k2"))).unwrap();
        assert_eq!(store.reload_if_changed(), Reload::Loaded { keys: 1, revoked: 0 });
        assert_eq!(store.authenticate("k1").unwrap_err(), AuthFailure::UnknownKey);
        assert_eq!(&*store.authenticate("k2").unwrap().id, "two");

        std::fs::write(&path, "keys: [ broken").unwrap();
        assert!(matches!(store.reload_if_changed(), Reload::Rejected(_)));
        assert_eq!(&*store.authenticate("k2").unwrap().id, "two");
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(store.reload_if_changed(), Reload::Rejected(_)));
        assert!(store.authenticate("k2").is_ok());
        let metrics = store.metrics.encode();
        assert!(
            metrics.contains(r#"lumenore_connector_api_key_reloads_total{outcome="error"} 2"#),
            "{metrics}"
        );
    }

    #[test]
    fn start_fails_on_a_missing_or_invalid_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        assert!(
            ApiKeyStore::load(&path, Metrics::new())
                .err()
                .unwrap()
                .contains("cannot read")
        );
        std::fs::write(&path, "keys: 3").unwrap();
        assert!(
            ApiKeyStore::load(&path, Metrics::new())
                .err()
                .unwrap()
                .contains("must be a list")
        );
    }
}
