//! Leader election through a `coordination.k8s.io/v1` Lease.
//!
//! Same protocol as client-go: the holder renews `renewTime` every retry period; a candidate takes
//! the Lease over only when its record has not changed for a whole lease duration — the Lease's own
//! `leaseDurationSeconds`, as the holder wrote it — *as observed on the candidate's own clock* (so
//! clock skew between replicas does not matter). Writes use the Lease's resourceVersion (optimistic
//! concurrency): two candidates can never both win.
//!
//! Every attempt of the leader is bounded by its renew deadline: a renewal that hangs (a half-open
//! connection, a stuck API server) ends leadership when the deadline passes, which is before any
//! other candidate may take over (renew deadline < lease duration, counted from a renewal the
//! others can only observe later).
//!
//! Why not a crate: kube-leader-election (0.44) needs kube 4; kube-lease-manager (0.13.1, kube 5)
//! awaits its renewal patch without a time limit and judges expiry against the holder's
//! `renewTime` on the local clock, so it has neither property above.

use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a record must stay unchanged before another candidate may take over.
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
}

/// (holderIdentity, renewTime) of a Lease: when it changes, the holder is alive.
type Record = (Option<String>, Option<String>);

/// One candidate's view of the Lease.
pub struct LeaseLock {
    api: Api<Lease>,
    config: LeaseConfig,
    /// (holder, renewTime) last seen, and when it was first seen unchanged.
    observed: Option<(Record, Instant)>,
    last_renewal: Option<Instant>,
}

fn record(lease: &Lease) -> Record {
    let spec = lease.spec.as_ref();
    (
        spec.and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty()),
        spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0.to_string()),
    )
}

/// `spec.leaseDurationSeconds` of a Lease, when set and positive.
pub fn lease_duration_of(lease: &Lease) -> Option<Duration> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s as u64))
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaseConfig {
    /// Check the timing rules of the election; the error names the setting and the rule.
    pub fn check(&self) -> Result<(), String> {
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "--renew-deadline-seconds ({:?}) must be shorter than --lease-duration-seconds ({:?}): the leader must stop before a standby may take over",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return Err(format!(
                "--retry-period-seconds ({:?}) must be shorter than --renew-deadline-seconds ({:?}): the leader must get more than one renewal attempt",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}

impl LeaseLock {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        LeaseLock {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            last_renewal: None,
        }
    }

    fn spec_for_us(&self, acquire: bool, old: Option<&LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let transitions = old.and_then(|s| s.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration.as_secs().max(1) as i32),
            acquire_time: if acquire {
                Some(now.clone())
            } else {
                old.and_then(|s| s.acquire_time.clone()).or(Some(now.clone()))
            },
            renew_time: Some(now),
            lease_transitions: Some(if acquire && old.is_some() {
                transitions + 1
            } else {
                transitions
            }),
            ..Default::default()
        }
    }

    /// One attempt to acquire or renew. `Ok(true)`: we hold the Lease now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = Instant::now();
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec_for_us(true, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(l) => {
                    self.observed = Some((record(&l), now));
                    self.last_renewal = Some(now);
                    Ok(true)
                }
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };

        let rec = record(&lease);
        match &self.observed {
            Some((seen, _)) if *seen == rec => {}
            _ => self.observed = Some((rec.clone(), now)),
        }
        let ours = rec.0.as_deref() == Some(self.config.identity.as_str());
        let observed_at = self.observed.as_ref().map(|(_, t)| *t).unwrap_or(now);
        // The holder's promise is the duration it wrote, not ours (replicas may be configured apart).
        let duration = lease_duration_of(&lease).unwrap_or(self.config.lease_duration);
        let expired = rec.0.is_none() || now.duration_since(observed_at) >= duration;
        if !ours && !expired {
            return Ok(false);
        }
        lease.spec = Some(self.spec_for_us(!ours, lease.spec.as_ref()));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                self.observed = Some((record(&l), now));
                self.last_renewal = Some(now);
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the last successful renewal is recent enough to keep acting as leader.
    pub fn within_renew_deadline(&self) -> bool {
        self.last_renewal
            .is_some_and(|t| t.elapsed() < self.config.renew_deadline)
    }

    /// When leadership ends without another successful renewal.
    pub fn renew_deadline(&self) -> Option<Instant> {
        self.last_renewal.map(|t| t + self.config.renew_deadline)
    }

    /// Give the Lease up (on shutdown) so a standby takes over at once.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        if record(&lease).0.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        }
        self.api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

/// Run the election until `cancel`; `leader` says whether this replica leads. Leadership is lost when
/// another holder appears, or when no renewal succeeded within the renew deadline — also when the
/// attempt itself hangs: a leader's attempt is cut off at its deadline, a standby's after one renew
/// deadline. On cancel the Lease is released if held.
pub async fn run(
    mut lock: LeaseLock,
    leader: watch::Sender<bool>,
    api_ok: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    loop {
        let leading_now = *leader.borrow();
        let deadline = match lock.renew_deadline() {
            Some(d) if leading_now => d,
            _ => Instant::now() + lock.config.renew_deadline,
        };
        let result = tokio::select! {
            _ = cancel.cancelled() => break,
            r = tokio::time::timeout_at(deadline, lock.try_acquire_or_renew()) => r,
        };
        let _ = api_ok.send(matches!(result, Ok(Ok(_))));
        let leading = match result {
            Ok(Ok(held)) => held,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "lease renewal failed");
                leading_now && lock.within_renew_deadline()
            }
            Err(_) => {
                tracing::warn!("lease renewal did not answer before the renew deadline");
                false
            }
        };
        if leading != leading_now {
            tracing::info!(leading, identity = %lock.config.identity, "leadership changed");
            let _ = leader.send(leading);
        }
        // A leader sleeps no further than its deadline: losing it must be noticed on time.
        let wake = Instant::now() + lock.config.retry_period;
        let wake = match lock.renew_deadline() {
            Some(d) if leading => wake.min(d),
            _ => wake,
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    if *leader.borrow() {
        let _ = leader.send(false);
        match tokio::time::timeout(Duration::from_secs(3), lock.release()).await {
            Ok(Ok(())) => tracing::info!("lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release lease"),
            Err(_) => tracing::warn!("releasing the lease timed out"),
        }
    }
}
