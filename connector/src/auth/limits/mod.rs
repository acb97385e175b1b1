//! Limits on tool calls: a token bucket per caller, one for the tenant, and a cap on backend calls running at
//! once in this pod. A call over a limit is refused at once with a `Retry-After`, before anything reaches the
//! backend; nothing queues.
//!
//! Where the buckets live:
//! - **per pod** (no store, one share): each pod has the whole limit;
//! - **shares** (`--rate-limit-shares N`): each pod's buckets hold the limit divided by N, rounded up;
//! - **store** ([`store`], Redis): one bucket per tenant and per caller for every replica; the pod's own
//!   buckets (with the shares) are only the fallback of the `open` failure policy.
//!
//! Order: the concurrency permit is taken first (refusing there consumes no rate token), then the caller's
//! bucket (a caller over its own limit does not drain the tenant's), then the tenant's bucket.

pub mod store;

use std::{
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::{InMemoryState, NotKeyed},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use store::{Rates, RedisStore, StoreError};
pub use store::{StoreFailure, StoreHealth, StoreSettings};

use crate::metrics::{Metrics, REDIS_STORE, ReasonLabels};

/// Which limit refused a call; the metric label and audit reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitHit {
    Caller {
        retry_after: Duration,
    },
    Tenant {
        retry_after: Duration,
    },
    Concurrency,
    /// The store gave no verdict and the failure policy is `closed`.
    StoreUnavailable,
}

impl LimitHit {
    pub fn label(self) -> &'static str {
        match self {
            LimitHit::Caller { .. } => "caller",
            LimitHit::Tenant { .. } => "tenant",
            LimitHit::Concurrency => "concurrency",
            LimitHit::StoreUnavailable => "store_unavailable",
        }
    }

    /// Whole seconds for `Retry-After`, at least 1.
    pub fn retry_after_seconds(self) -> u64 {
        match self {
            LimitHit::Caller { retry_after } | LimitHit::Tenant { retry_after } => {
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                seconds.max(1)
            }
            LimitHit::Concurrency | LimitHit::StoreUnavailable => 1,
        }
    }

    /// 429 over a limit; 503 when the limit cannot be known (the store is down and the policy is closed).
    pub fn status(self) -> http::StatusCode {
        match self {
            LimitHit::StoreUnavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            _ => http::StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            LimitHit::Caller { .. } => "rate limit exceeded for this caller; retry later",
            LimitHit::Tenant { .. } => "rate limit exceeded for this connector; retry later",
            LimitHit::Concurrency => "too many tool calls are running; retry shortly",
            LimitHit::StoreUnavailable => "the rate-limit store is unavailable; retry shortly",
        }
    }
}

/// The configured limits; `None` is unlimited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitSettings {
    pub caller_per_minute: Option<NonZeroU32>,
    pub tenant_per_minute: Option<NonZeroU32>,
    pub max_concurrent_backend_calls: Option<NonZeroU32>,
    /// Pods sharing the rates: each pod's own buckets hold `limit / shares`, rounded up.
    pub shares: NonZeroU32,
    /// A file that overrides `shares`, re-read while the connector runs.
    pub shares_file: Option<PathBuf>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            caller_per_minute: None,
            tenant_per_minute: None,
            max_concurrent_backend_calls: None,
            shares: NonZeroU32::MIN,
            shares_file: None,
        }
    }
}

/// The number in the shares file at `path` (a few bytes: read in place, also from async code).
fn read_shares(path: &Path) -> Result<NonZeroU32, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read it: {}", e.kind()))
        .and_then(|text| parse_shares(&text))
}

/// The most pods a shares file may name; more is refused as a mistake.
const MAX_SHARES: u32 = 10_000;

