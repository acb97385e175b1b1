//! Statistics used by the analysis tools, on top of statrs (distributions, order statistics).

use statrs::distribution::{ContinuousCDF, StudentsT};
use statrs::statistics::{Data, Median, OrderStatistics, RankTieBreaker, Statistics};

/// Least-squares line through (0, y0), (1, y1), ... with a t-test of the slope.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearTrend {
    pub slope: f64,
    pub intercept: f64,
    pub r_squared: f64,
    pub std_error: f64,
    pub t_statistic: f64,
    /// Two-sided p-value of H0: slope = 0 (Student's t with n - 2 degrees of freedom).
    pub p_value: f64,
    pub n: usize,
}

/// Fit a linear trend. Needs at least 3 points.
pub fn linear_trend(y: &[f64]) -> Option<LinearTrend> {
    let n = y.len();
    if n < 3 {
        return None;
    }
    let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let var_x = x.iter().variance();
    let slope = x.iter().covariance(y.iter()) / var_x;
    let mx = x.iter().mean();
    let my = y.iter().mean();
    let intercept = my - slope * mx;
    let sse: f64 = x
        .iter()
        .zip(y)
        .map(|(xi, yi)| (yi - intercept - slope * xi).powi(2))
        .sum();
    let sst: f64 = y.iter().map(|yi| (yi - my).powi(2)).sum();
    let r_squared = if sst > 0.0 { 1.0 - sse / sst } else { 0.0 };
    let df = (n - 2) as f64;
    let sxx = var_x * (n as f64 - 1.0);
    let std_error = (sse / df / sxx).sqrt();
    let (t_statistic, p_value) = if std_error > 0.0 {
        let t = slope / std_error;
        (t, two_sided_t(t, df))
    } else if slope != 0.0 {
        (f64::INFINITY, 0.0)
    } else {
        (0.0, 1.0)
    };
    Some(LinearTrend {
        slope,
        intercept,
        r_squared,
        std_error,
        t_statistic,
        p_value,
        n,
    })
}

pub fn two_sided_t(t: f64, df: f64) -> f64 {
    match StudentsT::new(0.0, 1.0, df) {
        Ok(dist) => (2.0 * (1.0 - dist.cdf(t.abs()))).clamp(0.0, 1.0),
        Err(_) => f64::NAN,
    }
}

/// Welch's two-sample t-test (unequal variances): returns (t, two-sided p-value).
pub fn welch_t_test(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (ma, mb) = (a.iter().mean(), b.iter().mean());
    let (va, vb) = (a.iter().variance(), b.iter().variance());
    let se2 = va / na + vb / nb;
    if se2 <= 0.0 {
        return if ma == mb {
            Some((0.0, 1.0))
        } else {
            Some((f64::INFINITY, 0.0))
        };
    }
    let t = (mb - ma) / se2.sqrt();
    let df = se2 * se2 / ((va / na).powi(2) / (na - 1.0) + (vb / nb).powi(2) / (nb - 1.0));
    Some((t, two_sided_t(t, df)))
}

/// Level-shift test: fit y = a + b·t + c·[t ≥ cp] by least squares and t-test c (H0: c = 0).
/// Returns (c, t, two-sided p-value) with n − 3 degrees of freedom.
pub fn step_test(y: &[f64], cp: usize) -> Option<(f64, f64, f64)> {
    let n = y.len();
    if n < 5 || cp == 0 || cp >= n {
        return None;
    }
    let t: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let d: Vec<f64> = (0..n).map(|i| if i >= cp { 1.0 } else { 0.0 }).collect();
    // Frisch–Waugh: residualise y and the step on [1, t], then regress residual on residual.
    let resid = |v: &[f64]| -> Vec<f64> {
        let mt = t.iter().mean();
        let mv = v.iter().mean();
        let b = t.iter().covariance(v.iter()) / t.iter().variance();
        t.iter().zip(v).map(|(ti, vi)| vi - mv - b * (ti - mt)).collect()
    };
    let ry = resid(y);
    let rd = resid(&d);
    let sdd: f64 = rd.iter().map(|v| v * v).sum();
    if sdd <= 0.0 {
        return None;
    }
    let c = rd.iter().zip(&ry).map(|(a, b)| a * b).sum::<f64>() / sdd;
    let sse: f64 = ry.iter().zip(&rd).map(|(yv, dv)| (yv - c * dv).powi(2)).sum();
    let df = (n - 3) as f64;
    let se = (sse / df / sdd).sqrt();
    if se == 0.0 {
        return Some((
            c,
            if c == 0.0 { 0.0 } else { f64::INFINITY },
            if c == 0.0 { 1.0 } else { 0.0 },
        ));
    }
    let tt = c / se;
    Some((c, tt, two_sided_t(tt, df)))
}

