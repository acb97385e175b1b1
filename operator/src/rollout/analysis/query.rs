//! The PromQL of an analysis, built from the wave's and the baseline's tenants. Pure: no I/O.
//!
//! A tenant is a pair (`namespace`, `tenant` label), the labels the chart's PodMonitor gives every
//! connector series. Two regex matchers, one per label, would also match the pairs across them (wave
//! tenant `a/x` and `b/y` would bring in `a/y`), so a side is selected as one selector per namespace,
//! joined by `or`: exact, and one selector when the tenants share a namespace.
//!
//! Every value put into a query is regex-escaped (RE2's metacharacters) and then PromQL-string-escaped,
//! and every query is parsed by `promql-parser` before it is sent: a query that does not parse is
//! never sent.

use std::collections::BTreeMap;

use super::super::crd::{CustomCheck, Quantile};

/// The calls counter and the latency histogram every connector exports.
pub const CALLS: &str = "lumenore_connector_tool_calls_total";
pub const LATENCY_BUCKET: &str = "lumenore_connector_tool_call_duration_seconds_bucket";

/// One tenant as its series are labelled.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TenantSeries {
    pub namespace: String,
    /// The `tenant` label: the LumenoreConnector's `spec.tenant`.
    pub tenant: String,
}

/// Escape `s` for the inside of a double-quoted PromQL string.
pub fn promql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

/// An alternation of the exact values `values` for a `=~"..."` matcher (regex- then string-escaped).
/// Empty when `values` is: a matcher `=~""` matches only an absent label, so it selects nothing here.
pub fn alternation<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let mut vals: Vec<&str> = values.into_iter().collect();
    vals.sort_unstable();
    vals.dedup();
    let joined = vals
        .iter()
        .map(|v| regex::escape(v))
        .collect::<Vec<_>>()
        .join("|");
    promql_string(&joined)
}

/// A PromQL label name (`[a-zA-Z_][a-zA-Z0-9_]*`), not reserved (`__` prefix).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// The selectors of one side: `metric{<extra>,namespace="ns",tenant=~"a|b",<fixed>}` per namespace.
fn selectors(
    metric: &str,
    extra: &str,
    fixed: &BTreeMap<String, String>,
    side: &[TenantSeries],
    by_sets: bool,
) -> Vec<String> {
    let fixed: String = fixed
        .iter()
        .map(|(k, v)| format!(",{k}=\"{}\"", promql_string(v)))
        .collect();
    let matcher = |label: &str, values: &[&str]| {
        if values.len() == 1 {
            format!("{label}=\"{}\"", promql_string(values[0]))
        } else {
            format!("{label}=~\"{}\"", alternation(values.iter().copied()))
        }
    };
    if by_sets {
        let mut namespaces: Vec<&str> = side.iter().map(|t| t.namespace.as_str()).collect();
        let mut tenants: Vec<&str> = side.iter().map(|t| t.tenant.as_str()).collect();
        for v in [&mut namespaces, &mut tenants] {
            v.sort_unstable();
            v.dedup();
        }
        return vec![format!(
            "{metric}{{{extra}{},{}{fixed}}}",
            matcher("namespace", &namespaces),
            matcher("tenant", &tenants)
        )];
    }
    let mut by_ns: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for t in side {
        by_ns.entry(&t.namespace).or_default().push(&t.tenant);
    }
    by_ns
        .into_iter()
        .map(|(ns, names)| {
            format!(
                "{metric}{{{extra}{},{}{fixed}}}",
                matcher("namespace", &[ns]),
                matcher("tenant", &names)
            )
        })
        .collect()
}

