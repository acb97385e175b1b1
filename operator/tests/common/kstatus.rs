//! kstatus' status computation for a custom resource, ported from kubernetes-sigs/cli-utils
//! `pkg/kstatus/status` (status.go `Compute`, generic.go `checkGenericProperties`/`checkGeneration`,
//! status.go `checkReadyCondition`; commit 5895ad6c). A LumenoreConnector has no type-specific
//! rules, so these are all the rules Helm `--wait`, Flux (without health expressions), kpt and
//! Config Sync apply to it.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KStatus {
    InProgress,
    Failed,
    Current,
    Terminating,
}

/// `status.Compute` for an object that is not a built-in type.
pub fn compute(obj: &Value) -> KStatus {
    // checkGenericProperties: deletion.
    if obj["metadata"]["deletionTimestamp"]
        .as_str()
        .is_some_and(|s| !s.is_empty())
    {
        return KStatus::Terminating;
    }
    // checkGeneration: only when both are set.
    if let (Some(generation), Some(observed)) = (
        obj["metadata"]["generation"].as_i64(),
        obj["status"]["observedGeneration"].as_i64(),
    ) && observed != generation
    {
        return KStatus::InProgress;
    }
    let conditions = obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // The first Reconciling=True or Stalled=True, in list order, decides.
    for c in &conditions {
        if c["type"] == "Reconciling" && c["status"] == "True" {
            return KStatus::InProgress;
        }
        if c["type"] == "Stalled" && c["status"] == "True" {
            return KStatus::Failed;
        }
    }
    // checkReadyCondition.
    for c in &conditions {
        if c["type"] != "Ready" {
            continue;
        }
        match c["status"].as_str() {
            Some("True") => return KStatus::Current,
            Some("False") | Some("Unknown") => return KStatus::InProgress,
            _ => {}
        }
    }
    KStatus::Current
}
