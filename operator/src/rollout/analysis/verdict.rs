//! Samples to verdicts: the pure core of the analysis.
//!
//! - No number (no series, NaN, ±Inf, a negative count) is never a pass and never a fail: it is
//!   inconclusive, as is a wave with fewer than `minCalls` calls.
//! - Counter resets are Prometheus' part (`increase` restarts from the new value); what reaches here
//!   after one can still be uneven: the errors series and the calls series extrapolate apart, so
//!   errors may exceed calls. The ratio is then capped at 1, never taken as garbage.
//! - A baseline with fewer than `minCalls` calls (no traffic, or no tenant left on the previous image)
//!   is not compared with: the error ratio is held to `maxIncrease` alone (as if the baseline had no
//!   errors) and latency to `maxSeconds` alone (inconclusive without one).

use super::super::crd::{CheckStatus, CustomCheck, ErrorRatioCheck, LatencyCheck, Quantile, Verdict};

/// A number, when it is one.
fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

/// A count, when it is one (finite and not negative).
fn count(v: Option<f64>) -> Option<f64> {
    finite(v).filter(|x| *x >= 0.0)
}

/// Tool calls of one side over the window: all outcomes, and `outcome="error"`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Calls {
    pub total: Option<f64>,
    pub errors: Option<f64>,
}

impl Calls {
    /// From the `sum by (outcome)` answer: `(outcome, value)` pairs.
    pub fn from_outcomes<'a>(samples: impl IntoIterator<Item = (Option<&'a str>, f64)>) -> Calls {
        let mut total = None::<f64>;
        let mut errors = None::<f64>;
        for (outcome, v) in samples {
            total = Some(total.unwrap_or(0.0) + v);
            if outcome == Some("error") {
                errors = Some(errors.unwrap_or(0.0) + v);
            }
        }
        // Series were there: no error series means no error.
        Calls {
            total,
            errors: errors.or(total.map(|_| 0.0)),
        }
    }

    fn enough(&self, min_calls: u32) -> bool {
        count(self.total).is_some_and(|t| t >= f64::from(min_calls))
    }

    /// errors / total, capped to [0, 1]; `None` without a usable count.
    fn ratio(&self) -> Option<f64> {
        let (t, e) = (count(self.total)?, count(self.errors)?);
        (t > 0.0).then(|| (e / t).min(1.0))
    }
}

fn status(name: String, verdict: Verdict, message: String) -> CheckStatus {
    CheckStatus {
        name,
        verdict,
        wave: None,
        baseline: None,
        limit: None,
        wave_calls: None,
        baseline_calls: None,
        message,
    }
}

fn too_few(name: String, wave: &Calls, min_calls: u32) -> CheckStatus {
    let mut s = status(
        name,
        Verdict::Inconclusive,
        match count(wave.total) {
            Some(t) => format!("{t:.0} calls of the wave, {min_calls} needed"),
            None => "no calls of the wave recorded".to_string(),
        },
    );
    s.wave_calls = count(wave.total);
    s
}

/// The error-ratio check.
pub fn error_ratio(cfg: &ErrorRatioCheck, min_calls: u32, wave: &Calls, baseline: &Calls) -> CheckStatus {
    let name = "error-ratio".to_string();
    let Some(w) = wave.ratio().filter(|_| wave.enough(min_calls)) else {
        return too_few(name, wave, min_calls);
    };
    let b = baseline.ratio().filter(|_| baseline.enough(min_calls));
    // Both bounds must be crossed: a doubling of 0.1% is noise, one point more over a 30% baseline too.
    let limit = match b {
        Some(b) => (b * cfg.max_factor).max(b + cfg.max_increase),
        None => cfg.max_increase,
    };
    let verdict = if w > limit { Verdict::Fail } else { Verdict::Pass };
    let message = match b {
        Some(b) => format!(
            "error ratio {} of the wave against {} of the baseline (limit {})",
            pct(w),
            pct(b),
            pct(limit)
        ),
        None => format!(
            "error ratio {} of the wave; the baseline has too few calls to compare, limit {}",
            pct(w),
            pct(limit)
        ),
    };
    CheckStatus {
        name,
        verdict,
        wave: Some(w),
        baseline: b,
        limit: Some(limit),
        wave_calls: count(wave.total),
        baseline_calls: count(baseline.total),
        message,
    }
}

