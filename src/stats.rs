//! Exact binomial inference: for an observed traffic split (`kubectl canary verify`) and for a
//! canary's error or rate-limit share (the built-in rate checks).
//!
//! Each answer either came from the canary or it did not, or either failed or did not, so the count
//! is binomial. The usual normal approximation is poor exactly where canaries live (shares of
//! 1-10%, error rates near 0, or 0% and 100% while shifting) and at the few hundred requests a
//! person is willing to wait for, so everything here is exact. [`Binomial`] sums probabilities term
//! by term, which costs microseconds at a verify's sizes; [`proportion_interval`] gives the same
//! Clopper-Pearson bounds through the incomplete beta function, in constant time per evaluation,
//! for the millions of requests a busy release serves in one analysis window.
//!
//! Pure arithmetic, no I/O.

/// Probabilities that the two-sided test counts as "as unlikely as the observation". The relative
/// slack absorbs rounding when two tail terms are mathematically equal (a symmetric case), so that
/// equal terms are not split by the last bit of a floating-point sum.
const TIE_TOLERANCE: f64 = 1e-7;

/// Bisection steps for the interval bounds; 2^-100 is far below what an f64 in [0, 1] can resolve.
const BISECTION_STEPS: u32 = 100;

/// The binomial distribution for `n` trials, with `ln k!` tabulated once for all `k <= n`.
#[derive(Clone, Debug)]
pub struct Binomial {
    n: u64,
    ln_factorial: Vec<f64>,
}

/// A two-sided confidence interval for a proportion.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Binomial {
    pub fn new(n: u64) -> Self {
        // Summing logarithms keeps every term finite for any n we would sample; ln(n!) itself
        // overflows no f64 long before a request count does.
        let mut ln_factorial = Vec::with_capacity(usize::try_from(n).unwrap_or(0) + 1);
        let mut acc = 0.0_f64;
        ln_factorial.push(acc);
        for i in 1..=n {
            acc += (i as f64).ln();
            ln_factorial.push(acc);
        }
        Binomial { n, ln_factorial }
    }

    pub fn trials(&self) -> u64 {
        self.n
    }

    fn ln_choose(&self, k: u64) -> f64 {
        let at = |i: u64| {
            usize::try_from(i)
                .ok()
                .and_then(|i| self.ln_factorial.get(i))
                .copied()
                .unwrap_or(f64::INFINITY)
        };
        at(self.n) - at(k) - at(self.n - k)
    }

    /// P(X = k) for success probability `p`. Degenerate `p` (0 or 1) is handled exactly rather
    /// than through `ln 0`, because weights 0 and 100 are ordinary canary settings.
    pub fn pmf(&self, k: u64, p: f64) -> f64 {
        if k > self.n {
            return 0.0;
        }
        if p <= 0.0 {
            return if k == 0 { 1.0 } else { 0.0 };
        }
        if p >= 1.0 {
            return if k == self.n { 1.0 } else { 0.0 };
        }
        let ln = self.ln_choose(k) + k as f64 * p.ln() + (self.n - k) as f64 * (-p).ln_1p();
        ln.exp()
    }

    /// P(X <= k).
    pub fn cdf(&self, k: u64, p: f64) -> f64 {
        let k = k.min(self.n);
        (0..=k).map(|i| self.pmf(i, p)).sum::<f64>().min(1.0)
    }

    /// P(X >= k).
    pub fn survival(&self, k: u64, p: f64) -> f64 {
        if k > self.n {
            return 0.0;
        }
        (k..=self.n).map(|i| self.pmf(i, p)).sum::<f64>().min(1.0)
    }

    /// Two-sided p-value of the exact binomial test of `k` successes against success probability
    /// `p0`: the total probability of every count that is no more likely than `k` (the
    /// "minimum likelihood" definition, which also handles asymmetric tails correctly).
    pub fn p_value(&self, k: u64, p0: f64) -> f64 {
        if k > self.n {
            return 0.0;
        }
        let observed = self.pmf(k, p0);
        if observed == 0.0 {
            // Impossible under p0, for instance any canary answer at weight 0.
            return 0.0;
        }
        let bound = observed * (1.0 + TIE_TOLERANCE);
        (0..=self.n)
            .map(|i| self.pmf(i, p0))
            .filter(|&q| q <= bound)
            .sum::<f64>()
            .min(1.0)
    }

    /// The Clopper-Pearson ("exact") interval for the success probability after `k` successes, at
    /// confidence `level` (for example 0.95). It is conservative: its coverage is at least `level`
    /// for every true probability, which is the property a yes/no verdict needs. It is the
    /// interval that matches [`Binomial::p_value`]'s exact test.
    pub fn clopper_pearson(&self, k: u64, level: f64) -> Interval {
        let n = self.n;
        if n == 0 {
            return Interval {
                low: 0.0,
                high: 1.0,
            };
        }
        let k = k.min(n);
        let tail = (1.0 - level) / 2.0;
        // P(X >= k | p) grows with p; the lower bound is where it reaches the tail.
        let low = if k == 0 {
            0.0
        } else {
            bisect(|p| self.survival(k, p) >= tail)
        };
        // P(X <= k | p) shrinks as p grows; the upper bound is where it falls to the tail.
        let high = if k == n {
            1.0
        } else {
            bisect(|p| self.cdf(k, p) <= tail)
        };
        Interval { low, high }
    }
}

