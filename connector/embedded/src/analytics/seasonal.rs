//! One seasonal model for trend and change detection: least squares of the series on an intercept, a
//! linear trend, a seasonal pattern (when the series covers at least two seasons) and level steps.
//! The seasonal pattern is one mean per season position (dummies) for short seasons (days of the
//! week, quarters) and a smooth pattern (three Fourier harmonics) for long ones (months or weeks of
//! the year): with free per-position means and few seasons, a step in the second season cannot be
//! told from an opposite step in the first, and 51 weekly means would leave little to test with.
//! Trend reads its slope from the seasonally adjusted series; change detection searches the steps
//! (forward selection, each step kept only when its t-test survives a Bonferroni correction over the
//! candidate positions). Because the fit is linear in the series, the steps of member series add up
//! exactly to the step of their total: that is how drivers are attributed.

use crate::stats;

/// Seasons a series must cover before its seasonality is modelled.
pub const MIN_CYCLES: usize = 2;

/// Significance level of a step after the Bonferroni correction.
const ALPHA: f64 = 0.01;

/// Most level steps reported for one series.
const MAX_STEPS: usize = 3;

/// The season length used for a series of `n` periods, if it covers enough seasons.
pub fn season_used(n: usize, season: Option<usize>) -> Option<usize> {
    season.filter(|s| *s >= 2 && n >= MIN_CYCLES * s)
}

/// Harmonics of the smooth seasonal pattern used with fewer than three seasons.
const HARMONICS: usize = 3;

/// Seasonal regressors for `n` periods.
fn seasonal_columns(n: usize, season: Option<usize>) -> Vec<Vec<f64>> {
    let Some(s) = season_used(n, season) else {
        return Vec::new();
    };
    if s <= 2 * HARMONICS + 1 {
        return (1..s)
            .map(|j| (0..n).map(|i| if i % s == j { 1.0 } else { 0.0 }).collect())
            .collect();
    }
    let w = 2.0 * std::f64::consts::PI / s as f64;
    (1..=HARMONICS)
        .flat_map(|k| {
            let f = w * k as f64;
            [
                (0..n).map(|i| (f * i as f64).cos()).collect::<Vec<f64>>(),
                (0..n).map(|i| (f * i as f64).sin()).collect::<Vec<f64>>(),
            ]
        })
        .collect()
}

/// Regressors: intercept, trend, seasonal pattern, steps (1 from the step's index on).
fn design(n: usize, season: Option<usize>, steps: &[usize]) -> Vec<Vec<f64>> {
    let mut cols = vec![vec![1.0; n], (0..n).map(|i| i as f64).collect()];
    cols.extend(seasonal_columns(n, season));
    for &c in steps {
        cols.push((0..n).map(|i| if i >= c { 1.0 } else { 0.0 }).collect());
    }
    cols
}

/// Least-squares coefficients (modified Gram-Schmidt QR; a column dependent on earlier ones gets 0).
fn ols(cols: &[Vec<f64>], y: &[f64]) -> Vec<f64> {
    let k = cols.len();
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(k);
    let mut kept: Vec<usize> = Vec::with_capacity(k);
    let mut r = vec![vec![0.0; k]; k];
    for (j, c) in cols.iter().enumerate() {
        let mut v = c.clone();
        for (qi, b) in q.iter().enumerate() {
            let p = dot(b, &v);
            r[qi][j] = p;
            v.iter_mut().zip(b).for_each(|(x, y)| *x -= p * y);
        }
        let norm = dot(&v, &v).sqrt();
        if norm > 1e-9 * dot(c, c).sqrt().max(1.0) {
            r[q.len()][j] = norm;
            v.iter_mut().for_each(|x| *x /= norm);
            q.push(v);
            kept.push(j);
        }
    }
    let qty: Vec<f64> = q.iter().map(|b| dot(b, y)).collect();
    let mut beta = vec![0.0; k];
    for a in (0..kept.len()).rev() {
        let mut s = qty[a];
        for &j in &kept[a + 1..] {
            s -= r[a][j] * beta[j];
        }
        beta[kept[a]] = s / r[a][kept[a]];
    }
    beta
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Orthonormal basis of the columns' span (modified Gram-Schmidt; dependent columns dropped).
fn basis(cols: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(cols.len());
    for c in cols {
        let mut v = c.clone();
        for b in &q {
            let p = dot(&v, b);
            v.iter_mut().zip(b).for_each(|(x, y)| *x -= p * y);
        }
        let norm = dot(&v, &v).sqrt();
        let scale = dot(c, c).sqrt().max(1.0);
        if norm > 1e-9 * scale {
            v.iter_mut().for_each(|x| *x /= norm);
            q.push(v);
        }
    }
    q
}

/// `v` minus its projection on the basis.
fn residual(v: &[f64], q: &[Vec<f64>]) -> Vec<f64> {
    let mut r = v.to_vec();
    for b in q {
        let p = dot(&r, b);
        r.iter_mut().zip(b).for_each(|(x, y)| *x -= p * y);
    }
    r
}

/// Coefficient, t statistic and p-value of regressor `x` in y ~ base + x.
fn coefficient(y: &[f64], x: &[f64], base: &[Vec<f64>]) -> Option<(f64, f64, f64)> {
    let ry = residual(y, base);
    let rx = residual(x, base);
    let sxx = dot(&rx, &rx);
    if sxx < 1e-9 {
        return None;
    }
    let c = dot(&rx, &ry) / sxx;
    let sse = dot(&ry, &ry) - c * c * sxx;
    let df = y.len() as f64 - base.len() as f64 - 1.0;
    if df < 1.0 {
        return None;
    }
    let se = (sse.max(0.0) / df / sxx).sqrt();
    if se == 0.0 {
        return Some((c, f64::INFINITY, if c == 0.0 { 1.0 } else { 0.0 }));
    }
    let t = c / se;
    Some((c, t, stats::two_sided_t(t, df)))
}

/// The seasonal component of `y` under the model with these steps (zero without seasonality); it
/// averages to zero over a season.
pub fn seasonal_component(y: &[f64], season: Option<usize>, steps: &[usize]) -> Vec<f64> {
    let n = y.len();
    let Some(s) = season_used(n, season) else {
        return vec![0.0; n];
    };
    let cols = design(n, season, steps);
    let beta = ols(&cols, y);
    let seas = 2..cols.len() - steps.len();
    let comp: Vec<f64> = (0..n)
        .map(|i| seas.clone().map(|c| beta[c] * cols[c][i]).sum())
        .collect();
    let mean = comp[..s].iter().sum::<f64>() / s as f64;
    comp.iter().map(|v| v - mean).collect()
}

/// The series with its seasonal component removed, when it covers at least two seasons.
pub fn seasonal_adjust(y: &[f64], season: Option<usize>) -> Option<Vec<f64>> {
    season_used(y.len(), season)?;
    let sc = seasonal_component(y, season, &[]);
    Some(y.iter().zip(&sc).map(|(v, s)| v - s).collect())
}

/// A level step: where the new level starts, its size beyond trend and season, and its p-value in
/// the final model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    pub at: usize,
    pub size: f64,
    pub p_value: f64,
}

