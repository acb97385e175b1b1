//! The rate-limit store: the tenant-wide and per-caller buckets kept in Redis, shared by every replica of a
//! tenant, so a limit means the same with one pod or ten.
//!
//! One tool call is one round trip: a server-side script (GCRA, the same bucket the pod's own limiter
//! keeps: a burst of `n`, then one every 60/`n` s) checks the caller's bucket, then the tenant's, and writes
//! both only when both admit, so a refused call takes no token from either. The script reads the server's
//! clock (`TIME`, allowed before writes from Redis 5 on), so replicas' clocks do not matter. `Script` sends
//! `EVALSHA`, and after a restart that emptied the script cache loads the script again (`SCRIPT LOAD`).
//!
//! Keys: `lumenore:rl:{<scope>}:tenant` and `lumenore:rl:{<scope>}:caller:<hash>`, where the scope is the
//! tenant (`<namespace>/<name>`), in braces so both keys of a call hash to one slot (the client talks to
//! one node: a Redis Cluster is not supported, a proxy in front of one is), and the caller's id appears
//! only as a SHA-256 digest. Every key expires when its bucket is full again.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use clap::ValueEnum;
use redis::{
    Client, IntoConnectionInfo, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use url::Url;

use super::LimitHit;

/// What a tool call gets when the store fails or is slow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreFailure {
    /// Admitted by the pod's own buckets (the limits divided by the shares).
    Open,
    /// Refused with 503 and `Retry-After`.
    Closed,
}

impl StoreFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreFailure::Open => "open",
            StoreFailure::Closed => "closed",
        }
    }
}

/// The store's settings, checked by `Config::store_settings`.
#[derive(Clone, Debug)]
pub struct StoreSettings {
    pub url: Url,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub ca_file: Option<std::path::PathBuf>,
    pub timeout: Duration,
    pub failure: StoreFailure,
    pub scope: String,
}

/// Why the store gave no verdict; the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// No answer within the timeout.
    Timeout,
    /// Refused connection, reset, authentication or script error.
    Failed,
    /// Not asked: the store failed less than [`PAUSE_AFTER_FAILURE`] ago.
    Paused,
}

impl StoreError {
    pub fn label(self) -> &'static str {
        match self {
            StoreError::Timeout => "timeout",
            StoreError::Failed => "error",
            StoreError::Paused => "paused",
        }
    }
}

/// After a failure the store is left alone this long: during an outage one call in this time pays the
/// timeout (and finds out whether the store is back), the others follow the failure policy at once.
pub const PAUSE_AFTER_FAILURE: Duration = Duration::from_millis(500);

/// The buckets the script checks: `(emission interval in µs, burst)` per limit, `None` when unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rates {
    pub caller: Option<(u64, u32)>,
    pub tenant: Option<(u64, u32)>,
}

impl Rates {
    /// `n` per minute: one token every 60/`n` s, a burst of `n` (as the pod's own `governor` quota).
    pub fn per_minute(caller: Option<u32>, tenant: Option<u32>) -> Rates {
        // At least 1 µs: 0 would mean "no limit" to the script (a rate over 60 million a minute is
        // kept at that).
        let bucket = |n: u32| ((60_000_000 / u64::from(n.max(1))).max(1), n.max(1));
        Rates {
            caller: caller.map(bucket),
            tenant: tenant.map(bucket),
        }
    }
}

/// Caller bucket first, then tenant; both written only when both admit. Answers `{code, wait_µs}`:
/// 0 admitted, 1 the caller's bucket refused, 2 the tenant's. Times are whole microseconds, written with
/// `%.0f` (Lua's default number format keeps 14 digits, fewer than a microsecond timestamp has).
const GCRA: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local function check(key, interval, burst)
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local next_tat = tat + interval
  local allow_at = next_tat - interval * burst
  if allow_at > now then return nil, allow_at - now end
  return next_tat, 0
