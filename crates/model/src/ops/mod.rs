//! The backbone's hot path as candle custom ops: convolution, BatchNorm fused with residual addition and ReLU,
//! max pooling with saved argmax, and global average pooling. On the CPU they run our own kernels (im2col + gemm,
//! one pass per statistic, f64 accumulation); on any other device each falls back to candle's composition of the
//! same maths (convolution through cuDNN in the `cuda` build). Each op's gradients are checked against candle's
//! composition in the tests of this module.

mod conv;
mod gemm;
mod norm;
mod pool;

pub use conv::Geometry;

/// `dst` (m×n, row-major) = `lhs` (m×k) · `rhs` (k×n), each given row-major or, as `transposed` says, stored as
/// its transpose: the product every kernel here is built on, in the layouts they use, for [`crate::numerics`].
pub fn matmul_f32(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    transposed: Transposed,
) {
    let (lhs, rhs) = match transposed {
        Transposed::Neither => (gemm::Mat::rows(lhs, k), gemm::Mat::rows(rhs, n)),
        Transposed::Rhs => (gemm::Mat::rows(lhs, k), gemm::Mat::transposed(rhs, k)),
        Transposed::Lhs => (gemm::Mat::transposed(lhs, m), gemm::Mat::rows(rhs, n)),
    };
    gemm::matmul(m, n, k, dst, n, false, lhs, rhs);
}

/// Which operand of [`matmul_f32`] is stored transposed: `Rhs` makes the product one of dot products (both operands
/// read along k), as the distances and weight gradients are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transposed {
    Neither,
    Rhs,
    Lhs,
}
pub use norm::EPS;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, D, DType, Layout, Result, Storage, Tensor, bail};
use gemm::Elem;
use norm::{BatchNormOp, ChannelStats, Source};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

/// Binds the type alias `$t` to f32 or f64 after `$dtype` and evaluates `$body`; other dtypes are an error that
/// names `$what`.
macro_rules! float_dispatch {
    ($dtype:expr, $what:expr, |$t:ident| $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $t = f32;
                $body
            }
            candle_core::DType::F64 => {
                type $t = f64;
                $body
            }
            other => candle_core::bail!("{}: unsupported dtype {:?}", $what, other),
        }
    };
}
use float_dispatch;

/// Element-wise kernels on fewer values than this run on the calling thread: waking the pool and letting its
/// workers spin down afterwards costs more than the work (candle's own element-wise threshold).
const PARALLEL_MIN_VALUES: usize = 64 * 1024;

/// The minimum number of `parts` per rayon task for an element-wise kernel over `values` values: all of them (one
/// task on the calling thread) for small inputs, else one.
fn min_parts(values: usize, parts: usize) -> usize {
    if values < PARALLEL_MIN_VALUES {
        parts.max(1)
    } else {
        1
    }
}

/// `len` values built in parallel in parts of `part` (the last may be shorter), part `i` from the iterator
/// `values(i)`, at least `min_parts` parts per task, written straight into the new vector: an output that every part
/// overwrites is not zero-filled first (a memset the size of the output).
fn collect_planes<T, I>(
    len: usize,
    part: usize,
    min_parts: usize,
    values: impl Fn(usize) -> I + Sync,
) -> Vec<T>
where
    T: Elem,
    I: Iterator<Item = T>,
{
    let mut out = Box::<[T]>::new_uninit_slice(len);
    out.par_chunks_mut(part.max(1))
        .with_min_len(min_parts)
        .enumerate()
        .for_each(|(i, slots)| {
            let mut written = 0;
            for (slot, v) in slots.iter_mut().zip(values(i)) {
                slot.write(v);
                written += 1;
            }
            assert_eq!(
                written,
                slots.len(),
                "part {i}: {written} values for {} places",
                slots.len()
            );
        });
    // SAFETY: every part wrote each of its places (asserted above), and the parts cover the slice.
    unsafe { out.assume_init() }.into_vec()
}

/// The contiguous data of a CPU storage under `layout`, as `T`.
fn cpu_slice<'a, T: Elem>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    let Some(data) = T::slice(storage) else {
        bail!(
            "mgat kernel: expected {:?} data, found {:?}",
            T::DTYPE,
            storage.dtype()
        );
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!(
            "mgat kernel: input of shape {:?} is not contiguous",
            layout.dims()
        );
    };
    Ok(&data[start..end])
}

/// Runs `f` on the contiguous CPU data of `t`.
fn read<T: Elem, R>(t: &Tensor, f: impl FnOnce(&[T]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(cpu_slice(s, layout)?),
        _ => bail!("mgat kernel: tensor on {:?}, expected the CPU", t.device()),
    }
}

/// Convolution of N×C×H×W `x` with Co×C×KH×KW `w`, no bias, the same stride and zero padding on both axes.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return x.conv2d(w, pad, stride, 1, 1);
    }
    x.contiguous()?
        .apply_op2(&w.contiguous()?, conv::Conv2d { stride, pad })
}

/// What follows the normalisation: `+ shortcut` (same shape as the input), then ReLU.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub shortcut: Option<&'a Tensor>,
    pub relu: bool,
}

