//! The rollout cache's changes, fanned out to the controllers that follow them (the rollout controller
//! and each tenant controller).
//!
//! kube-runtime's shared reflector (`reflect_shared` and its `ReflectHandle`) is not used for this: a
//! handle is sent object *references* and looks each one up in the store when it is polled, and when the
//! object is gone by then (a rollout deleted right after its last status write, as a GitOps rename does)
//! its `poll_next` answers `Pending` without having registered a waker (kube-runtime 5.0.0,
//! `reflector/dispatcher.rs`). The controller reading it then sleeps through every later change until
//! something else wakes its task: a rollout applied under a new name got no status for a minute (the
//! system test `rollout_renamed_does_not_downgrade`, reproduced here by
//! `tests::a_change_after_a_deleted_object_is_delivered`). Its broadcast also holds the watch back while
//! any one subscriber is not read.
//!
//! A [`Feed`] sends the objects themselves, so a subscriber never looks anything up, and never blocks
//! the watch: a subscriber that falls more than its capacity behind is given every cached object once
//! instead of what it missed (a resync).

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{StreamExt, stream};
use kube::runtime::reflector::{Lookup, Store};
use kube::runtime::watcher;
use tokio::sync::broadcast;

/// Changes of one reflected cache, for any number of subscribers.
pub struct Feed<K>
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    tx: broadcast::Sender<Arc<K>>,
    store: Store<K>,
}

impl<K> Feed<K>
where
    K: Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    /// A feed of `store`'s changes, keeping at most `capacity` unread changes per subscriber.
    pub fn new(store: Store<K>, capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Feed { tx, store }
    }

    /// Follow one watch event, after the reflector applied it to the store: an applied object is
    /// sent, and at the end of a (re-)list every cached object is (what the shared reflector sends).
    pub fn observe(&self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(obj) => {
                // No subscriber yet is not an error: nothing follows the cache.
                let _ = self.tx.send(Arc::new(obj.clone()));
            }
            watcher::Event::InitDone => self.resend_all(),
            watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::Delete(_) => {}
        }
    }

    fn resend_all(&self) {
        for obj in self.store.state() {
            let _ = self.tx.send(obj);
        }
    }

    /// A subscriber: every change from now on, in order; after falling behind, every cached object.
    pub fn subscribe(&self) -> BoxStream<'static, Arc<K>> {
        let store = self.store.clone();
        stream::unfold(self.tx.subscribe(), move |mut rx| {
            let store = store.clone();
            async move {
                match rx.recv().await {
                    Ok(obj) => Some((vec![obj], rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => Some((store.state(), rx)),
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            }
        })
        .flat_map(stream::iter)
        .boxed()
    }
}

/// One controller's subscription to the rollout cache's changes.
pub type RolloutUpdates = BoxStream<'static, Arc<crate::rollout::LumenoreFleetRollout>>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::{Stream, StreamExt, TryStreamExt, pin_mut};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::{WatchStreamExt, reflector, watcher::Event};
    use tokio::sync::mpsc;

    use super::*;

    fn cm(name: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("ns".into());
        cm
    }

    /// A watch stream fed by hand, reflected into a store and followed by a feed, driven in the
    /// background as the operator drives it.
    fn reflect(capacity: usize) -> (mpsc::UnboundedSender<Event<ConfigMap>>, Arc<Feed<ConfigMap>>) {
        let (reader, writer) = reflector::store::<ConfigMap>();
        let feed = Arc::new(Feed::new(reader, capacity));
        let (tx, rx) = mpsc::unbounded_channel::<Event<ConfigMap>>();
        let events = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) });
        let follower = feed.clone();
        tokio::spawn(
            events
                .reflect(writer)
                .map_ok(move |event: Event<ConfigMap>| follower.observe(&event))
                .for_each(|_: Result<(), watcher::Error>| async {}),
        );
        (tx, feed)
    }

    async fn next_name(sub: &mut (impl Stream<Item = Arc<ConfigMap>> + Unpin)) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .ok()
            .flatten()
            .and_then(|cm| cm.metadata.name.clone())
    }

    #[tokio::test]
    async fn a_change_after_a_deleted_object_is_delivered() {
        let (events, feed) = reflect(16);
        let sub = feed.subscribe();
        pin_mut!(sub);
        // Applied, then deleted before the subscriber reads: then another object is applied.
        events.send(Event::Apply(cm("fleet-v1"))).unwrap();
        events.send(Event::Delete(cm("fleet-v1"))).unwrap();
        events.send(Event::Apply(cm("fleet-v2"))).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(next_name(&mut sub).await.as_deref(), Some("fleet-v1"));
        assert_eq!(next_name(&mut sub).await.as_deref(), Some("fleet-v2"));
    }

    /// Why the feed exists: kube-runtime's shared reflector, fed the same events, never delivers the
    /// second object. Should an upgrade fix it, this fails, and the feed may go.
    #[tokio::test]
    async fn kube_shared_reflector_loses_the_change_after_a_deleted_object() {
        let (reader, writer) = reflector::store_shared::<ConfigMap>(16);
        let handle = writer.subscribe().expect("a shared store");
        drop(reader);
        let (tx, rx) = mpsc::unbounded_channel::<Event<ConfigMap>>();
        let events = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) });
        tokio::spawn(
            events
                .reflect_shared(writer)
                .for_each(|_: Result<Event<ConfigMap>, watcher::Error>| async {}),
        );
        tx.send(Event::Apply(cm("fleet-v1"))).unwrap();
        tx.send(Event::Delete(cm("fleet-v1"))).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reader = tokio::spawn(async move {
            pin_mut!(handle);
            handle.next().await.and_then(|cm| cm.metadata.name.clone())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(Event::Apply(cm("fleet-v2"))).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), reader).await;
        assert!(
            got.is_err(),
            "kube-runtime's ReflectHandle delivered {got:?}: the lost wake-up is fixed"
        );
    }

    #[tokio::test]
    async fn a_relist_sends_every_cached_object() {
        let (events, feed) = reflect(16);
        let sub = feed.subscribe();
        pin_mut!(sub);
        events.send(Event::Init).unwrap();
        events.send(Event::InitApply(cm("a"))).unwrap();
        events.send(Event::InitApply(cm("b"))).unwrap();
        events.send(Event::InitDone).unwrap();
        let mut names = vec![next_name(&mut sub).await, next_name(&mut sub).await];
        names.sort();
        assert_eq!(names, [Some("a".to_string()), Some("b".to_string())]);
    }

    #[tokio::test]
    async fn a_subscriber_left_behind_gets_a_resync_and_holds_nothing_back() {
        let (events, feed) = reflect(2);
        let slow = feed.subscribe();
        let fast = feed.subscribe();
        pin_mut!(slow, fast);
        for name in ["a", "b", "c", "d", "e"] {
            events.send(Event::Apply(cm(name))).unwrap();
            // The fast subscriber keeps up while the slow one is not read at all.
            assert_eq!(next_name(&mut fast).await.as_deref(), Some(name));
        }
        // The slow one missed more than its capacity: it gets the cache as it is now, all five.
        let mut names = Vec::new();
        for _ in 0..5 {
            names.push(next_name(&mut slow).await.expect("resync"));
        }
        names.sort();
        assert_eq!(names, ["a", "b", "c", "d", "e"]);
    }
}