end
local caller_interval, caller_burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tenant_interval, tenant_burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local caller_tat, tenant_tat
if caller_interval > 0 then
  local wait
  caller_tat, wait = check(KEYS[2], caller_interval, caller_burst)
  if not caller_tat then return {1, wait} end
end
if tenant_interval > 0 then
  local wait
  tenant_tat, wait = check(KEYS[1], tenant_interval, tenant_burst)
  if not tenant_tat then return {2, wait} end
end
if caller_tat then
  redis.call('SET', KEYS[2], string.format('%.0f', caller_tat), 'PX', string.format('%.0f', math.floor((caller_tat - now) / 1000) + 1))
end
if tenant_tat then
  redis.call('SET', KEYS[1], string.format('%.0f', tenant_tat), 'PX', string.format('%.0f', math.floor((tenant_tat - now) / 1000) + 1))
end
return {0, 0}
";

/// The store's two keys for one caller of one tenant.
pub fn keys(scope: &str, caller: &str) -> (String, String) {
    let mut digest = Sha256::new();
    digest.update(scope.as_bytes());
    digest.update([0]);
    digest.update(caller.as_bytes());
    let hash = hex::encode(&digest.finalize()[..16]);
    (
        format!("lumenore:rl:{{{scope}}}:tenant"),
        format!("lumenore:rl:{{{scope}}}:caller:{hash}"),
    )
}

/// Failures in a row after which the connection manager is made again.
pub const FAILURES_BEFORE_RECONNECT: u32 = 3;

/// A connection manager that connects lazily. A reconnect is tried at once and then with short backoff; a
/// call never waits past its own timeout for it, so these only bound the background work.
fn manager(client: &Client) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

/// Whether the last store call answered: for `/readyz` and the transition log lines.
#[derive(Debug)]
pub struct StoreHealth {
    up: AtomicBool,
    pub failure: StoreFailure,
}

impl StoreHealth {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records the outcome of a call; logs a line only when the state changes (no address, no key).
    fn record(&self, up: bool, reason: &'static str) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("the rate-limit store answers again: limits are shared across replicas");
            } else {
                tracing::warn!(
                    reason,
                    policy = self.failure.as_str(),
                    "the rate-limit store failed: tool calls follow the failure policy until it answers"
                );
            }
        }
    }
}