/// Fitted values of the model with these steps.
pub fn fitted(y: &[f64], season: Option<usize>, steps: &[usize]) -> Vec<f64> {
    let cols = design(y.len(), season, steps);
    let beta = ols(&cols, y);
    (0..y.len())
        .map(|i| cols.iter().zip(&beta).map(|(c, b)| c[i] * b).sum())
        .collect()
}

/// Robust z-score above which a single period is an outlier, not part of a level.
const SPIKE_Z: f64 = 4.0;

/// Level steps that single-period spikes do not move: steps are searched, the periods the fitted
/// model misses by more than 4 robust standard deviations are replaced by their fitted values, and
/// the steps are searched again. Returns the steps and the indices of the spikes set aside.
pub fn find_steps_robust(y: &[f64], season: Option<usize>) -> (Vec<Step>, Vec<usize>) {
    let first = find_steps(y, season);
    let at: Vec<usize> = first.iter().map(|s| s.at).collect();
    let fit = fitted(y, season, &at);
    let resid: Vec<f64> = y.iter().zip(&fit).map(|(a, b)| a - b).collect();
    let (_, _, z) = stats::mad_scores(&resid);
    let spikes: Vec<usize> = (0..y.len()).filter(|&i| z[i].abs() > SPIKE_Z).collect();
    if spikes.is_empty() {
        return (first, spikes);
    }
    let cleaned: Vec<f64> = (0..y.len())
        .map(|i| if spikes.contains(&i) { fit[i] } else { y[i] })
        .collect();
    (find_steps(&cleaned, season), spikes)
}

/// Each step moved, within the periods its neighbours leave, to the position with the least sum of
/// absolute residuals (squared error lets a nearby spike pull a step towards it).
fn refine(y: &[f64], season: Option<usize>, steps: &[usize], min_seg: usize) -> Vec<usize> {
    let n = y.len();
    let mut at = steps.to_vec();
    for k in 0..at.len() {
        let lo = if k == 0 { min_seg } else { at[k - 1] + min_seg };
        let hi = if k + 1 == at.len() {
            n - min_seg
        } else {
            at[k + 1] - min_seg
        };
        let from = at[k].saturating_sub(min_seg).max(lo);
        let to = (at[k] + min_seg).min(hi);
        let l1 = |c: usize| {
            let mut trial = at.clone();
            trial[k] = c;
            let f = fitted(y, season, &trial);
            y.iter().zip(&f).map(|(a, b)| (a - b).abs()).sum::<f64>()
        };
        if let Some(best) = (from..=to).min_by(|a, b| l1(*a).total_cmp(&l1(*b))) {
            at[k] = best;
        }
    }
    at
}