/// Pearson correlation, or None when a side is constant or there are fewer than 3 pairs.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 3 {
        return None;
    }
    let sx = x.iter().std_dev();
    let sy = y.iter().std_dev();
    if sx == 0.0 || sy == 0.0 || !sx.is_finite() || !sy.is_finite() {
        return None;
    }
    Some((x.iter().covariance(y.iter()) / (sx * sy)).clamp(-1.0, 1.0))
}

/// Spearman rank correlation (Pearson on average ranks).
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() {
        return None;
    }
    let rx = Data::new(x.to_vec()).ranks(RankTieBreaker::Average);
    let ry = Data::new(y.to_vec()).ranks(RankTieBreaker::Average);
    pearson(&rx, &ry)
}

/// Two-sided p-value of a correlation coefficient r over n pairs (t = r·sqrt((n-2)/(1-r²))).
pub fn correlation_p_value(r: f64, n: usize) -> f64 {
    if n < 3 {
        return f64::NAN;
    }
    if r.abs() >= 1.0 {
        return 0.0;
    }
    let df = (n - 2) as f64;
    two_sided_t(r * (df / (1.0 - r * r)).sqrt(), df)
}

/// Strength of a correlation in words (on |r|).
pub fn strength_words(r: f64) -> &'static str {
    let a = r.abs();
    if a < 0.1 {
        "negligible"
    } else if a < 0.3 {
        "weak"
    } else if a < 0.5 {
        "moderate"
    } else if a < 0.7 {
        "strong"
    } else {
        "very strong"
    }
}

/// Robust z-scores: 0.6745·(x − median)/MAD (Iglewicz and Hoaglin). Returns (median, MAD, scores).
/// When the MAD is 0, falls back to the mean absolute deviation scaled by 1.2533 (so scores stay finite).
pub fn mad_scores(x: &[f64]) -> (f64, f64, Vec<f64>) {
    if x.is_empty() {
        return (f64::NAN, f64::NAN, Vec::new());
    }
    let median = Data::new(x.to_vec()).median();
    let dev: Vec<f64> = x.iter().map(|v| (v - median).abs()).collect();
    let mad = Data::new(dev.clone()).median();
    let scores = if mad > 0.0 {
        x.iter().map(|v| 0.6745 * (v - median) / mad).collect()
    } else {
        let meanad = dev.iter().mean();
        if meanad > 0.0 {
            x.iter().map(|v| (v - median) / (1.2533 * meanad)).collect()
        } else {
            vec![0.0; x.len()]
        }
    };
    (median, mad, scores)
}