pub struct RedisStore {
    client: Client,
    /// Made again after [`FAILURES_BEFORE_RECONNECT`] failures in a row: the manager reconnects by itself
    /// only after an I/O error, and keeps any other failure of its connection set-up (a refused AUTH, a
    /// full server) for every later call.
    connection: std::sync::RwLock<ConnectionManager>,
    failures_in_a_row: std::sync::atomic::AtomicU32,
    script: Script,
    scope: String,
    timeout: Duration,
    pub health: Arc<StoreHealth>,
    /// Until when the store is not asked (after a failure).
    paused_until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl RedisStore {
    /// Connects lazily: the connector starts, and serves by its failure policy, while the store is down;
    /// the connection manager reconnects on its own. Needs a Tokio runtime.
    pub fn new(settings: &StoreSettings) -> Result<RedisStore, String> {
        let invalid = |error: redis::RedisError| format!("--rate-limit-store: {error}");
        let info = settings.url.as_str().into_connection_info().map_err(invalid)?;
        let mut redis_settings = info.redis_settings().clone();
        if let Some(username) = &settings.username {
            redis_settings = redis_settings.set_username(username);
        }
        if let Some(password) = &settings.password {
            redis_settings = redis_settings.set_password(password.expose_secret());
        }
        // No Nagle delay on one small request per call; and a peer gone silently (a partition, a replaced
        // pod) breaks the connection after 2 s of unanswered data instead of the kernel's 15 minutes, which
        // the manager sees as an I/O error and reconnects.
        let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
        #[cfg(target_os = "linux")]
        let tcp = tcp.set_user_timeout(Duration::from_secs(2));
        let info = info.set_redis_settings(redis_settings).set_tcp_settings(tcp);
        let client = match &settings.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|error| format!("--rate-limit-store-ca-file {}: {error}", path.display()))?;
                Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
                .map_err(invalid)?
            }
            None => Client::open(info).map_err(invalid)?,
        };
        let connection = manager(&client).map_err(invalid)?;
        Ok(RedisStore {
            client,
            connection: std::sync::RwLock::new(connection),
            failures_in_a_row: std::sync::atomic::AtomicU32::new(0),
            script: Script::new(GCRA),
            scope: settings.scope.clone(),
            timeout: settings.timeout,
            health: Arc::new(StoreHealth {
                up: AtomicBool::new(true),
                failure: settings.failure,
            }),
            paused_until: std::sync::Mutex::new(None),
        })
    }

    /// One round trip: `Ok(None)` admitted, `Ok(Some(hit))` refused by a bucket, `Err` no verdict.
    pub async fn admit(&self, caller: &str, rates: Rates) -> Result<Option<LimitHit>, StoreError> {
        {
            // One caller per pause probes the store again; the others do not wait for it.
            let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            let now = tokio::time::Instant::now();
            match *paused {
                Some(until) if now < until => return Err(StoreError::Paused),
                Some(_) => *paused = Some(now + self.timeout),
                None => {}
            }
        }
        let (tenant_key, caller_key) = keys(&self.scope, caller);
        let (caller_interval, caller_burst) = rates.caller.unwrap_or((0, 0));
        let (tenant_interval, tenant_burst) = rates.tenant.unwrap_or((0, 0));
        let mut connection = self.connection.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut invocation = self.script.key(tenant_key);
        invocation
            .key(caller_key)
            .arg(caller_interval)
            .arg(caller_burst)
            .arg(tenant_interval)
            .arg(tenant_burst);
        let answer: Result<Result<(i64, i64), redis::RedisError>, _> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection)).await;
        let verdict = match answer {
            Err(_) => Err(StoreError::Timeout),
            Ok(Err(_)) => Err(StoreError::Failed),
            Ok(Ok((0, _))) => Ok(None),
            Ok(Ok((code, wait))) => {
                let retry_after = Duration::from_micros(u64::try_from(wait).unwrap_or(0));
                Ok(Some(if code == 1 {
                    LimitHit::Caller { retry_after }
                } else {
                    LimitHit::Tenant { retry_after }
                }))
            }
        };
        match verdict {
            Err(error) => {
                *self.paused_until.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(tokio::time::Instant::now() + PAUSE_AFTER_FAILURE);
                self.health.record(false, error.label());
                if self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= FAILURES_BEFORE_RECONNECT {
                    self.failures_in_a_row.store(0, Ordering::Relaxed);
                    // Lazy: connects on the next call, in the background of no call.
                    if let Ok(fresh) = manager(&self.client) {
                        *self.connection.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                    }
                }
            }
            Ok(_) => {
                *self.paused_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.failures_in_a_row.store(0, Ordering::Relaxed);
                self.health.record(true, "answered");
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_slot_and_carry_no_caller_in_clear() {
        let (tenant, caller) = keys("acme/analytics", "key-of-alice");
        assert_eq!(tenant, "lumenore:rl:{acme/analytics}:tenant");
        assert!(caller.starts_with("lumenore:rl:{acme/analytics}:caller:"));
        assert!(!caller.contains("alice"));
        assert_eq!(caller.rsplit(':').next().unwrap().len(), 32);
        // The same caller of another tenant has another key; the same caller the same key.
        assert_ne!(keys("acme/other", "key-of-alice").1, caller);
        assert_eq!(keys("acme/analytics", "key-of-alice").1, caller);
    }

    #[test]
    fn per_minute_rates_match_the_pods_own_buckets() {
        let rates = Rates::per_minute(Some(60), None);
        assert_eq!(rates.caller, Some((1_000_000, 60)));
        assert_eq!(rates.tenant, None);
        assert_eq!(Rates::per_minute(None, Some(7)).tenant, Some((8_571_428, 7)));
        assert_eq!(
            Rates::per_minute(Some(u32::MAX), None).caller,
            Some((1, u32::MAX))
        );
    }
}
