//! The one Events writer of both controllers (tenants and fleet rollouts).
//!
//! Each Event is created as an events.k8s.io/v1 object of its own. (kube's `Recorder` keeps every
//! event it published in a cache it scans on each publish; with Events on transitions only there is
//! nothing to aggregate, and at 10,000 connectors that cache dominated CPU and memory.)

use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::events::Reporter;

use crate::crd::MANAGER;

/// Publishes Events as one reporter.
pub struct EventWriter {
    client: Client,
    reporter: Reporter,
    /// Makes names unique within one nanosecond.
    seq: AtomicU64,
}

impl EventWriter {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        EventWriter {
            client,
            reporter,
            seq: AtomicU64::new(0),
        }
    }

    /// Who the Events say reported them.
    pub fn reporter(&self) -> &Reporter {
        &self.reporter
    }

    /// Create one Event about `regarding`. Best effort for the callers: the status carries the
    /// same information.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        action: &str,
        warning: bool,
        reason: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let ns = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let reporter = &self.reporter;
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}{:x}",
                    regarding.name.as_deref().unwrap_or(MANAGER),
                    now.as_nanosecond(),
                    seq
                )),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(action.into()),
            reason: Some(reason.to_string()),
            // The API server refuses notes over 1 kB.
            note: Some(truncate(note, 1000)),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(reporter.controller.clone()),
            reporting_instance: Some(
                reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| reporter.controller.clone()),
            ),
            ..Default::default()
        };
        Api::<K8sEvent>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
