//! The Mann-Whitney U rank test (one-sided): does one sample tend to be
//! smaller than another? Exact null distribution for small samples without
//! ties, the normal approximation (tie- and continuity-corrected) otherwise.
//! Pure: numbers in, p-value out.

/// Samples up to this size (each side, no ties) get the exact distribution.
const EXACT_MAX: usize = 20;

/// Mann-Whitney U of `x` against `y`: the number of pairs (xᵢ, yⱼ) with
/// xᵢ > yⱼ, ties counting ½. Small U means `x` tends to be smaller.
pub fn u_statistic(x: &[f64], y: &[f64]) -> f64 {
    let mut u = 0.0;
    for a in x {
        for b in y {
            if a > b {
                u += 1.0;
            } else if a == b {
                u += 0.5;
            }
        }
    }
    u
}

/// One-sided p-value of the hypothesis that `x` tends to be smaller than
/// `y` (P(X < Y) > ½): the chance of a U this small or smaller if both came
/// from one distribution. 1.0 when either side is empty.
pub fn p_less(x: &[f64], y: &[f64]) -> f64 {
    let (n1, n2) = (x.len(), y.len());
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let u = u_statistic(x, y);
    let ties = tie_term(x, y);
    if ties == 0.0 && n1 <= EXACT_MAX && n2 <= EXACT_MAX {
        exact_cdf(n1, n2, u.floor() as usize)
    } else {
        normal_cdf_u(n1, n2, u, ties)
    }
}

/// One-sided p-value that `x` tends to be larger than `y`.
pub fn p_greater(x: &[f64], y: &[f64]) -> f64 {
    p_less(y, x)
}

/// Σ (t³ − t) over the groups of tied values of the pooled sample.
fn tie_term(x: &[f64], y: &[f64]) -> f64 {
    let mut all: Vec<f64> = x.iter().chain(y).copied().collect();
    all.sort_by(f64::total_cmp);
    let mut sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i + 1;
        while j < all.len() && all[j] == all[i] {
            j += 1;
        }
        let t = (j - i) as f64;
        sum += t * t * t - t;
        i = j;
    }
    sum
}

/// P(U ≤ u) under the null hypothesis, by counting the arrangements of n1
/// and n2 ranks with each U (the coefficients of a Gaussian binomial).
fn exact_cdf(n1: usize, n2: usize, u: usize) -> f64 {
    let max_u = n1 * n2;
    // counts[i][j][k]: arrangements of i x's and j y's with U = k, built up
    // by the last element being an x (adds j to U) or a y (adds nothing).
    let mut prev: Vec<Vec<f64>> = vec![vec![0.0; max_u + 1]; n2 + 1];
    for row in prev.iter_mut() {
        row[0] = 1.0; // zero x's: U = 0, one arrangement
    }
    for _i in 1..=n1 {
        let mut cur: Vec<Vec<f64>> = vec![vec![0.0; max_u + 1]; n2 + 1];
        for j in 0..=n2 {
            for k in 0..=max_u {
                let mut c = 0.0;
                if k >= j {
                    c += prev[j][k - j];
                }
                if j > 0 {
                    c += cur[j - 1][k];
                }
                cur[j][k] = c;
            }
        }
        prev = cur;
    }
    let counts = &prev[n2];
    let total: f64 = counts.iter().sum();
    let below: f64 = counts.iter().take(u.min(max_u) + 1).sum();
    below / total
}

/// P(U ≤ u) by the normal approximation with tie and continuity correction.
fn normal_cdf_u(n1: usize, n2: usize, u: f64, ties: f64) -> f64 {
    let (a, b) = (n1 as f64, n2 as f64);
    let n = a + b;
    let mean = a * b / 2.0;
    let var = a * b / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var <= 0.0 {
        // Every value equal: no evidence either way.
        return 1.0;
    }
    let z = (u + 0.5 - mean) / var.sqrt();
    normal_cdf(z).min(1.0)
}

/// The standard normal CDF, Φ(z), from erfc (W. J. Cody's rational
/// approximation through the complementary error function, |error| < 1.2e-7).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    // Numerical Recipes' erfcc (Chebyshev fit), fractional error < 1.2e-7.
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn u_counts_pairs_and_half_ties() {
        assert_eq!(u_statistic(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        assert_eq!(u_statistic(&[3.0, 4.0], &[1.0, 2.0]), 4.0);
        assert_eq!(u_statistic(&[2.0], &[2.0]), 0.5);
    }

    #[test]
    fn exact_p_values_match_the_tables() {
        let low = [1.0, 2.0, 3.0, 4.0, 5.0];
        let high = [6.0, 7.0, 8.0, 9.0, 10.0];
        // Complete separation of 5 and 5: 1 arrangement of C(10,5) = 252.
        assert!(close(p_less(&low, &high), 1.0 / 252.0, 1e-12));
        assert!(close(p_greater(&high, &low), 1.0 / 252.0, 1e-12));
        assert!(p_less(&high, &low) > 0.99);
        // U = 4 is the one-sided 5 % critical value for 5 and 5:
        // P(U ≤ 4) = (1 + 1 + 2 + 3 + 5) / 252.
        let x = [1.0, 2.0, 3.0, 4.0, 9.0];
        let y = [5.0, 6.0, 7.0, 8.0, 10.0];
        assert_eq!(u_statistic(&x, &y), 4.0);
        assert!(close(p_less(&x, &y), 12.0 / 252.0, 1e-12));
        // scipy.stats.mannwhitneyu's documented example (males vs
        // females, exact): two-sided p = 0.1111, so one-sided 7/126.
        let males = [19.0, 22.0, 16.0, 29.0, 24.0];
        let females = [20.0, 11.0, 17.0, 12.0];
        assert_eq!(u_statistic(&males, &females), 17.0);
        assert!(close(p_greater(&males, &females), 7.0 / 126.0, 1e-12));
    }

    #[test]
    fn normal_approximation_matches_known_values() {
        assert!(close(normal_cdf(0.0), 0.5, 1e-7));
        assert!(close(normal_cdf(-1.959_964), 0.025, 1e-6));
        assert!(close(normal_cdf(1.644_854), 0.95, 1e-6));
        // scipy's asymptotic p for the same example: two-sided 0.111347.
        let p = normal_cdf_u(4, 5, 3.0, 0.0);
        assert!(close(p, 0.111_346_886 / 2.0, 1e-6), "{p}");
        // Ties switch to the approximation: 1,2,2 vs 2,3,4 has U = 1.
        let x = [1.0, 2.0, 2.0];
        let y = [2.0, 3.0, 4.0];
        assert_eq!(u_statistic(&x, &y), 1.0);
        // var = 9/12 × (7 − 24/30) = 4.65; z = (1.5 − 4.5)/√4.65.
        let expected = normal_cdf(-3.0 / 4.65_f64.sqrt());
        assert!(close(p_less(&x, &y), expected, 1e-12));
        // All equal: no evidence.
        assert_eq!(p_less(&[1.0; 5], &[1.0; 5]), 1.0);
    }

    #[test]
    fn exact_and_approximate_agree_on_larger_samples() {
        let x: Vec<f64> = (0..20).map(|i| i as f64 * 1.1).collect();
        let y: Vec<f64> = (0..20).map(|i| 5.0 + i as f64).collect();
        let u = u_statistic(&x, &y);
        let exact = exact_cdf(20, 20, u as usize);
        let approx = normal_cdf_u(20, 20, u, 0.0);
        assert!(close(exact, approx, 0.005), "{exact} vs {approx}");
        assert!(p_less(&[], &y) == 1.0);
    }
}