/// One latency quantile check; `wave_q` and `baseline_q` are `histogram_quantile` answers (seconds).
pub fn latency(
    cfg: &LatencyCheck,
    q: Quantile,
    min_calls: u32,
    (wave, wave_q): (&Calls, Option<f64>),
    (baseline, baseline_q): (&Calls, Option<f64>),
) -> CheckStatus {
    let name = format!("latency-{}", q.name());
    let Some(w) = finite(wave_q).filter(|x| *x >= 0.0 && wave.enough(min_calls)) else {
        let mut s = too_few(name, wave, min_calls);
        if wave.enough(min_calls) {
            s.message = format!("no {} of the wave (no histogram data)", q.name());
        }
        return s;
    };
    let b = finite(baseline_q).filter(|x| *x >= 0.0 && baseline.enough(min_calls));
    let relative = b.map(|b| (b * cfg.max_factor).max(b + cfg.min_increase_seconds));
    let limit = match (relative, cfg.max_seconds) {
        (Some(r), Some(m)) => Some(r.min(m)),
        (r, m) => r.or(m),
    };
    // Nothing to hold the wave to (no baseline to compare, no maxSeconds): not a pass.
    let verdict = match limit {
        Some(l) if w > l => Verdict::Fail,
        Some(_) => Verdict::Pass,
        None => Verdict::Inconclusive,
    };
    let message = match (b, limit) {
        (Some(b), Some(l)) => format!(
            "{} {} of the wave against {} of the baseline (limit {})",
            q.name(),
            secs(w),
            secs(b),
            secs(l)
        ),
        (None, Some(l)) => format!(
            "{} {} of the wave; the baseline has too few calls to compare, limit {} (maxSeconds)",
            q.name(),
            secs(w),
            secs(l)
        ),
        (_, None) => format!(
            "{} {} of the wave; the baseline has too few calls to compare and no maxSeconds is set",
            q.name(),
            secs(w)
        ),
    };
    CheckStatus {
        name,
        verdict,
        wave: Some(w),
        baseline: b,
        limit,
        wave_calls: count(wave.total),
        baseline_calls: count(baseline.total),
        message,
    }
}

/// A custom check: `value` is the query's one number (`Err`: it gave none or several).
pub fn custom(check: &CustomCheck, min_calls: u32, wave: &Calls, value: Result<f64, String>) -> CheckStatus {
    let name = check.name.clone();
    if !wave.enough(min_calls) {
        return too_few(name, wave, min_calls);
    }
    let v = match value {
        Ok(v) if v.is_finite() => v,
        Ok(v) => return status(name, Verdict::Inconclusive, format!("the query gave {v}")),
        Err(e) => return status(name, Verdict::Inconclusive, e),
    };
    let over = check.max.filter(|m| v > *m);
    let under = check.min.filter(|m| v < *m);
    let (verdict, message) = match (over, under) {
        (Some(m), _) => (Verdict::Fail, format!("{v} is above the maximum {m}")),
        (_, Some(m)) => (Verdict::Fail, format!("{v} is below the minimum {m}")),
        _ => (Verdict::Pass, format!("{v} within the limits")),
    };
    CheckStatus {
        name,
        verdict,
        wave: Some(v),
        baseline: None,
        limit: over.or(under).or(check.max).or(check.min),
        wave_calls: count(wave.total),
        baseline_calls: None,
        message,
    }
}