/// The number in a shares file: one integer from 1 to 10,000, surrounding white space allowed.
pub fn parse_shares(text: &str) -> Result<NonZeroU32, String> {
    let number = text.trim();
    match number.parse::<u32>() {
        Ok(n) if (1..=MAX_SHARES).contains(&n) => Ok(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)),
        _ => Err(format!(
            "the rate-limit shares file must hold one whole number from 1 to {MAX_SHARES} ({} characters found)",
            number.chars().count()
        )),
    }
}

/// `limit / shares`, rounded up: the pod's own part of a limit.
pub fn share(limit: NonZeroU32, shares: NonZeroU32) -> NonZeroU32 {
    limit
        .get()
        .div_ceil(shares.get())
        .try_into()
        .unwrap_or(NonZeroU32::MIN)
}

/// The tenant's bucket, telling how full it is (to carry that over a change of the shares).
type TenantBucket = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// The pod's own buckets.
struct LocalBuckets {
    caller: Option<DefaultKeyedRateLimiter<Arc<str>>>,
    tenant: Option<TenantBucket>,
    /// The tenant bucket's size (its burst).
    tenant_burst: u32,
}

impl LocalBuckets {
    fn new(settings: &LimitSettings, shares: NonZeroU32) -> LocalBuckets {
        // A bucket of `n` tokens, refilled at `n` per minute: a burst of `n`, then one every 60/n seconds.
        let quota = |limit| Quota::per_minute(share(limit, shares));
        LocalBuckets {
            caller: settings.caller_per_minute.map(|n| RateLimiter::keyed(quota(n))),
            tenant: settings
                .tenant_per_minute
                .map(|n| RateLimiter::direct(quota(n)).with_middleware::<StateInformationMiddleware>()),
            tenant_burst: settings.tenant_per_minute.map_or(0, |n| share(n, shares).get()),
        }
    }

    /// How full the tenant's bucket is, from 0 to 1 (1 without one). Takes a token to find out: only for
    /// buckets about to be replaced.
    fn tenant_fill(&self) -> f64 {
        match &self.tenant {
            None => 1.0,
            Some(limiter) => match limiter.check() {
                Ok(state) => {
                    f64::from(state.remaining_burst_capacity() + 1) / f64::from(self.tenant_burst.max(1))
                }
                Err(_) => 0.0,
            },
        }
    }

    /// Empties the tenant's bucket down to `fill` of its size.
    fn fill_tenant_to(&self, fill: f64) {
        if let Some(limiter) = &self.tenant {
            let burst = f64::from(self.tenant_burst);
            // Whole tokens left, rounded down (the 1e-9 absorbs the float error of 4/6 × 3).
            let take = (burst - (fill.clamp(0.0, 1.0) * burst + 1e-9).floor()) as u32;
            if let Some(take) = NonZeroU32::new(take) {
                let _ = limiter.check_n(take);
            }
        }
    }

    fn admit(&self, caller: &Arc<str>) -> Result<(), LimitHit> {
        if let Some(limiter) = &self.caller
            && let Err(not_until) = limiter.check_key(caller)
        {
            return Err(LimitHit::Caller {
                retry_after: not_until.wait_time_from(limiter.clock().now()),
            });
        }
        if let Some(limiter) = &self.tenant
            && let Err(not_until) = limiter.check()
        {
            return Err(LimitHit::Tenant {
                retry_after: not_until.wait_time_from(limiter.clock().now()),
            });
        }
        Ok(())
    }
}

pub struct Limits {
    /// The pod's own buckets, made again when the shares change; the tenant's new bucket is as full as
    /// the old one was (so a change adds no burst), the callers' new buckets start full.
    local: RwLock<Arc<LocalBuckets>>,
    settings: LimitSettings,
    shares: Mutex<SharesState>,
    backend: Option<Arc<Semaphore>>,
    store: Option<RedisStore>,
    rates: Rates,
    metrics: Metrics,
}