/// Cumulative shares of values sorted descending; returns (cumulative share %, count reaching `threshold` %).
pub fn pareto(values_desc: &[f64], threshold: f64) -> (Vec<f64>, usize) {
    let total: f64 = values_desc.iter().sum();
    let mut acc = 0.0;
    let mut cum = Vec::with_capacity(values_desc.len());
    let mut vital = values_desc.len();
    let mut found = false;
    for (i, v) in values_desc.iter().enumerate() {
        acc += v;
        let share = if total != 0.0 { 100.0 * acc / total } else { 0.0 };
        cum.push(share);
        if !found && share >= threshold - 1e-9 {
            vital = i + 1;
            found = true;
        }
    }
    (cum, vital)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn linear_trend_recovers_a_known_line() {
        let y: Vec<f64> = (0..20)
            .map(|i| 5.0 + 2.0 * i as f64 + if i % 2 == 0 { 0.5 } else { -0.5 })
            .collect();
        let f = linear_trend(&y).unwrap();
        assert!(close(f.slope, 2.0, 0.01), "{f:?}");
        assert!(close(f.intercept, 5.0, 0.2), "{f:?}");
        assert!(f.p_value < 1e-10 && f.r_squared > 0.99, "{f:?}");
    }

    #[test]
    fn linear_trend_on_alternating_noise_is_not_significant() {
        let y: Vec<f64> = (0..20).map(|i| if i % 2 == 0 { 10.0 } else { 12.0 }).collect();
        let f = linear_trend(&y).unwrap();
        assert!(f.p_value > 0.3, "{f:?}");
        assert!(linear_trend(&[1.0, 2.0]).is_none());
    }

    #[test]
    fn slope_t_test_matches_reference_values() {
        // y = [1, 3, 2, 5, 4]: slope 0.8, SE = sqrt(3.6/3/10) = 0.3464, t = 2.309, df = 3, p ≈ 0.1041
        let f = linear_trend(&[1.0, 3.0, 2.0, 5.0, 4.0]).unwrap();
        assert!(close(f.slope, 0.8, 1e-12));
        assert!(close(f.std_error, 0.34641, 1e-4), "{f:?}");
        assert!(close(f.t_statistic, 2.3094, 1e-3), "{f:?}");
        assert!(close(f.p_value, 0.1041, 1e-3), "{f:?}");
    }

    #[test]
    fn step_test_separates_a_shift_from_a_trend() {
        let noise = |i: usize| ((i * 7919) % 13) as f64 / 13.0 - 0.5;
        // trend only: no significant step anywhere in the middle
        let trend: Vec<f64> = (0..40).map(|i| 10.0 + 0.5 * i as f64 + noise(i)).collect();
        let (_, _, p) = step_test(&trend, 20).unwrap();
        assert!(p > 0.01, "{p}");
        // trend plus a step of 8 at 25: c ≈ 8, tiny p
        let step: Vec<f64> = (0..40)
            .map(|i| trend[i] + if i >= 25 { 8.0 } else { 0.0 })
            .collect();
        let (c, _, p) = step_test(&step, 25).unwrap();
        assert!((c - 8.0).abs() < 0.5 && p < 1e-6, "{c} {p}");
        assert!(step_test(&step, 0).is_none());
    }

    #[test]
    fn welch_test_matches_reference_values() {
        // a = [1..5], b = [3..7] (same variance 2.5): t = 2 / sqrt(1) = 2, df = 8, p ≈ 0.0805
        let (t, p) = welch_t_test(&[1.0, 2.0, 3.0, 4.0, 5.0], &[3.0, 4.0, 5.0, 6.0, 7.0]).unwrap();
        assert!(close(t, 2.0, 1e-12));
        assert!(close(p, 0.0805, 1e-3), "{p}");
        assert!(welch_t_test(&[1.0], &[2.0, 3.0]).is_none());
    }

    #[test]
    fn correlations_on_known_data() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [2.0, 4.0, 6.0, 8.0, 10.0];
        assert!(close(pearson(&x, &y).unwrap(), 1.0, 1e-12));
        // monotone but not linear: Spearman 1, Pearson < 1
        let z = [1.0, 8.0, 27.0, 64.0, 125.0];
        assert!(close(spearman(&x, &z).unwrap(), 1.0, 1e-12));
        assert!(pearson(&x, &z).unwrap() < 0.99);
        let w = [5.0, 4.0, 3.0, 2.0, 1.0];
        assert!(close(pearson(&x, &w).unwrap(), -1.0, 1e-12));
        // worked by hand: deviations give r = 8 / sqrt(10 * 10) = 0.8
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [2.0, 1.0, 4.0, 3.0, 5.0];
        assert!(close(pearson(&a, &b).unwrap(), 0.8, 1e-12));
        assert!(close(correlation_p_value(0.8, 5), 0.1041, 1e-3));
        assert!(pearson(&x, &[1.0, 1.0, 1.0, 1.0, 1.0]).is_none());
        assert_eq!(strength_words(0.05), "negligible");
        assert_eq!(strength_words(-0.85), "very strong");
        assert_eq!(strength_words(0.45), "moderate");
    }

    #[test]
    fn mad_scores_flag_the_planted_point() {
        let mut x: Vec<f64> = (0..50).map(|i| 100.0 + (i % 7) as f64).collect();
        x[17] = 400.0;
        let (median, mad, s) = mad_scores(&x);
        assert!(close(median, 103.0, 1e-9));
        assert!(mad > 0.0);
        let flagged: Vec<usize> = s
            .iter()
            .enumerate()
            .filter(|(_, z)| z.abs() > 3.5)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(flagged, vec![17]);
    }

    #[test]
    fn pareto_counts_the_vital_few() {
        let (cum, vital) = pareto(&[50.0, 30.0, 10.0, 5.0, 5.0], 80.0);
        assert_eq!(vital, 2);
        assert!(close(cum[0], 50.0, 1e-9) && close(cum[4], 100.0, 1e-9));
        let (_, vital) = pareto(&[50.0, 29.0, 11.0, 10.0], 80.0);
        assert_eq!(vital, 3);
    }
}