/// The point in [0, 1] where `past` turns from false to true; `past` must be monotone.
fn bisect(past: impl Fn(f64) -> bool) -> f64 {
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    for _ in 0..BISECTION_STEPS {
        let mid = (lo + hi) / 2.0;
        if past(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
        if hi - lo <= f64::EPSILON * hi.max(f64::MIN_POSITIVE) {
            break;
        }
    }
    (lo + hi) / 2.0
}

/// The Clopper-Pearson interval for a proportion after `k` successes in `n` trials, at confidence
/// `level`: the same bounds as [`Binomial::clopper_pearson`], found through the identities
/// P(X >= k | p) = I_p(k, n - k + 1) and P(X <= k | p) = 1 - I_p(k + 1, n - k), so its cost does not
/// grow with `n`. No trials give the whole of [0, 1]: nothing is known.
pub fn proportion_interval(k: u64, n: u64, level: f64) -> Interval {
    if n == 0 {
        return Interval {
            low: 0.0,
            high: 1.0,
        };
    }
    let k = k.min(n);
    let (kf, nf) = (k as f64, n as f64);
    let tail = (1.0 - level) / 2.0;
    let low = if k == 0 {
        0.0
    } else {
        bisect(|p| incomplete_beta(kf, nf - kf + 1.0, p) >= tail)
    };
    let high = if k == n {
        1.0
    } else {
        bisect(|p| 1.0 - incomplete_beta(kf + 1.0, nf - kf, p) <= tail)
    };
    Interval { low, high }
}

/// ln Γ(x) for x > 0: moved up to at least 10, where Stirling's series with four correction terms
/// is accurate to about 1e-13, then moved back through Γ(x + 1) = x Γ(x).
fn ln_gamma(x: f64) -> f64 {
    const STIRLING_FROM: f64 = 10.0;
    let mut product = 1.0;
    let mut z = x;
    while z < STIRLING_FROM {
        product *= z;
        z += 1.0;
    }
    let inv = 1.0 / z;
    let inv2 = inv * inv;
    let stirling = (z - 0.5) * z.ln() - z
        + 0.5 * (2.0 * std::f64::consts::PI).ln()
        + inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 / 1680.0)));
    stirling - product.ln()
}

/// The regularised incomplete beta function I_x(a, b), by its continued fraction (evaluated with
/// Lentz's method), on the side of the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) where it converges
/// quickly.
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - incomplete_beta(b, a, 1.0 - x);
    }
    let ln_front = a * x.ln() + b * (-x).ln_1p() + ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b);
    (ln_front.exp() / a) * beta_fraction(a, b, x)
}