impl Limits {
    /// Builds the limits; with a store, connects to it lazily (needs a Tokio runtime).
    pub fn new(
        settings: LimitSettings,
        store: Option<&StoreSettings>,
        metrics: Metrics,
    ) -> Result<Limits, String> {
        let has_rates = settings.caller_per_minute.is_some() || settings.tenant_per_minute.is_some();
        // A store without a rate to keep is not contacted at all.
        let store = match store {
            Some(store) if has_rates => Some(RedisStore::new(store)?),
            _ => None,
        };
        if store.is_some() {
            metrics.rate_limit_store_up.get_or_create(&REDIS_STORE).set(1);
        }
        let mut shares = settings.shares;
        if let Some(path) = &settings.shares_file {
            // A file there at start is in force from the first call; one missing is waited for.
            match read_shares(path) {
                Ok(n) => shares = n,
                Err(reason) => tracing::info!(
                    shares = shares.get(),
                    reason = %reason,
                    "no rate-limit shares file yet: --rate-limit-shares is in force until it appears"
                ),
            }
        }
        metrics.rate_limit_shares.set(i64::from(shares.get()));
        Ok(Limits {
            local: RwLock::new(Arc::new(LocalBuckets::new(&settings, shares))),
            shares: Mutex::new(SharesState {
                current: shares,
                last_error: None,
            }),
            backend: settings
                .max_concurrent_backend_calls
                .map(|n| Arc::new(Semaphore::new(n.get() as usize))),
            store,
            rates: Rates::per_minute(
                settings.caller_per_minute.map(NonZeroU32::get),
                settings.tenant_per_minute.map(NonZeroU32::get),
            ),
            settings,
            metrics,
        })
    }

    fn local(&self) -> Arc<LocalBuckets> {
        self.local.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The shares in force.
    pub fn shares(&self) -> NonZeroU32 {
        self.shares.lock().unwrap_or_else(|e| e.into_inner()).current
    }

    /// Re-reads the shares file; a new number makes the pod's buckets again. A missing or bad file keeps
    /// the last good number, with one log line per distinct problem.
    pub fn read_shares_file(&self, path: &Path) {
        let read = read_shares(path);
        let mut state = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        match read {
            Ok(shares) => {
                state.last_error = None;
                if shares != state.current {
                    tracing::info!(
                        from = state.current.get(),
                        to = shares.get(),
                        "rate-limit shares changed: this pod's buckets now hold the limits divided by the new number"
                    );
                    state.current = shares;
                    let fresh = LocalBuckets::new(&self.settings, shares);
                    let mut local = self.local.write().unwrap_or_else(|e| e.into_inner());
                    fresh.fill_tenant_to(local.tenant_fill());
                    *local = Arc::new(fresh);
                    self.metrics.rate_limit_shares.set(i64::from(shares.get()));
                }
            }
            Err(reason) => {
                if state.last_error.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(
                        shares = state.current.get(),
                        reason = %reason,
                        "the rate-limit shares file is unusable: the last good number stays in force"
                    );
                    state.last_error = Some(reason);
                }
            }
        }
    }

