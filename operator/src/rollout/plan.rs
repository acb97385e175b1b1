//! The wave planner: pure functions from a rollout's waves and a tenant's identity to the tenant's
//! wave, its place in the wave, and the image it should run.
//!
//! Everything is derived from stable hashes of `namespace/name`, so the operator never stores
//! anything per tenant: a tenant's wave does not change as the fleet grows, and after a restart
//! every tenant lands where it was.

use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt};
use sha2::{Digest, Sha256};

use super::crd::{LumenoreFleetRolloutStatus, Phase, Wave, WaveStatus};
use super::image;

/// Partition value that admits every tenant of a wave (one more than the largest order key).
pub const ADMIT_ALL: u128 = 1u128 << 64;

/// A tenant as the planner sees it.
#[derive(Clone, Copy, Debug)]
pub struct TenantId<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

impl TenantId<'_> {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

fn hash64(parts: &[&str]) -> u64 {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            // A separator no Kubernetes name contains, so ("a/b","c") and ("a","b/c") differ.
            h.update([0u8]);
        }
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Order of a tenant inside its wave: the first 8 bytes of SHA-256 of `namespace/name`.
pub fn order_key(namespace: &str, name: &str) -> u64 {
    hash64(&[&format!("{namespace}/{name}")])
}

/// Whether a wave taking `percent` % takes this tenant: an independent draw per wave name.
fn drawn(wave: &str, namespace: &str, name: &str, percent: u32) -> bool {
    percent >= 100 || hash64(&[wave, namespace, name]) % 100 < u64::from(percent)
}

/// Partition as written in the status (16 hex digits; `10000000000000000` admits all).
pub fn format_partition(p: u128) -> String {
    format!("{p:016x}")
}

/// Partition from the status; absent or unreadable admits nobody.
pub fn parse_partition(s: Option<&str>) -> u128 {
    s.and_then(|s| u128::from_str_radix(s, 16).ok())
        .unwrap_or(0)
        .min(ADMIT_ALL)
}

/// A wave with its selector parsed.
#[derive(Clone, Debug)]
pub struct PlannedWave {
    pub name: String,
    pub selector: Option<Selector>,
    pub percent: u32,
}

/// Waves ready to place tenants.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub waves: Vec<PlannedWave>,
}

impl Plan {
    /// Parse the waves; the error names the field (`spec.waves[i].selector`) and what is wrong.
    pub fn compile(waves: &[Wave]) -> Result<Plan, String> {
        let mut out = Vec::with_capacity(waves.len());
        for (i, w) in waves.iter().enumerate() {
            let selector = match &w.selector {
                None => None,
                Some(ls) => Some(Selector::try_from(ls.clone()).map_err(|e| {
                    format!("spec.waves[{i}].selector is not a valid label selector: {}", e.0)
                })?),
            };
            out.push(PlannedWave {
                name: w.name.clone(),
                selector,
                percent: w.percent,
            });
        }
        Ok(Plan { waves: out })
    }

    /// The plan a status accepted (selectors were valid when accepted).
    pub fn from_status(waves: &[WaveStatus]) -> Plan {
        let defs: Vec<Wave> = waves.iter().map(WaveStatus::definition).collect();
        Plan::compile(&defs).unwrap_or_default()
    }

    fn matches(w: &PlannedWave, t: &TenantId<'_>) -> bool {
        w.selector.as_ref().is_none_or(|s| s.matches(t.labels))
    }

    /// The wave (index) of a tenant: the first whose selector matches and whose draw takes it.
    pub fn wave_of(&self, t: &TenantId<'_>) -> Option<usize> {
        self.waves
            .iter()
            .position(|w| Self::matches(w, t) && drawn(&w.name, t.namespace, t.name, w.percent))
    }

