//! Refusals that arrive in floods (requests without a valid credential) are counted, not logged one line
//! each: the metric (`lumenore_connector_auth_failures_total`) has every one, and the log gets at most one
//! line per [`INTERVAL`] with the number refused since the previous line. No line names a caller, a token or
//! anything of the request.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// At most one log line per interval.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Counts refusals and says when a line is due.
pub struct Sampled {
    origin: Instant,
    /// Refusals since the last line.
    pending: AtomicU64,
    /// Milliseconds since `origin` + 1 of the last line; 0 before the first.
    last_line: AtomicU64,
}

impl Default for Sampled {
    fn default() -> Self {
        Sampled {
            origin: Instant::now(),
            pending: AtomicU64::new(0),
            last_line: AtomicU64::new(0),
        }
    }
}

impl Sampled {
    /// Counts one refusal; returns the number refused since the last line (this one included) when a line
    /// is due, `None` otherwise.
    pub fn note(&self) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::AcqRel);
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        let last = self.last_line.load(Ordering::Acquire);
        if last != 0 && now < last + INTERVAL.as_millis() as u64 {
            return None;
        }
        self.last_line
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some(self.pending.swap(0, Ordering::AcqRel))
    }
}

/// Counts one request refused for want of a valid credential, and logs the sampled line when due.
pub fn unauthenticated(sampled: &Sampled, reason: &'static str, status: u16) {
    if let Some(count) = sampled.note() {
        tracing::info!(
            target: "lumenore_connector::refusals",
            outcome = "unauthenticated",
            last_reason = reason,
            status,
            count,
            "requests refused without a valid credential (at most one line a second; count since the last line)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusal_is_a_line_and_a_burst_is_one_more_line_with_its_count() {
        let sampled = Sampled::default();
        assert_eq!(sampled.note(), Some(1));
        let lines: Vec<u64> = (0..1000).filter_map(|_| sampled.note()).collect();
        assert!(lines.is_empty(), "{lines:?}");
        std::thread::sleep(INTERVAL + Duration::from_millis(20));
        assert_eq!(sampled.note(), Some(1001));
        assert_eq!(sampled.note(), None);
    }
}
