//! Small-sample statistics for seed aggregates: mean, sample standard deviation, the 95% confidence interval of a
//! mean (Student t), Welch's unequal-variance t-test with its two-sided p-value and the interval of a difference,
//! and Holm's step-down correction for a family of tests. The t distribution comes from the regularised incomplete
//! beta function.

/// Arithmetic mean; NaN for an empty slice.
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample standard deviation (n − 1 in the denominator); NaN with fewer than two values.
pub fn sample_std(xs: &[f64]) -> f64 {
    sample_var(xs).sqrt()
}

fn sample_var(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return f64::NAN;
    }
    let m = mean(xs);
    xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() - 1) as f64
}

/// Welch's t-test of `b` against `a`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Welch {
    /// (mean b − mean a) / standard error.
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p: f64,
    /// mean b − mean a, and half the width of its 95% confidence interval (t with `df` degrees of freedom; 0 when
    /// neither side varies).
    pub diff: f64,
    pub ci95: f64,
}

/// Welch's t-test; `None` unless both sides have at least two values. Two samples without any spread give
/// p = 1 when their means are equal and p = 0 otherwise.
pub fn welch(a: &[f64], b: &[f64]) -> Option<Welch> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let (va, vb) = (
        sample_var(a) / a.len() as f64,
        sample_var(b) / b.len() as f64,
    );
    let diff = mean(b) - mean(a);
    let se2 = va + vb;
    if se2 == 0.0 {
        let p = if diff == 0.0 { 1.0 } else { 0.0 };
        let t = if diff == 0.0 {
            0.0
        } else {
            diff.signum() * f64::INFINITY
        };
        return Some(Welch {
            t,
            df: f64::NAN,
            p,
            diff,
            ci95: 0.0,
        });
    }
    let t = diff / se2.sqrt();
    let df = se2 * se2 / (va * va / (a.len() - 1) as f64 + vb * vb / (b.len() - 1) as f64);
    Some(Welch {
        t,
        df,
        p: student_t_two_sided(t, df),
        diff,
        ci95: t_critical(0.05, df) * se2.sqrt(),
    })
}

/// Half the width of the 95% confidence interval of the mean of `xs` (Student t with n − 1 degrees of freedom):
/// t₀.₉₇₅ · s / √n. NaN with fewer than two values.
pub fn ci95_half_width(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return f64::NAN;
    }
    let n = xs.len() as f64;
    t_critical(0.05, n - 1.0) * sample_std(xs) / n.sqrt()
}