    /// Rules that need the fleet: each selector matches a tenant; no tenant matches a selector after
    /// an earlier selector wave took all of its matches.
    pub fn check_against<'a>(&self, tenants: impl Iterator<Item = TenantId<'a>>) -> Result<(), String> {
        let mut matched = vec![false; self.waves.len()];
        for t in tenants {
            let mut taken_by: Option<usize> = None;
            for (i, w) in self.waves.iter().enumerate() {
                let Some(sel) = &w.selector else { continue };
                if !sel.matches(t.labels) {
                    continue;
                }
                matched[i] = true;
                if let Some(first) = taken_by {
                    return Err(format!(
                        "spec.waves[{i}].selector overlaps spec.waves[{first}].selector: tenant {} matches both, and spec.waves[{first}] (percent 100) takes every tenant it matches (rule: waves must not overlap; narrow one of the selectors or lower spec.waves[{first}].percent)",
                        t.key()
                    ));
                }
                if w.percent >= 100 {
                    taken_by = Some(i);
                }
            }
        }
        if let Some(i) = self
            .waves
            .iter()
            .enumerate()
            .position(|(i, w)| w.selector.is_some() && !matched[i])
        {
            return Err(format!(
                "spec.waves[{i}].selector matches no LumenoreConnector (rule: every wave selector must match at least one tenant; pinned and not-deployed tenants do not count)"
            ));
        }
        Ok(())
    }
}

/// Is `s` a DNS label (RFC 1123)?
fn is_dns_label(s: &str) -> bool {
    crate::validate::is_dns_label(s)
}

/// Rules of a spec that need no fleet. The message names the field and the rule.
pub fn check_spec(spec: &super::crd::LumenoreFleetRolloutSpec) -> Result<Plan, String> {
    let r = image::parse(&spec.image).map_err(|e| format!("spec.image {:?} {e}", spec.image))?;
    if r.tag.is_none() && r.digest.is_none() {
        return Err(format!(
            "spec.image {:?} names no tag or digest (rule: a rollout target must name a tag or a digest, never an implicit latest)",
            spec.image
        ));
    }
    if spec.waves.is_empty() {
        return Err("spec.waves is empty (rule: at least one wave)".into());
    }
    if spec.waves.len() > 20 {
        return Err(format!(
            "spec.waves has {} waves (rule: at most 20)",
            spec.waves.len()
        ));
    }
    for (i, w) in spec.waves.iter().enumerate() {
        if !is_dns_label(&w.name) {
            return Err(format!(
                "spec.waves[{i}].name {:?} is not a DNS label (rule: lowercase letters, digits and '-', at most 63 characters)",
                w.name
            ));
        }
        if let Some(j) = spec.waves[..i].iter().position(|x| x.name == w.name) {
            return Err(format!(
                "spec.waves[{i}].name {:?} is also the name of spec.waves[{j}] (rule: wave names are unique)",
                w.name
            ));
        }
        if !(1..=100).contains(&w.percent) {
            return Err(format!(
                "spec.waves[{i}].percent is {} (rule: between 1 and 100)",
                w.percent
            ));
        }
    }
    let last = spec.waves.len() - 1;
    let lw = &spec.waves[last];
    if lw.selector.is_some() || lw.percent != 100 {
        return Err(format!(
            "spec.waves[{last}] ({:?}) must take every remaining tenant (rule: the last wave has no selector and percent 100)",
            lw.name
        ));
    }
    if spec.max_unavailable < 1 {
        return Err("spec.maxUnavailable is 0 (rule: at least 1)".into());
    }
    if spec.ready_deadline_seconds < 1 {
        return Err("spec.readyDeadlineSeconds is 0 (rule: at least 1)".into());
    }
    for (i, t) in spec.skip_tenants.iter().enumerate() {
        let ok = t.split_once('/').is_some_and(|(ns, name)| {
            is_dns_label(ns) && !name.is_empty() && name.len() <= 253 && !name.contains('/')
        });
        if !ok {
            return Err(format!(
                "spec.skipTenants[{i}] {t:?} is not namespace/name (rule: the namespace and name of a LumenoreConnector)"
            ));
        }
    }
    Plan::compile(&spec.waves)
}

/// The image a tenant should run, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantImage {
    pub image: String,
    /// Wave of the tenant in the accepted plan.
    pub wave: Option<String>,
    /// The tenant's own `spec.image` decides.
    pub pinned: bool,
}

