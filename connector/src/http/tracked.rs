//! A response body that holds a guard until the body is finished or dropped: how the HTTP layer knows when
//! a request is really over (a streamed answer outlives its handler); and [`Shares`], counts per key under
//! a limit whose guards are held that way.

use std::{
    collections::HashMap,
    hash::Hash,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
};

use axum::{body::Body, response::Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::{Notify, futures::Notified};

/// `inner`, with `guard` dropped when the body is dropped (after its last frame was sent, or when the
/// client went away).
pub struct Tracked<G> {
    inner: Body,
    _guard: G,
}

impl<G: Send + Unpin + 'static> http_body::Body for Tracked<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response with `guard` attached to its body. Status, headers and length are unchanged.
pub fn hold_until_sent<G: Send + Unpin + 'static>(response: Response, guard: G) -> Response {
    response.map(|inner| Body::new(Tracked { inner, _guard: guard }))
}

/// Counts held per key, each at most `limit` at once: the per-peer connection cap of the listener and the
/// per-caller and per-connection shares of the body guard. An entry exists only while its count is above
/// zero (the last [`Share`] dropped removes it), so the map holds at most as many entries as shares are
/// held, and those are bounded by the global cap they are taken under.
pub struct Shares<K> {
    limit: usize,
    counts: Mutex<HashMap<K, usize>>,
    released: Notify,
}

impl<K: Hash + Eq + Clone + Send + 'static> Shares<K> {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Shares {
            limit: limit.max(1),
            counts: Mutex::new(HashMap::new()),
            released: Notify::new(),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    fn counts(&self) -> MutexGuard<'_, HashMap<K, usize>> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One more for `key`, released when the share is dropped; `None` when `key` holds `limit` already.
    pub fn try_take(self: &Arc<Self>, key: K) -> Option<Share<K>> {
        let mut counts = self.counts();
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        drop(counts);
        Some(Share {
            shares: self.clone(),
            key,
        })
    }

    /// Shares `key` holds now.
    pub fn held(&self, key: &K) -> usize {
        self.counts().get(key).copied().unwrap_or(0)
    }

    /// Keys holding a share now (the size of the map).
    pub fn keys(&self) -> usize {
        self.counts().len()
    }

    /// Resolves after the next release of any share (enable it before checking, see [`Notify`]).
    pub fn released(&self) -> Notified<'_> {
        self.released.notified()
    }
}

/// One share of a key, given back on drop.
pub struct Share<K: Hash + Eq + Clone + Send + 'static> {
    shares: Arc<Shares<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone + Send + 'static> Drop for Share<K> {
    fn drop(&mut self) {
        let mut counts = self.shares.counts();
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
        drop(counts);
        self.shares.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_capped_per_key_and_entries_go_with_the_last_share() {
        let shares = Shares::new(2);
        let a1 = shares.try_take("a").unwrap();
        let a2 = shares.try_take("a").unwrap();
        assert!(shares.try_take("a").is_none(), "a third share of a");
        let b = shares.try_take("b").unwrap();
        assert_eq!((shares.held(&"a"), shares.held(&"b"), shares.keys()), (2, 1, 2));
        drop(a1);
        assert_eq!(shares.held(&"a"), 1);
        let a3 = shares
            .try_take("a")
            .expect("a share comes back when one is dropped");
        drop((a2, a3, b));
        assert_eq!(shares.keys(), 0, "entries at zero are removed");
        // A refusal leaves no entry behind either.
        let full = Shares::new(1);
        let held = full.try_take(7).unwrap();
        assert!(full.try_take(7).is_none());
        drop(held);
        assert_eq!(full.keys(), 0);
    }

    #[test]
    fn a_share_held_by_a_response_is_released_when_the_body_is_dropped() {
        let shares = Shares::new(1);
        let share = shares.try_take("caller").unwrap();
        let response = hold_until_sent(Response::new(Body::from("answer")), share);
        assert_eq!(shares.held(&"caller"), 1);
        drop(response);
        assert_eq!(shares.keys(), 0);
    }
}