    /// Admits one tool call by `caller`, or says which limit refused it. The permit (when a cap is set)
    /// must be held until the call is answered.
    pub async fn admit(&self, caller: &Arc<str>) -> Result<Option<OwnedSemaphorePermit>, LimitHit> {
        let permit = match &self.backend {
            Some(semaphore) => Some(
                semaphore
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| LimitHit::Concurrency)?,
            ),
            None => None,
        };
        let Some(store) = &self.store else {
            self.local().admit(caller)?;
            return Ok(permit);
        };
        match store.admit(caller, self.rates).await {
            Ok(None) => {
                self.metrics
                    .rate_limit_store_up
                    .get_or_create(&REDIS_STORE)
                    .set(1);
                Ok(permit)
            }
            Ok(Some(hit)) => {
                self.metrics
                    .rate_limit_store_up
                    .get_or_create(&REDIS_STORE)
                    .set(1);
                Err(hit)
            }
            Err(error) => {
                self.store_failed(error);
                match store.health.failure {
                    StoreFailure::Open => self.local().admit(caller).map(|()| permit),
                    StoreFailure::Closed => Err(LimitHit::StoreUnavailable),
                }
            }
        }
    }

    fn store_failed(&self, error: StoreError) {
        self.metrics
            .rate_limit_store_up
            .get_or_create(&REDIS_STORE)
            .set(0);
        self.metrics
            .rate_limit_store_failures
            .get_or_create(&ReasonLabels {
                reason: error.label(),
            })
            .inc();
    }

    /// The store's state for `/readyz`, when there is a store.
    pub fn store_health(&self) -> Option<Arc<StoreHealth>> {
        self.store.as_ref().map(|store| store.health.clone())
    }

    /// Forgets callers whose buckets are full again, so the per-caller map does not grow without bound.
    pub fn forget_idle_callers(&self) {
        if let Some(limiter) = &self.local().caller {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    pub fn is_unlimited(&self) -> bool {
        let local = self.local();
        local.caller.is_none() && local.tenant.is_none() && self.backend.is_none()
    }
}

/// The shares in force, and the last problem logged about the file.
struct SharesState {
    current: NonZeroU32,
    last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        futures::executor::block_on(future)
    }

    fn n(value: u32) -> Option<NonZeroU32> {
        NonZeroU32::new(value)
    }

    #[test]
    fn unlimited_admits_everything() {
        let limits = Limits::new(LimitSettings::default(), None, Metrics::new()).unwrap();
        assert!(limits.is_unlimited());
        let caller: Arc<str> = Arc::from("a");
        for _ in 0..10_000 {
            assert!(block_on(limits.admit(&caller)).unwrap().is_none());
        }
    }

    #[test]
    fn caller_bucket_is_per_caller_and_reports_retry_after() {
        let limits = Limits::new(
            LimitSettings {
                caller_per_minute: n(3),
                ..Default::default()
            },
            None,
            Metrics::new(),
        )
        .unwrap();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        for _ in 0..3 {
            block_on(limits.admit(&a)).unwrap();
        }
        let hit = block_on(limits.admit(&a)).unwrap_err();
        assert_eq!(hit.label(), "caller");
        // One token every 20 s.
        let seconds = hit.retry_after_seconds();
        assert!((19..=20).contains(&seconds), "{seconds}");
        // Another caller has its own bucket.
        block_on(limits.admit(&b)).unwrap();
    }

    #[test]
    fn tenant_bucket_is_shared_and_caller_refusals_do_not_drain_it() {
        let limits = Limits::new(
            LimitSettings {
                caller_per_minute: n(2),
                tenant_per_minute: n(4),
                ..Default::default()
            },
            None,
            Metrics::new(),
        )
        .unwrap();
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"), Arc::from("c"));
        block_on(limits.admit(&a)).unwrap();
        block_on(limits.admit(&a)).unwrap();
        for _ in 0..5 {
            assert_eq!(block_on(limits.admit(&a)).unwrap_err().label(), "caller");
        }
        block_on(limits.admit(&b)).unwrap();
        block_on(limits.admit(&b)).unwrap();
        assert_eq!(block_on(limits.admit(&c)).unwrap_err().label(), "tenant");
    }

    #[test]
    fn concurrency_cap_refuses_without_consuming_rate_tokens() {
        let limits = Limits::new(
            LimitSettings {
                caller_per_minute: n(3),
                max_concurrent_backend_calls: n(1),
                ..Default::default()
            },
            None,
            Metrics::new(),
        )
        .unwrap();
        let a: Arc<str> = Arc::from("a");
        let held = block_on(limits.admit(&a)).unwrap().expect("a permit");
        for _ in 0..10 {
            let hit = block_on(limits.admit(&a)).unwrap_err();
            assert_eq!(hit, LimitHit::Concurrency);
            assert_eq!(hit.retry_after_seconds(), 1);
        }
        drop(held);
        // Two rate tokens are left: the refusals above took none.
        block_on(limits.admit(&a)).unwrap();
        block_on(limits.admit(&a)).unwrap();
        assert_eq!(block_on(limits.admit(&a)).unwrap_err().label(), "caller");
    }

    #[test]
    fn a_shares_file_holds_one_number_in_range() {
        assert_eq!(parse_shares(" 3\n").unwrap().get(), 3);
        for bad in ["", "0", "-1", "2.5", "three", "10001", "1 2"] {
            let error = parse_shares(bad).unwrap_err();
            assert!(
                error.contains("one whole number from 1 to 10000"),
                "{bad}: {error}"
            );
        }
    }

    #[tokio::test]
    async fn the_shares_file_is_followed_and_a_bad_one_keeps_the_last_good_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shares");
        std::fs::write(&path, "2").unwrap();
        let metrics = Metrics::new();
        let limits = Limits::new(
            LimitSettings {
                tenant_per_minute: n(12),
                shares_file: Some(path.clone()),
                ..Default::default()
            },
            None,
            metrics.clone(),
        )
        .unwrap();
        let a: Arc<str> = Arc::from("a");
        let admitted = |limits: &Limits| {
            let mut count = 0;
            while futures::executor::block_on(limits.admit(&a)).is_ok() {
                count += 1;
                assert!(count <= 12, "more than the whole limit");
            }
            count
        };
        // Read at start: 12 / 2.
        assert_eq!(limits.shares().get(), 2);
        assert_eq!(admitted(&limits), 6);
        // Changed: the buckets are made again with 12 / 5 = 3 (rounded up), as full as the old one was:
        // empty, so a change adds no burst.
        std::fs::write(&path, "5\n").unwrap();
        limits.read_shares_file(&path);
        assert_eq!(limits.shares().get(), 5);
        assert_eq!(admitted(&limits), 0);
        // A bucket two-thirds full stays two-thirds full: 12 / 4 = 3 of which 2.
        let other = dir.path().join("other");
        let half = Limits::new(
            LimitSettings {
                tenant_per_minute: n(12),
                shares: NonZeroU32::new(2).unwrap(),
                shares_file: Some(other.clone()),
                ..Default::default()
            },
            None,
            Metrics::new(),
        )
        .unwrap();
        for _ in 0..2 {
            futures::executor::block_on(half.admit(&a)).unwrap();
        }
        std::fs::write(&other, "4").unwrap();
        half.read_shares_file(&other);
        assert_eq!(half.shares().get(), 4);
        assert_eq!(admitted(&half), 2);
        assert!(
            metrics
                .encode()
                .contains("lumenore_connector_rate_limit_shares 5")
        );
        // Unusable or gone: the last good number stays.
        std::fs::write(&path, "lots").unwrap();
        limits.read_shares_file(&path);
        std::fs::remove_file(&path).unwrap();
        limits.read_shares_file(&path);
        assert_eq!(limits.shares().get(), 5);
    }

    #[test]
    fn shares_divide_each_pods_buckets_rounding_up() {
        let three = NonZeroU32::new(3).unwrap();
        assert_eq!(share(NonZeroU32::new(10).unwrap(), three).get(), 4);
        assert_eq!(share(NonZeroU32::new(9).unwrap(), three).get(), 3);
        assert_eq!(share(NonZeroU32::new(1).unwrap(), three).get(), 1);
        let limits = Limits::new(
            LimitSettings {
                tenant_per_minute: n(10),
                shares: three,
                ..Default::default()
            },
            None,
            Metrics::new(),
        )
        .unwrap();
        let a: Arc<str> = Arc::from("a");
        for _ in 0..4 {
            block_on(limits.admit(&a)).unwrap();
        }
        assert_eq!(block_on(limits.admit(&a)).unwrap_err().label(), "tenant");
    }
}