/// The image for a tenant: its own `spec.image` pins it; without an accepted rollout plan it is the
/// operator's default; otherwise the target when its wave is admitted, else the previous image.
/// Only the rollout's *status* is read: an edit the operator did not accept changes nothing.
///
/// `current` is the image the tenant's Deployment runs now. The operator never moves a tenant back
/// on its own: a tenant already on the target keeps it while its wave waits (a rollout re-created by
/// GitOps starts with an empty status), and without a rollout a tenant on a newer release of the
/// default image's repository keeps it (a rollout deleted and re-applied leaves a moment with none).
/// Only a rollback (`phase: RolledBack`) moves tenants to an older image.
pub fn tenant_image(
    own_image: Option<&str>,
    tenant: &TenantId<'_>,
    current: Option<&str>,
    rollout: Option<(&LumenoreFleetRolloutStatus, &Plan)>,
    default_image: &str,
) -> TenantImage {
    let wave_of = |st: &LumenoreFleetRolloutStatus, plan: &Plan| {
        plan.wave_of(tenant)
            .and_then(|w| st.waves.get(w).map(|ws| (w, ws.name.clone())))
    };
    let unpinned = |image: &str, wave: Option<String>| TenantImage {
        image: image.to_string(),
        wave,
        pinned: false,
    };
    if let Some(img) = own_image {
        return TenantImage {
            image: img.to_string(),
            wave: None,
            pinned: true,
        };
    }
    let no_plan = || match current {
        Some(c) if image::is_newer(c, default_image) => unpinned(c, None),
        _ => unpinned(default_image, None),
    };
    let Some((st, plan)) = rollout else {
        return no_plan();
    };
    let (Some(target), Some(previous)) = (&st.image, &st.previous_image) else {
        return no_plan();
    };
    let wave = wave_of(st, plan);
    let skipped = st.skip_tenants.iter().any(|s| *s == tenant.key());
    let admitted = !skipped
        && wave.as_ref().is_some_and(|(w, _)| {
            let current = st.current_wave.unwrap_or(0) as usize;
            *w < current
                || (*w == current
                    && u128::from(order_key(tenant.namespace, tenant.name))
                        < parse_partition(st.partition.as_deref()))
        });
    let rolled_back = st.phase == Some(Phase::RolledBack);
    let image = match current {
        _ if admitted => target,
        Some(c) if !rolled_back && !skipped && (c == target || image::is_newer(c, previous)) => c,
        _ => previous,
    };
    unpinned(image, wave.map(|(_, n)| n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn wave(name: &str, sel: Option<&[(&str, &str)]>, percent: u32) -> Wave {
        Wave {
            name: name.into(),
            selector: sel.map(|s| LabelSelector {
                match_labels: Some(labels(s)),
                ..Default::default()
            }),
            percent,
        }
    }

    #[test]
    fn order_key_is_sha256_of_namespace_slash_name() {
        // sha256("tenants/acme") computed independently (coreutils sha256sum).
        assert_eq!(order_key("tenants", "acme"), 0x499d_ce83_8dc0_92f0);
    }

    #[test]
    fn percent_waves_take_about_their_share_and_are_stable() {
        let plan = Plan::compile(&[wave("canary", None, 10), wave("rest", None, 100)]).unwrap();
        let empty = BTreeMap::new();
        let names: Vec<String> = (0..10_000).map(|i| format!("t-{i}")).collect();
        let in_canary = names
            .iter()
            .filter(|n| {
                plan.wave_of(&TenantId {
                    namespace: "ns",
                    name: n,
                    labels: &empty,
                }) == Some(0)
            })
            .count();
        assert!(
            (900..1100).contains(&in_canary),
            "{in_canary} of 10000 in a 10% wave"
        );
        // Adding tenants never moves an existing one.
        let before = plan.wave_of(&TenantId {
            namespace: "ns",
            name: "t-1",
            labels: &empty,
        });
        let after = plan.wave_of(&TenantId {
            namespace: "ns",
            name: "t-1",
            labels: &empty,
        });
        assert_eq!(before, after);
    }

    #[test]
    fn selector_waves_take_matching_tenants_first() {
        let plan = Plan::compile(&[
            wave("canary", Some(&[("tier", "canary")]), 100),
            wave("eu", Some(&[("region", "eu")]), 100),
            wave("rest", None, 100),
        ])
        .unwrap();
        let c = labels(&[("tier", "canary")]);
        let eu = labels(&[("region", "eu")]);
        let us = labels(&[("region", "us")]);
        let id = |l| TenantId {
            namespace: "ns",
            name: "x",
            labels: l,
        };
        assert_eq!(plan.wave_of(&id(&c)), Some(0));
        assert_eq!(plan.wave_of(&id(&eu)), Some(1));
        assert_eq!(plan.wave_of(&id(&us)), Some(2));
    }

    #[test]
    fn overlapping_and_empty_selectors_are_named() {
        let plan = Plan::compile(&[
            wave("canary", Some(&[("tier", "canary")]), 100),
            wave("eu", Some(&[("region", "eu")]), 100),
            wave("rest", None, 100),
        ])
        .unwrap();
        let both = labels(&[("tier", "canary"), ("region", "eu")]);
        let canary = labels(&[("tier", "canary")]);
        let eu = labels(&[("region", "eu")]);
        let t = |l| TenantId {
            namespace: "ns",
            name: "a",
            labels: l,
        };
        let err = plan.check_against([t(&both), t(&eu)].into_iter()).unwrap_err();
        assert!(
            err.starts_with("spec.waves[1].selector overlaps spec.waves[0].selector: tenant ns/a"),
            "{err}"
        );
        let err = plan.check_against([t(&eu)].into_iter()).unwrap_err();
        assert!(
            err.starts_with("spec.waves[0].selector matches no LumenoreConnector"),
            "{err}"
        );
        assert!(plan.check_against([t(&eu), t(&canary)].into_iter()).is_ok());
        // A partial first wave shares its matches with later waves by design.
        let partial = Plan::compile(&[
            wave("canary", Some(&[("region", "eu")]), 10),
            wave("eu", Some(&[("region", "eu")]), 100),
            wave("rest", None, 100),
        ])
        .unwrap();
        assert!(partial.check_against([t(&eu)].into_iter()).is_ok());
    }

    fn spec(image: &str, waves: Vec<Wave>) -> super::super::crd::LumenoreFleetRolloutSpec {
        serde_json::from_value(serde_json::json!({"image": image, "waves": waves})).unwrap()
    }

    #[test]
    fn spec_rules_name_the_field() {
        let ok = vec![wave("canary", Some(&[("a", "b")]), 100), wave("rest", None, 100)];
        assert!(check_spec(&spec("ghcr.io/l/c:1.0", ok.clone())).is_ok());
        let e = check_spec(&spec("ghcr.io/l/c", ok.clone())).unwrap_err();
        assert!(
            e.starts_with("spec.image \"ghcr.io/l/c\" names no tag or digest"),
            "{e}"
        );
        let e = check_spec(&spec("ghcr.io/L/c:1", ok.clone())).unwrap_err();
        assert!(
            e.starts_with("spec.image \"ghcr.io/L/c:1\" does not match the image reference grammar"),
            "{e}"
        );
        let e = check_spec(&spec("r:1", vec![wave("a", None, 100), wave("a", None, 100)])).unwrap_err();
        assert!(
            e.starts_with("spec.waves[1].name \"a\" is also the name of spec.waves[0]"),
            "{e}"
        );
        let e = check_spec(&spec(
            "r:1",
            vec![wave("a", None, 100), wave("b", Some(&[("x", "y")]), 100)],
        ))
        .unwrap_err();
        assert!(
            e.starts_with("spec.waves[1] (\"b\") must take every remaining tenant"),
            "{e}"
        );
        let mut s = spec("r:1", ok.clone());
        s.skip_tenants = vec!["no-slash".into()];
        let e = check_spec(&s).unwrap_err();
        assert!(
            e.starts_with("spec.skipTenants[0] \"no-slash\" is not namespace/name"),
            "{e}"
        );
        let bad_sel = Wave {
            name: "x".into(),
            selector: Some(LabelSelector {
                match_expressions: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                        key: "a".into(),
                        operator: "In".into(),
                        values: None,
                    },
                ]),
                ..Default::default()
            }),
            percent: 100,
        };
        let e = check_spec(&spec("r:1", vec![bad_sel, wave("rest", None, 100)])).unwrap_err();
        assert!(
            e.starts_with("spec.waves[0].selector is not a valid label selector"),
            "{e}"
        );
    }

    fn status(current: u32, partition: u128) -> LumenoreFleetRolloutStatus {
        LumenoreFleetRolloutStatus {
            image: Some("r:new".into()),
            previous_image: Some("r:old".into()),
            waves: vec![
                WaveStatus {
                    name: "canary".into(),
                    selector: Some(LabelSelector {
                        match_labels: Some(labels(&[("tier", "canary")])),
                        ..Default::default()
                    }),
                    percent: 100,
                    tenants: 0,
                    updated: 0,
                    ready: 0,
                },
                WaveStatus {
                    name: "rest".into(),
                    selector: None,
                    percent: 100,
                    tenants: 0,
                    updated: 0,
                    ready: 0,
                },
            ],
            current_wave: Some(current),
            partition: Some(format_partition(partition)),
            ..Default::default()
        }
    }

    #[test]
    fn tenant_image_follows_waves_partition_pins_and_skips() {
        let canary = labels(&[("tier", "canary")]);
        let plain = BTreeMap::new();
        let t = |name, l| TenantId {
            namespace: "ns",
            name,
            labels: l,
        };
        let key_a = u128::from(order_key("ns", "a"));
        // Canary wave, partition just above a's key: a admitted.
        let st = status(0, key_a + 1);
        let plan = Plan::from_status(&st.waves);
        let img = |own: Option<&str>, id: &TenantId<'_>, st: &LumenoreFleetRolloutStatus| {
            tenant_image(own, id, None, Some((st, &plan)), "r:default")
        };
        assert_eq!(img(None, &t("a", &canary), &st).image, "r:new");
        assert_eq!(img(None, &t("a", &canary), &st).wave.as_deref(), Some("canary"));
        // Partition at a's key: not admitted.
        assert_eq!(img(None, &t("a", &canary), &status(0, key_a)).image, "r:old");
        // Later wave untouched while the canary runs.
        assert_eq!(img(None, &t("a", &plain), &status(0, ADMIT_ALL)).image, "r:old");
        // Past the wave: target.
        assert_eq!(img(None, &t("a", &plain), &status(2, 0)).image, "r:new");
        // Pinned: own image, whatever the rollout says.
        let p = img(Some("r:mine"), &t("a", &plain), &status(2, 0));
        assert!(p.pinned && p.image == "r:mine");
        // Skipped: previous image.
        let mut s = status(2, 0);
        s.skip_tenants = vec!["ns/a".into()];
        assert_eq!(img(None, &t("a", &plain), &s).image, "r:old");
        // No accepted plan: the operator default.
        let none = LumenoreFleetRolloutStatus::default();
        assert_eq!(
            tenant_image(None, &t("a", &plain), None, Some((&none, &plan)), "r:default").image,
            "r:default"
        );
        assert_eq!(
            tenant_image(None, &t("a", &plain), None, None, "r:default").image,
            "r:default"
        );
    }

    /// Defect: a rollout re-created by GitOps (empty status) or deleted and re-applied moved every
    /// tenant already on the newer image back at once.
    #[test]
    fn a_tenant_is_never_moved_back_outside_a_rollback() {
        let plain = BTreeMap::new();
        let a = TenantId {
            namespace: "ns",
            name: "a",
            labels: &plain,
        };
        let (old, new) = ("r/c:0.1.0", "r/c:0.2.0");
        let mut st = status(0, 0);
        st.image = Some(new.into());
        st.previous_image = Some(old.into());
        let plan = Plan::from_status(&st.waves);
        let img = |current: Option<&str>, st: &LumenoreFleetRolloutStatus| {
            tenant_image(None, &a, current, Some((st, &plan)), old).image
        };
        // Not admitted yet, already on the target: keeps it.
        assert_eq!(img(Some(new), &st), new);
        // Not admitted, on the previous image: stays there.
        assert_eq!(img(Some(old), &st), old);
        assert_eq!(img(None, &st), old);
        // A rollback is the one way back.
        st.phase = Some(Phase::RolledBack);
        assert_eq!(img(Some(new), &st), old);
        // No rollout at all (deleted, not yet re-applied): a newer release of the default's
        // repository stays; an older one or another repository follows the default.
        assert_eq!(tenant_image(None, &a, Some(new), None, old).image, new);
        assert_eq!(tenant_image(None, &a, Some("r/c:0.0.1"), None, old).image, old);
        assert_eq!(
            tenant_image(None, &a, Some("r/other:9.0.0"), None, old).image,
            old
        );
    }

    #[test]
    fn partition_round_trips() {
        assert_eq!(parse_partition(Some(&format_partition(ADMIT_ALL))), ADMIT_ALL);
        assert_eq!(format_partition(ADMIT_ALL), "10000000000000000");
        assert_eq!(parse_partition(Some("00000000000000ff")), 255);
        assert_eq!(parse_partition(None), 0);
        assert_eq!(parse_partition(Some("zz")), 0);
    }
}
