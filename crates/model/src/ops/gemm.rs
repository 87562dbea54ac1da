//! The element types the CPU kernels run on (f32, f64) and one strided matrix product over the `gemm` crate, with
//! the bounds of every operand checked before the unsafe call.

use candle_core::{CpuStorage, WithDType};
use std::ops::{Add, AddAssign, Mul, Sub};

/// A float the CPU kernels compute in.
pub trait Elem:
    WithDType
    + Copy
    + Send
    + Sync
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + AddAssign
    + 'static
{
    const ZERO: Self;
    const NEG_INFINITY: Self;
    fn is_nan(self) -> bool;
    /// `self` where `keep`, else +0, without a branch (a ReLU mask is as good as random, so a branch on it is
    /// mispredicted half the time); the bits are those of `if keep { self } else { 0.0 }`.
    fn or_zero(self, keep: bool) -> Self;
    /// The slice of `storage` when it holds this type.
    fn slice(storage: &CpuStorage) -> Option<&[Self]>;
}

macro_rules! elem {
    ($t:ty, $bits:ty, $variant:ident) => {
        impl Elem for $t {
            const ZERO: Self = 0.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline(always)]
            fn or_zero(self, keep: bool) -> Self {
                <$t>::from_bits(self.to_bits() & (keep as $bits).wrapping_neg())
            }
            fn slice(storage: &CpuStorage) -> Option<&[Self]> {
                match storage {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
elem!(f32, u32, F32);
elem!(f64, u64, F64);

/// A read-only strided matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A row-major matrix whose rows are `rs` apart.
    pub fn rows(data: &'a [T], rs: usize) -> Self {
        Self { data, rs, cs: 1 }
    }

    /// The transpose of a row-major matrix whose rows are `rs` apart.
    pub fn transposed(data: &'a [T], rs: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: rs,
        }
    }

    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * self.rs + (cols - 1) * self.cs;
            assert!(
                last < self.data.len(),
                "{what}: {rows}×{cols} view out of bounds"
            );
        }
    }
}

/// `dst` (m×n, row-major with rows `dst_rs` apart) = `lhs`·`rhs`, or += with `accumulate`. Runs on the calling
/// thread: the kernels parallelise over independent products, so each product's summation order is fixed.
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Elem>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<T>,
    rhs: Mat<T>,
) {
    if m == 0 || n == 0 {
        return;
    }
    Mat::rows(&*dst, dst_rs).check(m, n, "matmul destination");
    lhs.check(m, k, "matmul lhs");
    rhs.check(k, n, "matmul rhs");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(T::ZERO);
            }
        }
        return;
    }
    let one = T::from_f64(1.0);
    // SAFETY: every index each operand is read or written at, (i·rs + j·cs) for i < rows, j < cols, was checked to lie
    // inside its slice above; `dst` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            one,
            one,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_products_match_a_triple_loop() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.3).cos()).collect();
        // lhs given as the transpose of a k×m row-major matrix.
        let at: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let mut dst = vec![1.0; m * n];
        matmul(
            m,
            n,
            k,
            &mut dst,
            n,
            true,
            Mat::transposed(&at, m),
            Mat::rows(&b, n),
        );
        for i in 0..m {
            for j in 0..n {
                let want: f64 = 1.0 + (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum::<f64>();
                assert!((dst[i * n + j] - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn a_view_past_its_slice_is_refused() {
        let a = vec![0f32; 5];
        let mut dst = vec![0f32; 4];
        matmul(
            2,
            2,
            3,
            &mut dst,
            2,
            false,
            Mat::rows(&a, 3),
            Mat::rows(&a, 2),
        );
    }
}
