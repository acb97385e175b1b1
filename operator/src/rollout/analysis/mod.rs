//! Metric analysis of a wave's bake (`spec.analysis`): the wave's tenants against the baseline (the
//! tenants still on the previous image), from a Prometheus-compatible query API.
//!
//! - [`query`]: the PromQL, built and parsed (pure);
//! - [`verdict`]: samples to verdicts (pure);
//! - [`prometheus`]: the query API client;
//! - [`run`] here: one analysis, the I/O between them. What the verdicts do to the rollout is
//!   [`super::decide`]'s.

pub mod prometheus;
pub mod query;
pub mod verdict;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::crd::{Analysis, CheckStatus};
use query::TenantSeries;
use verdict::Calls;

/// What [`super::decide`] asks to be measured.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisRequest {
    pub wave: String,
    pub wave_tenants: Vec<TenantSeries>,
    pub baseline_tenants: Vec<TenantSeries>,
    /// Each side may be selected by its namespace and tenant sets ([`query::exact_by_sets`]).
    pub wave_by_sets: bool,
    pub baseline_by_sets: bool,
    /// Seconds of bake so far: the range of every query.
    pub window_seconds: u32,
}

impl AnalysisRequest {
    /// The wave, then the baseline, each with how it may be selected.
    pub fn sides(&self) -> [(&[TenantSeries], bool); 2] {
        [
            (&self.wave_tenants, self.wave_by_sets),
            (&self.baseline_tenants, self.baseline_by_sets),
        ]
    }
}

/// What one analysis measured: each check's figures, or why the query API gave none.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisRun {
    pub wave: String,
    /// Seconds since the epoch the queries were evaluated at.
    pub at: i64,
    pub window_seconds: u32,
    pub outcome: Result<Vec<CheckStatus>, String>,
}

/// Every query of an analysis, in the order [`run`] sends them (for tests and the benchmark).
pub fn queries(spec: &Analysis, req: &AnalysisRequest) -> Result<Vec<String>, String> {
    let fixed = &spec.prometheus.labels;
    let w = req.window_seconds.max(1);
    let mut out = Vec::new();
    for side in req.sides() {
        out.extend(query::calls_by_outcome(fixed, side, w));
    }
    if spec.latency.enabled {
        for q in &spec.latency.quantiles {
            for side in req.sides() {
                out.extend(query::latency_quantile(fixed, side, w, *q));
            }
        }
    }
    for c in &spec.custom {
        out.push(query::render_custom(
            c,
            &req.wave_tenants,
            &req.baseline_tenants,
            w,
        )?);
    }
    Ok(out)
}

fn one_number(samples: &[prometheus::Sample]) -> Result<Option<f64>, String> {
    match samples {
        [] => Ok(None),
        [s] => Ok(Some(s.value)),
        more => Err(format!("the query gave {} series; a check needs one", more.len())),
    }
}

/// Run one analysis: read the credentials, send every query at once, judge. Any failed query of a
/// built-in check makes the whole run a failure (`Err`): a partial answer is never a pass.
pub async fn run(spec: &Analysis, req: &AnalysisRequest, secrets: &Api<Secret>, at: i64) -> AnalysisRun {
    let outcome = measure(spec, req, secrets, at).await;
    AnalysisRun {
        wave: req.wave.clone(),
        at,
        window_seconds: req.window_seconds,
        outcome,
    }
}