/// Training-mode BatchNorm over dim 1 with the batch's statistics, then the epilogue. Returns the output and the
/// batch's per-channel mean and biased variance (detached, in the input's dtype) for the running averages.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    then: Epilogue,
) -> Result<(Tensor, Tensor, Tensor)> {
    if !x.device().is_cpu() {
        return composed::batch_norm_train(x, gamma, beta, then);
    }
    let cell = Arc::new(OnceLock::new());
    let op = BatchNormOp {
        relu: then.relu,
        source: Source::Batch(cell.clone()),
    };
    let y = apply_batch_norm(x, gamma, beta, then.shortcut, op)?;
    let stats = cell
        .get()
        .ok_or_else(|| candle_core::Error::Msg("batch norm kept no statistics".into()))?;
    let c = stats.mean.len();
    let tensor = |v: &[f64]| Tensor::from_slice(v, c, x.device())?.to_dtype(x.dtype());
    Ok((y, tensor(&stats.mean)?, tensor(&stats.var)?))
}

/// Evaluation-mode BatchNorm with the given per-channel mean and biased variance, then the epilogue.
pub fn batch_norm_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    then: Epilogue,
) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return composed::batch_norm(x, gamma, beta, mean, var, then);
    }
    let values = |t: &Tensor| t.to_dtype(DType::F64)?.to_vec1::<f64>();
    let stats = ChannelStats {
        mean: values(mean)?,
        var: values(var)?,
    };
    let op = BatchNormOp {
        relu: then.relu,
        source: Source::Given(stats),
    };
    apply_batch_norm(x, gamma, beta, then.shortcut, op)
}

fn apply_batch_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    shortcut: Option<&Tensor>,
    op: BatchNormOp,
) -> Result<Tensor> {
    let affine = Tensor::stack(&[gamma, beta], 0)?;
    let x = x.contiguous()?;
    match shortcut {
        Some(s) => x.apply_op3(&affine, &s.contiguous()?, op),
        None => x.apply_op2(&affine, op),
    }
}

/// k×k max pooling with stride and −∞ padding (at most k/2).
pub fn max_pool2d(x: &Tensor, k: usize, stride: usize, pad: usize) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return composed::max_pool2d(x, k, stride, pad);
    }
    x.contiguous()?
        .apply_op1(pool::MaxPool2d::new(k, stride, pad)?)
}

/// The mean over H×W of an N×C×H×W tensor: N×C.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return x.flatten_from(2)?.mean(D::Minus1);
    }
    x.contiguous()?.apply_op1(pool::GlobalAvgPool)
}

/// The same maths from candle's own operations: the path on devices without our kernels, and the reference the
/// kernels are tested against.
pub mod composed {
    use super::{EPS, Epilogue};
    use candle_core::{Result, Tensor};

    /// Shape [1, C, 1, …] of a per-channel vector for an input of rank `rank`.
    fn per_channel(v: &Tensor, rank: usize) -> Result<Tensor> {
        let c = v.elem_count();
        let shape: Vec<usize> = (0..rank).map(|d| if d == 1 { c } else { 1 }).collect();
        v.reshape(shape)
    }

    pub fn batch_norm(
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        mean: &Tensor,
        var: &Tensor,
        then: Epilogue,
    ) -> Result<Tensor> {
        let r = x.rank();
        let normed = x
            .broadcast_sub(&per_channel(mean, r)?)?
            .broadcast_div(&(per_channel(var, r)? + EPS)?.sqrt()?)?;
        let mut y = normed
            .broadcast_mul(&per_channel(gamma, r)?)?
            .broadcast_add(&per_channel(beta, r)?)?;
        if let Some(s) = then.shortcut {
            y = (y + s)?;
        }
        if then.relu { y.relu() } else { Ok(y) }
    }

    /// As [`super::batch_norm_train`], with the batch statistics inside the autograd graph.
    pub fn batch_norm_train(
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        then: Epilogue,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let reduce: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
        let mean = x.mean_keepdim(reduce.as_slice())?;
        let var = x
            .broadcast_sub(&mean)?
            .sqr()?
            .mean_keepdim(reduce.as_slice())?;
        let (mean, var) = (mean.flatten_all()?, var.flatten_all()?);
        let y = batch_norm(x, gamma, beta, &mean, &var, then)?;
        Ok((y, mean.detach(), var.detach()))
    }

    /// The maximum of the k² strided shifts of the input padded with −∞.
    pub fn max_pool2d(x: &Tensor, k: usize, stride: usize, pad: usize) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let wall = |rows: usize, cols: usize| {
            Tensor::full(f32::NEG_INFINITY, (n, c, rows, cols), x.device())?.to_dtype(x.dtype())
        };
        let padded = if pad == 0 {
            x.clone()
        } else {
            let x = Tensor::cat(&[&wall(h, pad)?, x, &wall(h, pad)?], 3)?;
            Tensor::cat(&[&wall(pad, w + 2 * pad)?, &x, &wall(pad, w + 2 * pad)?], 2)?
        };
        let (hp, wp) = (h + 2 * pad, w + 2 * pad);
        let (ho, wo) = ((hp - k) / stride + 1, (wp - k) / stride + 1);
        let index = |n: usize, offset: usize| {
            let i: Vec<u32> = (0..n).map(|o| (o * stride + offset) as u32).collect();
            Tensor::new(i, x.device())
        };
        let mut result: Option<Tensor> = None;
        for ki in 0..k {
            let rows = padded.index_select(&index(ho, ki)?, 2)?;
            for kj in 0..k {
                let shifted = rows.index_select(&index(wo, kj)?, 3)?;
                result = Some(match result {
                    Some(r) => r.maximum(&shifted)?,
                    None => shifted,
                });
            }
        }
        result.ok_or_else(|| candle_core::Error::Msg("empty pooling window".into()))
    }
}

#[cfg(test)]
mod tests;