/// Whether the side's namespaces x tenant labels hold no tenant of `fleet` (every LumenoreConnector
/// the operator sees, as (namespace, tenant label)) outside the side: then one selector with a
/// namespace and a tenant alternation selects the side exactly, instead of one selector per
/// namespace (a fleet of one tenant per namespace would need thousands, joined by `or`).
pub fn exact_by_sets<'a>(side: &[TenantSeries], fleet: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
    use std::collections::BTreeSet;
    let pairs: BTreeSet<(&str, &str)> = side
        .iter()
        .map(|t| (t.namespace.as_str(), t.tenant.as_str()))
        .collect();
    let namespaces: BTreeSet<&str> = pairs.iter().map(|p| p.0).collect();
    let tenants: BTreeSet<&str> = pairs.iter().map(|p| p.1).collect();
    fleet
        .into_iter()
        .all(|(ns, t)| !(namespaces.contains(ns) && tenants.contains(t)) || pairs.contains(&(ns, t)))
}

/// `increase(<selector>[<window>s])` for each namespace of the side, joined by `or`.
fn increases(
    metric: &str,
    extra: &str,
    fixed: &BTreeMap<String, String>,
    (side, by_sets): (&[TenantSeries], bool),
    window: u32,
) -> String {
    let terms: Vec<String> = selectors(metric, extra, fixed, side, by_sets)
        .into_iter()
        .map(|s| format!("increase({s}[{window}s])"))
        .collect();
    balanced_or(&terms)
}

/// `a or b or c ...` nested as a balanced tree: the same vector, but a fleet of one tenant per
/// namespace gives a parse tree log2(n) deep instead of n deep (parsers and evaluators recurse).
fn balanced_or(terms: &[String]) -> String {
    match terms {
        [] => String::new(),
        [one] => one.clone(),
        _ => {
            let (a, b) = terms.split_at(terms.len() / 2);
            let part = |t: &[String]| {
                if t.len() == 1 {
                    t[0].clone()
                } else {
                    format!("({})", balanced_or(t))
                }
            };
            format!("{} or {}", part(a), part(b))
        }
    }
}

/// Tool calls of a side over the window, by outcome. `None` for a side without tenants.
/// `by_sets`: see [`exact_by_sets`].
pub fn calls_by_outcome(
    fixed: &BTreeMap<String, String>,
    (side, by_sets): (&[TenantSeries], bool),
    window: u32,
) -> Option<String> {
    (!side.is_empty()).then(|| {
        format!(
            "sum by (outcome) ({})",
            increases(CALLS, "", fixed, (side, by_sets), window)
        )
    })
}

/// A latency quantile of a side over the window. `None` for a side without tenants.
pub fn latency_quantile(
    fixed: &BTreeMap<String, String>,
    (side, by_sets): (&[TenantSeries], bool),
    window: u32,
    q: Quantile,
) -> Option<String> {
    (!side.is_empty()).then(|| {
        format!(
            "histogram_quantile({}, sum by (le) ({}))",
            q.value(),
            increases(LATENCY_BUCKET, "", fixed, (side, by_sets), window)
        )
    })
}

/// Render a custom check's template. Unknown variables are an error (strict undefined).
pub fn render_custom(
    check: &CustomCheck,
    wave: &[TenantSeries],
    baseline: &[TenantSeries],
    window: u32,
) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // A template is a spec value: bounded work (no loop runs away) and a bounded query.
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.add_template("query", &check.query)
        .map_err(|e| format!("custom check {}: the template does not parse: {e}", check.name))?;
    let tenants = |side: &[TenantSeries]| alternation(side.iter().map(|t| t.tenant.as_str()));
    let namespaces = |side: &[TenantSeries]| alternation(side.iter().map(|t| t.namespace.as_str()));
    let ctx = minijinja::context! {
        wave => tenants(wave),
        baseline => tenants(baseline),
        wave_namespaces => namespaces(wave),
        baseline_namespaces => namespaces(baseline),
        window => format!("{window}s"),
    };
    let q = env
        .get_template("query")
        .and_then(|t| t.render(ctx))
        .map_err(|e| format!("custom check {}: the template does not render: {e}", check.name))?;
    let limit = MAX_CUSTOM_QUERY_BYTES + alternations_len(wave) + alternations_len(baseline);
    if q.len() > limit {
        return Err(format!(
            "custom check {}: the rendered query is {} bytes, more than the template ({} bytes at most) and its tenant lists allow",
            check.name,
            q.len(),
            MAX_CUSTOM_QUERY_BYTES
        ));
    }
    Ok(q)
}