/// The t with P(|T| ≥ t) = `alpha` for Student's t with `df` degrees of freedom (bisection to 1e-12).
pub fn t_critical(alpha: f64, df: f64) -> f64 {
    if !(alpha > 0.0 && alpha < 1.0) || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while student_t_two_sided(hi, df) > alpha {
        hi *= 2.0;
    }
    while hi - lo > 1e-12 * hi.max(1.0) {
        let mid = 0.5 * (lo + hi);
        if student_t_two_sided(mid, df) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Holm's step-down adjustment: the i-th smallest of m p-values becomes max over j ≤ i of min(1, (m − j + 1)·p₍ⱼ₎),
/// returned in the input order. Rejecting where the adjusted p < α controls the family-wise error rate at α.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let m = p.len();
    let mut adjusted = vec![f64::NAN; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// P(|T| ≥ |t|) for Student's t with `df` degrees of freedom: I_{df/(df+t²)}(df/2, 1/2).
pub fn student_t_two_sided(t: f64, df: f64) -> f64 {
    regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// I_x(a, b) by the continued fraction (modified Lentz), using the symmetry relation for fast convergence.
fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_continued_fraction(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_continued_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        for aa in [
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ] {
            d = 1.0 + aa * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + aa / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; relative error below 1e-15).
fn ln_gamma(x: f64) -> f64 {
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let series = COEF[0]
        + COEF[1..]
            .iter()
            .enumerate()
            .map(|(i, c)| c / (x + i as f64 + 1.0))
            .sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std_by_hand() {
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(&xs), 5.0);
        // Σ(x − 5)² = 32, n − 1 = 7.
        assert!((sample_std(&xs) - (32.0f64 / 7.0).sqrt()).abs() < 1e-15);
        assert!(sample_std(&[1.0]).is_nan());
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        let mut fact = 1.0f64;
        for n in 1..20 {
            assert!(
                (ln_gamma(f64::from(n)) - fact.ln()).abs() < 1e-12,
                "n = {n}"
            );
            fact *= f64::from(n);
        }
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-14);
    }

    #[test]
    fn student_t_matches_closed_forms_and_tables() {
        // df = 1 is the Cauchy distribution: P(|T| ≥ t) = 1 − 2·atan(t)/π.
        for t in [0.1, 1.0, 3.0, 40.0] {
            let exact = 1.0 - 2.0 * f64::atan(t) / std::f64::consts::PI;
            assert!(
                (student_t_two_sided(t, 1.0) - exact).abs() < 1e-12,
                "t = {t}"
            );
        }
        // df = 2: P(|T| ≥ t) = 1 − t / sqrt(2 + t²).
        for t in [0.5f64, 2.0, 10.0] {
            let exact = 1.0 - t / (2.0 + t * t).sqrt();
            assert!(
                (student_t_two_sided(t, 2.0) - exact).abs() < 1e-12,
                "t = {t}"
            );
        }
        // Printed critical values: t(0.975, 10) = 2.228139, t(0.995, 30) = 2.749996.
        assert!((student_t_two_sided(2.228139, 10.0) - 0.05).abs() < 1e-6);
        assert!((student_t_two_sided(2.749996, 30.0) - 0.01).abs() < 1e-6);
        assert_eq!(student_t_two_sided(0.0, 5.0), 1.0);
    }

    #[test]
    fn t_critical_matches_printed_tables() {
        // t₀.₉₇₅ for df = 1, 4, 9, 30: 12.706205, 2.776445, 2.262157, 2.042272.
        for (df, t) in [
            (1.0, 12.706205),
            (4.0, 2.776445),
            (9.0, 2.262157),
            (30.0, 2.042272),
        ] {
            assert!((t_critical(0.05, df) - t).abs() < 1e-5, "df = {df}");
        }
        assert!(t_critical(0.05, 0.0).is_nan());
    }

    #[test]
    fn ci95_by_hand() {
        // n = 5, s = sqrt(2.5), t₀.₉₇₅(4) = 2.776445.
        let xs = [1.0, 2.0, 3.0, 4.0, 5.0];
        let want = 2.776445 * 2.5f64.sqrt() / 5f64.sqrt();
        assert!((ci95_half_width(&xs) - want).abs() < 1e-5);
        assert!(ci95_half_width(&[1.0]).is_nan());
    }

    #[test]
    fn holm_by_hand() {
        // Sorted 0.01, 0.02, 0.04, 0.3 → ×4, ×3, ×2, ×1 = 0.04, 0.06, 0.08, 0.3 (already monotone).
        let adjusted = holm(&[0.3, 0.01, 0.04, 0.02]);
        let want = [0.3, 0.04, 0.08, 0.06];
        assert!(
            adjusted
                .iter()
                .zip(want)
                .all(|(a, w)| (a - w).abs() < 1e-12),
            "{adjusted:?}"
        );
        let adjusted = holm(&[0.05, 0.02, 0.9]);
        assert!((adjusted[1] - 0.06).abs() < 1e-12 && (adjusted[0] - 0.1).abs() < 1e-12);
        // Monotone: the larger p (0.045 × 1) is raised to the smaller one's adjusted 0.04 × 2.
        let adjusted = holm(&[0.04, 0.045]);
        assert!((adjusted[0] - 0.08).abs() < 1e-12 && (adjusted[1] - 0.08).abs() < 1e-12);
        assert!(holm(&[]).is_empty());
    }

    #[test]
    fn welch_by_hand() {
        let a = [1.0, 2.0, 3.0];
        let b = [4.0, 6.0];
        // var a = 1, var b = 2: se² = 1/3 + 1 = 4/3; t = 3 / sqrt(4/3);
        // df = (4/3)² / ((1/3)²/2 + 1²/1) = (16/9) / (19/18) = 32/19.
        let w = welch(&a, &b).expect("two sides");
        assert!((w.t - 3.0 / (4.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((w.df - 32.0 / 19.0).abs() < 1e-12);
        assert!(w.p > 0.0 && w.p < 0.2);
        assert!((w.diff - 3.0).abs() < 1e-12);
        assert!((w.ci95 - t_critical(0.05, 32.0 / 19.0) * (4.0f64 / 3.0).sqrt()).abs() < 1e-9);
        assert!(welch(&a, &[1.0]).is_none());
        assert_eq!(welch(&[1.0, 1.0], &[1.0, 1.0]).map(|w| w.p), Some(1.0));
        assert_eq!(welch(&[1.0, 1.0], &[2.0, 2.0]).map(|w| w.p), Some(0.0));
    }
}