/// Level steps in `y` by forward selection: at each round the split that most reduces the squared
/// error is kept when its p-value times the number of candidate splits is below 1 %. Each side of a
/// step keeps at least max(3, n/20) periods.
pub fn find_steps(y: &[f64], season: Option<usize>) -> Vec<Step> {
    let n = y.len();
    let min_seg = (n / 20).max(3);
    if n < 2 * min_seg + 2 {
        return Vec::new();
    }
    let mut steps: Vec<usize> = Vec::new();
    while steps.len() < MAX_STEPS {
        let base = basis(&design(n, season, &steps));
        let ry = residual(y, &base);
        let candidates: Vec<usize> = (min_seg..=n - min_seg)
            .filter(|c| steps.iter().all(|s| c.abs_diff(*s) >= min_seg))
            .collect();
        let mut best: Option<(usize, f64)> = None;
        for &c in &candidates {
            let d: Vec<f64> = (0..n).map(|i| if i >= c { 1.0 } else { 0.0 }).collect();
            let rd = residual(&d, &base);
            let sdd = dot(&rd, &rd);
            if sdd < 1e-9 {
                continue;
            }
            let gain = dot(&rd, &ry).powi(2) / sdd;
            if best.is_none_or(|b| gain > b.1) {
                best = Some((c, gain));
            }
        }
        let Some((c, _)) = best else { break };
        let d: Vec<f64> = (0..n).map(|i| if i >= c { 1.0 } else { 0.0 }).collect();
        match coefficient(y, &d, &base) {
            Some((_, _, p)) if p * candidates.len() as f64 <= ALPHA => steps.push(c),
            _ => break,
        }
    }
    steps.sort_unstable();
    let steps = refine(y, season, &steps, min_seg);
    step_sizes(y, season, &steps)
}

/// Size and p-value of each given step in the model holding all of them.
pub fn step_sizes(y: &[f64], season: Option<usize>, steps: &[usize]) -> Vec<Step> {
    let n = y.len();
    let cols = design(n, season, steps);
    let first_step = cols.len() - steps.len();
    steps
        .iter()
        .enumerate()
        .filter_map(|(k, &at)| {
            let col = first_step + k;
            let others: Vec<Vec<f64>> = cols
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != col)
                .map(|(_, c)| c.clone())
                .collect();
            coefficient(y, &cols[col], &basis(&others)).map(|(size, _, p_value)| Step { at, size, p_value })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(i: usize) -> f64 {
        ((i * 7919) % 13) as f64 / 13.0 - 0.5
    }

    #[test]
    fn a_level_shift_is_found_where_it_starts() {
        let y: Vec<f64> = (0..80)
            .map(|i| if i < 40 { 10.0 } else { 16.0 } + noise(i))
            .collect();
        let s = find_steps(&y, None);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].at, 40);
        assert!((s[0].size - 6.0).abs() < 0.5);
    }

    #[test]
    fn flat_noise_and_a_pure_trend_have_no_step() {
        let flat: Vec<f64> = (0..60).map(|i| 10.0 + noise(i)).collect();
        assert!(find_steps(&flat, None).is_empty());
        let trend: Vec<f64> = (0..60).map(|i| 10.0 + 0.4 * i as f64 + noise(i)).collect();
        assert!(find_steps(&trend, None).is_empty());
    }

    #[test]
    fn a_shift_in_the_second_season_is_told_apart_from_seasonality() {
        // 24 months with a strong yearly pattern (peak in December) and a +15 level shift from month
        // 18 (July of year 2): one step, there, and not an opposite one a year earlier
        let season = |i: usize| 25.0 * (2.0 * std::f64::consts::PI * (i as f64 - 11.0) / 12.0).cos();
        let y: Vec<f64> = (0..24)
            .map(|i| 100.0 + 0.5 * i as f64 + season(i) + if i >= 18 { 15.0 } else { 0.0 } + noise(i))
            .collect();
        let s = find_steps(&y, Some(12));
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(s[0].at == 18 && (s[0].size - 15.0).abs() < 2.0, "{s:?}");
        // the seasonal component is the planted pattern, not the shift
        let sc = seasonal_component(&y, Some(12), &[18]);
        assert!((sc[11] - season(11)).abs() < 1.5, "{sc:?}");
        // with three seasons the same holds
        let y3: Vec<f64> = (0..36)
            .map(|i| 100.0 + 0.5 * i as f64 + season(i) + if i >= 30 { 15.0 } else { 0.0 } + noise(i))
            .collect();
        let s3 = find_steps(&y3, Some(12));
        assert_eq!(s3.iter().map(|x| x.at).collect::<Vec<_>>(), [30], "{s3:?}");
    }

    #[test]
    fn member_steps_add_up_to_the_total_step() {
        let a: Vec<f64> = (0..40)
            .map(|i| 5.0 + if i >= 25 { 4.0 } else { 0.0 } + noise(i))
            .collect();
        let b: Vec<f64> = (0..40).map(|i| 7.0 + 0.1 * i as f64 + noise(i + 3)).collect();
        let total: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let st = step_sizes(&total, None, &[25])[0].size;
        let sa = step_sizes(&a, None, &[25])[0].size;
        let sb = step_sizes(&b, None, &[25])[0].size;
        assert!((st - sa - sb).abs() < 1e-9);
    }
}