/// The verdict of an analysis: any fail fails; else any inconclusive is inconclusive; else pass.
pub fn overall(checks: &[CheckStatus]) -> Verdict {
    if checks.iter().any(|c| c.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if checks.is_empty() || checks.iter().any(|c| c.verdict == Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    }
}

fn pct(r: f64) -> String {
    format!("{:.2}%", r * 100.0)
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(total: f64, errors: f64) -> Calls {
        Calls {
            total: Some(total),
            errors: Some(errors),
        }
    }
    const NONE: Calls = Calls {
        total: None,
        errors: None,
    };

    #[test]
    fn no_data_is_inconclusive_never_a_pass() {
        let cfg = ErrorRatioCheck::default();
        let c = error_ratio(&cfg, 100, &NONE, &calls(1000.0, 1.0));
        assert_eq!(c.verdict, Verdict::Inconclusive);
        assert_eq!(c.message, "no calls of the wave recorded");
        let l = latency(
            &LatencyCheck::default(),
            Quantile::P95,
            100,
            (&NONE, None),
            (&NONE, None),
        );
        assert_eq!(l.verdict, Verdict::Inconclusive);
        assert_eq!(overall(&[]), Verdict::Inconclusive);
        // The sum-by-outcome answer with no series at all.
        assert_eq!(Calls::from_outcomes([]), NONE);
    }

    #[test]
    fn nan_and_infinities_are_no_number() {
        let cfg = LatencyCheck::default();
        let enough = calls(500.0, 0.0);
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0] {
            let l = latency(&cfg, Quantile::P99, 100, (&enough, Some(v)), (&enough, Some(0.1)));
            assert_eq!(l.verdict, Verdict::Inconclusive, "{v}");
            assert!(l.message.contains("no p99"), "{}", l.message);
        }
        // A NaN baseline is no baseline, not a limit of NaN that every number passes.
        let l = latency(
            &LatencyCheck {
                max_seconds: Some(0.5),
                ..cfg.clone()
            },
            Quantile::P95,
            100,
            (&enough, Some(0.9)),
            (&enough, Some(f64::NAN)),
        );
        assert_eq!((l.verdict, l.baseline, l.limit), (Verdict::Fail, None, Some(0.5)));
        let nan_calls = Calls {
            total: Some(f64::NAN),
            errors: Some(f64::NAN),
        };
        let e = error_ratio(&ErrorRatioCheck::default(), 100, &nan_calls, &enough);
        assert_eq!(e.verdict, Verdict::Inconclusive);
        let c = custom(
            &CustomCheck {
                name: "x".into(),
                query: String::new(),
                max: Some(1.0),
                min: None,
            },
            1,
            &enough,
            Ok(f64::NAN),
        );
        assert_eq!(c.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn after_a_counter_reset_the_uneven_increases_stay_bounded() {
        // The wave's errors series reset and extrapolated above the calls: the ratio is capped at
        // 100%, a fail on real errors, not a ratio of 130%.
        let e = error_ratio(
            &ErrorRatioCheck::default(),
            100,
            &calls(200.0, 260.0),
            &calls(1000.0, 5.0),
        );
        assert_eq!((e.verdict, e.wave), (Verdict::Fail, Some(1.0)));
        // A negative count (a `delta` over a reset in someone's recording rule) is no count.
        let e = error_ratio(
            &ErrorRatioCheck::default(),
            100,
            &calls(-50.0, 0.0),
            &calls(1000.0, 5.0),
        );
        assert_eq!(e.verdict, Verdict::Inconclusive);
        // Per-outcome samples are summed; an outcome the connector adds later counts as a call.
        let c = Calls::from_outcomes([
            (Some("success"), 90.0),
            (Some("error"), 8.0),
            (Some("cancelled"), 2.0),
        ]);
        assert_eq!(c, calls(100.0, 8.0));
        assert_eq!(Calls::from_outcomes([(Some("success"), 10.0)]), calls(10.0, 0.0));
    }

    #[test]
    fn a_baseline_with_no_traffic_holds_the_wave_to_absolute_limits() {
        let cfg = ErrorRatioCheck::default();
        let pass = error_ratio(&cfg, 100, &calls(1000.0, 5.0), &NONE);
        assert_eq!((pass.verdict, pass.limit), (Verdict::Pass, Some(0.01)));
        assert!(pass.message.contains("too few calls to compare"));
        let fail = error_ratio(&cfg, 100, &calls(1000.0, 20.0), &calls(10.0, 0.0));
        assert_eq!(fail.verdict, Verdict::Fail);
        let lat = LatencyCheck::default();
        let slow = latency(
            &lat,
            Quantile::P95,
            100,
            (&calls(500.0, 0.0), Some(9.0)),
            (&NONE, None),
        );
        assert_eq!((slow.verdict, slow.limit), (Verdict::Inconclusive, None));
        assert!(slow.message.contains("no maxSeconds"));
    }

    #[test]
    fn a_wave_of_one_tenant_is_judged_on_its_own_calls() {
        let cfg = ErrorRatioCheck::default();
        let baseline = calls(9000.0, 9.0); // 0.1%
        // 150 calls, 2 errors: 1.33%, above the limit max(0.1% x 2, 0.1% + 1 point) = 1.1%.
        let one = error_ratio(&cfg, 100, &calls(150.0, 2.0), &baseline);
        assert_eq!(one.verdict, Verdict::Fail);
        assert!((one.limit.unwrap() - 0.011).abs() < 1e-12);
        let one = error_ratio(&cfg, 100, &calls(150.0, 1.0), &baseline);
        assert_eq!(one.verdict, Verdict::Pass);
        // 99 calls is below minCalls whatever they say.
        let few = error_ratio(&cfg, 100, &calls(99.0, 99.0), &baseline);
        assert_eq!(few.verdict, Verdict::Inconclusive);
        assert_eq!(few.message, "99 calls of the wave, 100 needed");
    }

    #[test]
    fn both_bounds_must_be_crossed() {
        let cfg = ErrorRatioCheck::default(); // x2 and +1 point
        // Baseline 30%: 45% is within x2 but 15 points above: the larger bound (60%) holds.
        assert_eq!(
            error_ratio(&cfg, 1, &calls(100.0, 45.0), &calls(100.0, 30.0)).verdict,
            Verdict::Pass
        );
        assert_eq!(
            error_ratio(&cfg, 1, &calls(100.0, 61.0), &calls(100.0, 30.0)).verdict,
            Verdict::Fail
        );
        let lat = LatencyCheck::default(); // x1.5 and +50 ms
        let enough = calls(500.0, 0.0);
        let q = |w: f64, b: f64| {
            latency(&lat, Quantile::P99, 100, (&enough, Some(w)), (&enough, Some(b))).verdict
        };
        assert_eq!(q(0.040, 0.010), Verdict::Pass); // x4 but +30 ms
        assert_eq!(q(0.070, 0.010), Verdict::Fail);
        assert_eq!(q(1.4, 1.0), Verdict::Pass);
        assert_eq!(q(1.6, 1.0), Verdict::Fail);
    }

    #[test]
    fn custom_checks_compare_with_max_and_min() {
        let check = CustomCheck {
            name: "hits".into(),
            query: String::new(),
            max: Some(10.0),
            min: Some(1.0),
        };
        let enough = calls(100.0, 0.0);
        assert_eq!(custom(&check, 100, &enough, Ok(5.0)).verdict, Verdict::Pass);
        assert_eq!(custom(&check, 100, &enough, Ok(11.0)).verdict, Verdict::Fail);
        assert_eq!(custom(&check, 100, &enough, Ok(0.5)).verdict, Verdict::Fail);
        let several = custom(
            &check,
            100,
            &enough,
            Err("the query gave 3 series; a check needs one".into()),
        );
        assert_eq!(several.verdict, Verdict::Inconclusive);
        assert_eq!(
            custom(&check, 101, &enough, Ok(5.0)).verdict,
            Verdict::Inconclusive
        );
        let fail = custom(&check, 1, &enough, Ok(11.0));
        assert_eq!(
            overall(&[fail.clone(), too_few("x".into(), &NONE, 1)]),
            Verdict::Fail
        );
        let pass = custom(&check, 1, &enough, Ok(2.0));
        assert_eq!(
            overall(&[pass.clone(), too_few("x".into(), &NONE, 1)]),
            Verdict::Inconclusive
        );
        assert_eq!(overall(&[pass]), Verdict::Pass);
    }
}