/// Fuel of one template rendering (MiniJinja's instruction budget).
const TEMPLATE_FUEL: u64 = 100_000;
/// A rendered custom query's size beyond its tenant lists.
const MAX_CUSTOM_QUERY_BYTES: usize = 16 << 10;

/// Room for each variable that holds a side's tenants or namespaces, used up to 4 times.
fn alternations_len(side: &[TenantSeries]) -> usize {
    4 * side
        .iter()
        .map(|t| 2 * (t.tenant.len() + t.namespace.len()) + 2)
        .sum::<usize>()
}

/// Parse `query` as PromQL (the parser of Prometheus' grammar, `promql-parser`).
pub fn parse(query: &str) -> Result<(), String> {
    promql_parser::parser::parse(query)
        .map(|_| ())
        .map_err(|e| format!("not PromQL: {e}"))
}

/// The spec's rules a schema cannot state: label names, and every custom template renders and parses
/// (with sample tenants).
pub fn check_spec(analysis: &super::super::crd::Analysis) -> Result<(), String> {
    for name in analysis.prometheus.labels.keys() {
        if !valid_label_name(name) || matches!(name.as_str(), "namespace" | "tenant" | "le" | "outcome") {
            return Err(format!(
                "analysis.prometheus.labels: {name:?} is not a label name the analysis may fix (rule: [a-zA-Z_][a-zA-Z0-9_]*, not __-prefixed, not namespace, tenant, le or outcome)"
            ));
        }
    }
    let sample = |ns: &str, t: &str| TenantSeries {
        namespace: ns.into(),
        tenant: t.into(),
    };
    let wave = [sample("team-a", "acme")];
    let baseline = [sample("team-a", "globex"), sample("team-b", "initech")];
    for c in &analysis.custom {
        let q = render_custom(c, &wave, &baseline, 300)?;
        parse(&q).map_err(|e| format!("analysis.custom[{}].query: rendered, it is {e}", c.name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ns: &str, name: &str) -> TenantSeries {
        TenantSeries {
            namespace: ns.into(),
            tenant: name.into(),
        }
    }

    #[test]
    fn selectors_are_exact_pairs_one_per_namespace() {
        let side = [t("a", "x"), t("b", "y"), t("a", "z")];
        let q = calls_by_outcome(&BTreeMap::new(), (&side, false), 120).unwrap();
        assert_eq!(
            q,
            "sum by (outcome) (increase(lumenore_connector_tool_calls_total{namespace=\"a\",tenant=~\"x|z\"}[120s]) or increase(lumenore_connector_tool_calls_total{namespace=\"b\",tenant=\"y\"}[120s]))"
        );
        parse(&q).unwrap();
        assert!(calls_by_outcome(&BTreeMap::new(), (&[], false), 60).is_none());
    }

    #[test]
    fn one_selector_when_the_sets_select_no_other_tenant() {
        // One tenant per namespace, names unique: the rectangle holds only the side.
        let side = [t("ns-1", "a"), t("ns-2", "b")];
        let fleet = [("ns-1", "a"), ("ns-2", "b"), ("ns-3", "c")];
        assert!(exact_by_sets(&side, fleet));
        let q = calls_by_outcome(&BTreeMap::new(), (&side, true), 60).unwrap();
        assert_eq!(
            q,
            r#"sum by (outcome) (increase(lumenore_connector_tool_calls_total{namespace=~"ns\\-1|ns\\-2",tenant=~"a|b"}[60s]))"#
        );
        parse(&q).unwrap();
        // ns-1/b exists and is not in the side: the sets would match it.
        assert!(!exact_by_sets(
            &side,
            [("ns-1", "a"), ("ns-2", "b"), ("ns-1", "b")]
        ));
    }

    #[test]
    fn many_namespaces_nest_as_a_balanced_tree() {
        let terms: Vec<String> = (0..5).map(|i| format!("x{i}")).collect();
        assert_eq!(balanced_or(&terms), "(x0 or x1) or (x2 or (x3 or x4))");
        let side: Vec<TenantSeries> = (0..10_000).map(|i| t(&format!("ns-{i:05}"), "acme")).collect();
        let q = calls_by_outcome(&BTreeMap::new(), (&side, false), 300).unwrap();
        let depth = q
            .chars()
            .scan(0i32, |d, c| {
                *d += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                Some(*d)
            })
            .max()
            .unwrap();
        assert!(depth <= 20, "{depth}");
        parse(&q).unwrap();
    }

    #[test]
    fn hostile_values_stay_inside_their_string() {
        // A tenant label cannot hold these (a DNS label), but a namespace label from another
        // Prometheus setup or a fixed label value could: nothing escapes its matcher.
        let side = [t("a\"}or vector(1)#", "x.*|y"), t("b", "q\\")];
        let mut fixed = BTreeMap::new();
        fixed.insert("cluster".to_string(), "eu\"1".to_string());
        for q in [
            calls_by_outcome(&fixed, (&side, false), 60).unwrap(),
            latency_quantile(&fixed, (&side, false), 60, Quantile::P99).unwrap(),
        ] {
            parse(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert!(q.contains(r#"namespace="a\"}or vector(1)#""#), "{q}");
            assert!(q.contains(r#"cluster="eu\"1""#), "{q}");
        }
        // Selected by sets, the same values go through the regex escape too.
        let q = calls_by_outcome(&fixed, (&side, true), 60).unwrap();
        parse(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
        assert!(q.contains(r#"namespace=~"a\"\\}or vector\\(1\\)\\#|b""#), "{q}");
        assert_eq!(alternation(["x.*|y", "b"]), r"b|x\\.\\*\\|y");
    }

    #[test]
    fn custom_templates_render_escaped_and_strict() {
        let check = CustomCheck {
            name: "backend-errors".into(),
            query:
                "sum(increase(lumenore_connector_backend_errors_total{tenant=~\"{{ wave }}\"}[{{ window }}]))"
                    .into(),
            max: Some(1.0),
            min: None,
        };
        let q = render_custom(&check, &[t("a", "x"), t("b", "y.z")], &[], 90).unwrap();
        assert_eq!(
            q,
            r#"sum(increase(lumenore_connector_backend_errors_total{tenant=~"x|y\\.z"}[90s]))"#
        );
        parse(&q).unwrap();
        let unknown = CustomCheck {
            query: "sum(x{tenant=~\"{{ waves }}\"})".into(),
            ..check.clone()
        };
        assert!(
            render_custom(&unknown, &[], &[], 1)
                .unwrap_err()
                .contains("does not render")
        );
        let bad = CustomCheck {
            query: "sum(x{tenant=~\"{{ wave }}\"}".into(),
            ..check
        };
        let spec_err = {
            let mut a: crate::rollout::crd::Analysis =
                serde_json::from_value(serde_json::json!({"prometheus": {"url": "http://p:9090"}})).unwrap();
            a.custom.push(bad);
            check_spec(&a).unwrap_err()
        };
        assert!(
            spec_err.contains("analysis.custom[backend-errors].query"),
            "{spec_err}"
        );
    }

    #[test]
    fn fixed_label_names_are_checked() {
        let mut a: crate::rollout::crd::Analysis = serde_json::from_value(
            serde_json::json!({"prometheus": {"url": "http://p:9090", "labels": {"tenant": "x"}}}),
        )
        .unwrap();
        assert!(check_spec(&a).unwrap_err().contains("analysis.prometheus.labels"));
        a.prometheus.labels = [("cluster".to_string(), "eu".to_string())].into();
        check_spec(&a).unwrap();
        assert!(!valid_label_name("1a") && !valid_label_name("__name__") && valid_label_name("_x9"));
    }
}