async fn measure(
    spec: &Analysis,
    req: &AnalysisRequest,
    secrets: &Api<Secret>,
    at: i64,
) -> Result<Vec<CheckStatus>, String> {
    let api = prometheus::QueryApi::connect(&spec.prometheus, secrets).await?;
    let fixed = &spec.prometheus.labels;
    let w = req.window_seconds.max(1);
    let [wave_side, baseline_side] = req.sides();
    let calls_of = |side: (&[TenantSeries], bool)| {
        let q = query::calls_by_outcome(fixed, side, w);
        let api = &api;
        async move {
            match q {
                None => Ok(Calls::default()),
                Some(q) => api.query(&q, at).await.map(|samples| {
                    Calls::from_outcomes(
                        samples
                            .iter()
                            .map(|s| (s.labels.get("outcome").map(String::as_str), s.value)),
                    )
                }),
            }
        }
    };
    let (wave, baseline) = futures::join!(calls_of(wave_side), calls_of(baseline_side));
    let (wave, baseline) = (wave?, baseline?);

    let mut checks = Vec::new();
    if spec.error_ratio.enabled {
        checks.push(verdict::error_ratio(
            &spec.error_ratio,
            spec.min_calls,
            &wave,
            &baseline,
        ));
    }
    if spec.latency.enabled {
        let asks = spec.latency.quantiles.iter().map(|q| {
            let api = &api;
            async move {
                let ask = |side: (&[TenantSeries], bool)| {
                    let q = query::latency_quantile(fixed, side, w, *q);
                    async move {
                        match q {
                            None => Ok(None),
                            Some(q) => one_number(&api.query(&q, at).await?),
                        }
                    }
                };
                let (a, b) = futures::join!(ask(wave_side), ask(baseline_side));
                Ok::<_, String>((*q, a?, b?))
            }
        });
        for r in join_all(asks).await {
            let (q, a, b) = r?;
            checks.push(verdict::latency(
                &spec.latency,
                q,
                spec.min_calls,
                (&wave, a),
                (&baseline, b),
            ));
        }
    }
    let customs = spec.custom.iter().map(|c| {
        let api = &api;
        async move {
            let q = query::render_custom(c, &req.wave_tenants, &req.baseline_tenants, w)?;
            let samples = api.query(&q, at).await?;
            let value =
                one_number(&samples).and_then(|v| v.ok_or_else(|| "the query gave no series".to_string()));
            Ok::<_, String>(verdict::custom(c, spec.min_calls, &wave, value))
        }
    });
    for c in join_all(customs).await {
        checks.push(c?);
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(pairs: &[(&str, &str)]) -> Vec<TenantSeries> {
        pairs
            .iter()
            .map(|(ns, t)| TenantSeries {
                namespace: ns.to_string(),
                tenant: t.to_string(),
            })
            .collect()
    }

    /// A second parser nobody here wrote: every query of an analysis (built-ins over two namespaces,
    /// a fixed label with a quote, a custom template) as a recording rule that `promtool check rules`
    /// accepts. Skipped only outside CI when promtool is missing.
    #[test]
    fn every_query_passes_promtool() {
        let spec: crate::rollout::crd::Analysis = serde_json::from_value(serde_json::json!({
            "prometheus": {"url": "http://p:9090", "labels": {"cluster": "eu\"1"}},
            "latency": {"quantiles": ["p50", "p90", "p95", "p99"]},
            "custom": [{"name": "backend-errors", "max": 1,
                        "query": "sum(increase(lumenore_connector_backend_errors_total{namespace=~\"{{ wave_namespaces }}\",tenant=~\"{{ wave }}\"}[{{ window }}])) / clamp_min(sum(increase(lumenore_connector_backend_errors_total{tenant=~\"{{ baseline }}\"}[{{ window }}])), 1)"}]
        }))
        .unwrap();
        let req = AnalysisRequest {
            wave: "canary".into(),
            wave_tenants: side(&[("team-a", "acme"), ("team-b", "globex"), ("team-a", "a.b")]),
            baseline_tenants: side(&[("team-c", "initech")]),
            wave_by_sets: false,
            baseline_by_sets: true,
            window_seconds: 300,
        };
        let qs = queries(&spec, &req).unwrap();
        assert_eq!(qs.len(), 2 + 4 * 2 + 1);
        for q in &qs {
            query::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
        let rules = serde_json::json!({"groups": [{"name": "analysis", "rules": qs.iter().enumerate()
            .map(|(i, q)| serde_json::json!({"record": format!("analysis:query{i}"), "expr": q}))
            .collect::<Vec<_>>()}]});
        let dir = std::env::temp_dir().join(format!("lumenore-analysis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rules.json.yaml");
        // JSON is YAML: promtool reads it as is.
        std::fs::write(&file, serde_json::to_string_pretty(&rules).unwrap()).unwrap();
        match std::process::Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(&file)
            .output()
        {
            Ok(out) => assert!(
                out.status.success(),
                "promtool refused a query: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) if std::env::var_os("CI").is_none() => eprintln!("SKIPPED promtool check: {e}"),
            Err(e) => panic!("promtool is required in CI (.ci/install-tools.sh): {e}"),
        }
    }
}
