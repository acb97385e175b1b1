//! Limits on tool calls: a token bucket per caller, one for the whole pod (one pod serves one tenant), and a
//! cap on backend calls running at once. A call over a limit is refused at once with a `Retry-After`, before
//! anything reaches the backend; nothing queues.
//!
//! Order: the concurrency permit is taken first (refusing there consumes no rate token), then the caller's
//! bucket (a caller over its own limit does not drain the tenant's), then the tenant's bucket.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Which limit refused a call; the metric label and audit reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitHit {
    Caller { retry_after: Duration },
    Tenant { retry_after: Duration },
    Concurrency,
}

impl LimitHit {
    pub fn label(self) -> &'static str {
        match self {
            LimitHit::Caller { .. } => "caller",
            LimitHit::Tenant { .. } => "tenant",
            LimitHit::Concurrency => "concurrency",
        }
    }

    /// Whole seconds for `Retry-After`, at least 1.
    pub fn retry_after_seconds(self) -> u64 {
        match self {
            LimitHit::Caller { retry_after } | LimitHit::Tenant { retry_after } => {
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                seconds.max(1)
            }
            LimitHit::Concurrency => 1,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            LimitHit::Caller { .. } => "rate limit exceeded for this caller; retry later",
            LimitHit::Tenant { .. } => "rate limit exceeded for this connector; retry later",
            LimitHit::Concurrency => "too many tool calls are running; retry shortly",
        }
    }
}

/// The configured limits; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitSettings {
    pub caller_per_minute: Option<NonZeroU32>,
    pub tenant_per_minute: Option<NonZeroU32>,
    pub max_concurrent_backend_calls: Option<NonZeroU32>,
}

pub struct Limits {
    caller: Option<DefaultKeyedRateLimiter<Arc<str>>>,
    tenant: Option<DefaultDirectRateLimiter>,
    backend: Option<Arc<Semaphore>>,
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Limits {
        // A bucket of `n` tokens, refilled at `n` per minute: a burst of `n`, then one every 60/n seconds.
        Limits {
            caller: settings
                .caller_per_minute
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            tenant: settings
                .tenant_per_minute
                .map(|n| RateLimiter::direct(Quota::per_minute(n))),
            backend: settings
                .max_concurrent_backend_calls
                .map(|n| Arc::new(Semaphore::new(n.get() as usize))),
        }
    }

    /// Admits one tool call by `caller`, or says which limit refused it. The permit (when a cap is set)
    /// must be held until the call is answered.
    pub fn admit(&self, caller: &Arc<str>) -> Result<Option<OwnedSemaphorePermit>, LimitHit> {
        let permit = match &self.backend {
            Some(semaphore) => Some(
                semaphore
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| LimitHit::Concurrency)?,
            ),
            None => None,
        };
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
        Ok(permit)
    }

    /// Forgets callers whose buckets are full again, so the per-caller map does not grow without bound.
    pub fn forget_idle_callers(&self) {
        if let Some(limiter) = &self.caller {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.caller.is_none() && self.tenant.is_none() && self.backend.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(value: u32) -> Option<NonZeroU32> {
        NonZeroU32::new(value)
    }

    #[test]
    fn unlimited_admits_everything() {
        let limits = Limits::new(LimitSettings::default());
        assert!(limits.is_unlimited());
        let caller: Arc<str> = Arc::from("a");
        for _ in 0..10_000 {
            assert!(limits.admit(&caller).unwrap().is_none());
        }
    }

    #[test]
    fn caller_bucket_is_per_caller_and_reports_retry_after() {
        let limits = Limits::new(LimitSettings {
            caller_per_minute: n(3),
            ..Default::default()
        });
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        for _ in 0..3 {
            limits.admit(&a).unwrap();
        }
        let hit = limits.admit(&a).unwrap_err();
        assert_eq!(hit.label(), "caller");
        // One token every 20 s.
        let seconds = hit.retry_after_seconds();
        assert!((19..=20).contains(&seconds), "{seconds}");
        // Another caller has its own bucket.
        limits.admit(&b).unwrap();
    }

    #[test]
    fn tenant_bucket_is_shared_and_caller_refusals_do_not_drain_it() {
        let limits = Limits::new(LimitSettings {
            caller_per_minute: n(2),
            tenant_per_minute: n(4),
            ..Default::default()
        });
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"), Arc::from("c"));
        limits.admit(&a).unwrap();
        limits.admit(&a).unwrap();
        for _ in 0..5 {
            assert_eq!(limits.admit(&a).unwrap_err().label(), "caller");
        }
        limits.admit(&b).unwrap();
        limits.admit(&b).unwrap();
        assert_eq!(limits.admit(&c).unwrap_err().label(), "tenant");
    }

    #[test]
    fn concurrency_cap_refuses_without_consuming_rate_tokens() {
        let limits = Limits::new(LimitSettings {
            caller_per_minute: n(3),
            max_concurrent_backend_calls: n(1),
            ..Default::default()
        });
        let a: Arc<str> = Arc::from("a");
        let held = limits.admit(&a).unwrap().expect("a permit");
        for _ in 0..10 {
            let hit = limits.admit(&a).unwrap_err();
            assert_eq!(hit, LimitHit::Concurrency);
            assert_eq!(hit.retry_after_seconds(), 1);
        }
        drop(held);
        // Two rate tokens are left: the refusals above took none.
        limits.admit(&a).unwrap();
        limits.admit(&a).unwrap();
        assert_eq!(limits.admit(&a).unwrap_err().label(), "caller");
    }
}