/// 1 / (1 + d1 / (1 + d2 / (1 + ...))) with the incomplete beta's coefficients d_m.
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const STEPS: u32 = 10_000;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0));
    let mut h = d;
    for m in 1..=STEPS {
        let m = f64::from(m);
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 / guard(1.0 + even * d);
        c = guard(1.0 + even / c);
        h *= d * c;
        let odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 / guard(1.0 + odd * d);
        c = guard(1.0 + odd / c);
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64, what: &str) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "{what}: got {actual}, expected {expected} (±{tolerance})"
        );
    }

    #[test]
    fn pmf_sums_to_one_and_matches_small_cases() {
        let b = Binomial::new(50);
        let total: f64 = (0..=50).map(|k| b.pmf(k, 0.3)).sum();
        close(total, 1.0, 1e-12, "sum of pmf over 0..=50");
        // C(4,2) / 16
        close(Binomial::new(4).pmf(2, 0.5), 0.375, 1e-15, "pmf(2; 4, 0.5)");
        assert_eq!(b.pmf(51, 0.3), 0.0, "more successes than trials");
    }

    #[test]
    fn p_values_match_exact_rational_computations() {
        // Each expected value was computed with exact rational arithmetic over every outcome.
        let cases = [
            (9, 10, 0.5, 0.021484375, "9 of 10 vs 1/2 (22/1024)"),
            (3, 20, 0.25, 0.4393741000631053, "3 of 20 vs 1/4"),
            (7, 20, 0.25, 0.30547848486367, "7 of 20 vs 1/4"),
            (30, 100, 0.25, 0.24907145667188751, "30 of 100 vs 1/4"),
            (120, 400, 0.25, 0.024177453091962675, "120 of 400 vs 1/4"),
            (682, 925, 0.75, 0.3824915595748517, "682 of 925 vs 3/4"),
        ];
        for (k, n, p0, expected, what) in cases {
            close(Binomial::new(n).p_value(k, p0), expected, 1e-9, what);
        }
    }

    #[test]
    fn p_value_is_one_at_the_expected_count_and_tiny_far_from_it() {
        let b = Binomial::new(400);
        close(b.p_value(100, 0.25), 1.0, 1e-12, "100 of 400 at 25%");
        let p = b.p_value(200, 0.25);
        assert!(p < 1e-20, "200 of 400 at 25% must be rejected, p = {p}");
        close(
            b.p_value(150, 0.5),
            b.p_value(250, 0.5),
            1e-15,
            "symmetric tails at 1/2",
        );
    }

    #[test]
    fn degenerate_weights_are_exact() {
        let b = Binomial::new(400);
        assert_eq!(b.p_value(0, 0.0), 1.0, "no canary answer at weight 0");
        assert_eq!(b.p_value(1, 0.0), 0.0, "one canary answer at weight 0");
        assert_eq!(b.p_value(400, 1.0), 1.0, "all canary at weight 100");
        assert_eq!(b.p_value(399, 1.0), 0.0, "one stable answer at weight 100");
    }

    #[test]
    fn clopper_pearson_matches_closed_forms_at_the_edges() {
        // With no successes the upper bound solves (1-p)^n = tail; with all, p^n = tail.
        let b = Binomial::new(10);
        let none = b.clopper_pearson(0, 0.95);
        assert_eq!(none.low, 0.0, "lower bound with no successes");
        close(
            none.high,
            1.0 - 0.025_f64.powf(0.1),
            1e-12,
            "upper, 0 of 10",
        );
        let all = b.clopper_pearson(10, 0.95);
        assert_eq!(all.high, 1.0, "upper bound with all successes");
        close(all.low, 0.025_f64.powf(0.1), 1e-12, "lower, 10 of 10");
    }

    #[test]
    fn clopper_pearson_matches_a_published_interval() {
        // 682 of 925 (Mendel's peas): the 95% exact interval is [0.7076683, 0.7654066].
        let ci = Binomial::new(925).clopper_pearson(682, 0.95);
        close(ci.low, 0.7076683, 5e-8, "lower bound");
        close(ci.high, 0.7654066, 5e-8, "upper bound");
    }

    #[test]
    fn clopper_pearson_bounds_solve_their_defining_equations() {
        let b = Binomial::new(400);
        let ci = b.clopper_pearson(100, 0.95);
        close(b.survival(100, ci.low), 0.025, 1e-9, "P(X >= 100 | low)");
        close(b.cdf(100, ci.high), 0.025, 1e-9, "P(X <= 100 | high)");
        assert!(ci.low < 0.25 && 0.25 < ci.high, "{ci:?} must contain 0.25");
    }

    /// The incomplete-beta route must give the term-by-term sum's bounds wherever both can run.
    #[test]
    fn proportion_interval_matches_the_exact_sum() {
        let cases = [
            (0, 1),
            (1, 1),
            (0, 10),
            (1, 10),
            (3, 10),
            (10, 10),
            (1, 400),
            (12, 400),
            (200, 400),
            (0, 2_000),
            (37, 2_000),
            (1_999, 2_000),
        ];
        for (k, n) in cases {
            let exact = Binomial::new(n).clopper_pearson(k, 0.95);
            let fast = proportion_interval(k, n, 0.95);
            close(fast.low, exact.low, 1e-9, &format!("low of {k}/{n}"));
            close(fast.high, exact.high, 1e-9, &format!("high of {k}/{n}"));
        }
    }

    #[test]
    fn proportion_interval_handles_sizes_too_large_to_sum() {
        // 0 of n: the upper bound has the closed form 1 - (tail)^(1/n).
        let n = 5_000_000_u64;
        let i = proportion_interval(0, n, 0.95);
        close(i.high, 1.0 - 0.025_f64.powf(1.0 / n as f64), 1e-12, "0/5M");
        // A 1 % rate over a million requests is pinned to about ±0.02 points.
        let i = proportion_interval(10_000, 1_000_000, 0.95);
        assert!(
            i.low > 0.0098 && i.low < 0.01 && i.high > 0.01 && i.high < 0.0102,
            "{i:?}"
        );
        assert_eq!(
            proportion_interval(0, 0, 0.95),
            Interval {
                low: 0.0,
                high: 1.0
            }
        );
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        for (x, factorial) in [(1.0, 1.0), (2.0, 1.0), (5.0, 24.0), (11.0, 3_628_800.0)] {
            close(
                ln_gamma(x),
                f64::ln(factorial),
                1e-10,
                &format!("ln Γ({x})"),
            );
        }
        close(
            ln_gamma(0.5),
            0.5 * std::f64::consts::PI.ln(),
            1e-10,
            "ln Γ(1/2)",
        );
    }
}
