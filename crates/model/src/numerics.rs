//! This CPU's floating-point class, measured: which results the kernels compute here. gemm picks its kernel at run
//! time (AVX-512 with its `x86-v4` feature, else FMA, else scalar), blocks the inner dimension by the L1 cache's
//! geometry, and computes small products of dot-product layout with horizontal kernels (a register of partial sums
//! per output, reduced at the end, whose width is the vector's): all of it changes how each dot product is rounded.
//! The quickstart's train stage gave other weights on a CPU without FMA (`qemu-x86_64 -cpu Nehalem`) than on this
//! AVX-512 machine, and with the AVX-512 kernels on, other weights again than on an AVX2+FMA CPU
//! (`-cpu Skylake-Client`), whose products in plain layout round exactly as AVX-512's do. Rather than model gemm's
//! choices, [`cpu_class`] runs products on fixed inputs in every operand layout the kernels use (A·B, A·Bᵀ, Aᵀ·B),
//! at output sizes on both sides of gemm's horizontal-kernel threshold (16 × 16 outputs) and at an inner size short
//! enough for one block and one long enough for several, and names the bits it gets: two CPUs share a class exactly
//! when those products round alike. Train and eval keys carry it, so a cache shared by different CPUs never serves
//! one's results as the other's.

use crate::ops::{Transposed, matmul_f32};
use std::sync::OnceLock;

/// `cpu-<16 hex>`: the SHA-256 of the probe products' bits, computed once per process.
pub fn cpu_class() -> &'static str {
    static CLASS: OnceLock<String> = OnceLock::new();
    CLASS.get_or_init(|| {
        let mut bits = Vec::new();
        for k in [64, 8192] {
            for (m, n) in [(4, 4), (16, 16), (80, 24)] {
                let (lhs, rhs) = (probe_values(m * k, 1), probe_values(k * n, 2));
                for transposed in [Transposed::Neither, Transposed::Rhs, Transposed::Lhs] {
                    let mut out = vec![0f32; m * n];
                    matmul_f32((m, n, k), &mut out, &lhs, &rhs, transposed);
                    bits.extend(out.iter().flat_map(|v| v.to_le_bytes()));
                }
            }
        }
        let digest = mgat_util::digest::sha256_bytes(&bits);
        format!("cpu-{}", &digest[..16])
    })
}

/// `len` values in [-1, 1) from a fixed xorshift stream: exact in f32, so every CPU starts from the same bits.
fn probe_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32) / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_is_stable_and_the_probe_sums_long_enough_to_round() {
        assert_eq!(cpu_class(), cpu_class());
        assert!(cpu_class().starts_with("cpu-") && cpu_class().len() == 20);
        // The long product's entries are sums of 8192 rounded terms: not representable without rounding, so a
        // different order or fused multiply-add changes some bits (what the class detects).
        let k = 8192;
        let (lhs, rhs) = (probe_values(k, 1), probe_values(k, 2));
        let exact: f64 = lhs
            .iter()
            .zip(&rhs)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let mut out = [0f32];
        matmul_f32((1, 1, k), &mut out, &lhs, &rhs, Transposed::Neither);
        assert!(
            (f64::from(out[0]) - exact).abs() < 1e-2,
            "{} vs {exact}",
            out[0]
        );
        assert_ne!(f64::from(out[0]), exact);
    }
}
