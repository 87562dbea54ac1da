//! BatchNorm over the channels (dim 1) of an N×C×… input, fused with an optional residual addition and ReLU, as
//! candle custom ops: y = relu?(γ·(x − μ)/√(σ² + ε) + β + shortcut?). In training mode μ and σ² are the batch's
//! (computed in f64); the forward pass keeps only them, beside its input, and the backward pass reads the input,
//! the output (ReLU's mask) and those statistics. In evaluation mode μ and σ² are the running averages given.

use super::gemm::Elem;
use super::{cpu_slice, float_dispatch, min_parts, read};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

/// ε under the square root, as torch.
pub const EPS: f64 = 1e-5;

/// Per-channel mean and biased variance, in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
}

impl ChannelStats {
    fn inv_std(&self, c: usize) -> f64 {
        1.0 / (self.var[c] + EPS).sqrt()
    }
}

/// Where the normalisation's statistics come from.
pub enum Source {
    /// The batch's own, computed by the forward pass and kept here for its backward pass and the caller.
    Batch(Arc<OnceLock<ChannelStats>>),
    /// Given (the running averages, in evaluation).
    Given(ChannelStats),
}

/// The op: `x.apply_op2(&affine, op)`, or `x.apply_op3(&affine, &shortcut, op)` with a residual, where `affine` is
/// γ and β stacked (2×C).
pub struct BatchNormOp {
    pub relu: bool,
    pub source: Source,
}

/// N, C and the positions per channel and sample.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    s: usize,
}

impl Dims {
    fn of(dims: &[usize], affine: &[usize]) -> Result<Self> {
        let (&[n, c, ..], &[2, ca]) = (dims, affine) else {
            bail!("batch norm: input {dims:?} needs N×C×…, affine {affine:?} needs 2×C");
        };
        if c != ca {
            bail!("batch norm: input {dims:?} has {c} channels, the affine parameters {ca}");
        }
        Ok(Self {
            n,
            c,
            s: dims[2..].iter().product(),
        })
    }

    /// Values per channel.
    fn m(&self) -> usize {
        self.n * self.s
    }

    /// The values of channel `c`, sample by sample.
    fn planes<'a, T>(&self, x: &'a [T], c: usize) -> impl Iterator<Item = &'a [T]> + use<'a, T> {
        let (cs, s) = (self.c * self.s, self.s);
        (0..self.n).map(move |n| &x[n * cs + c * s..][..s])
    }
}

impl BatchNormOp {
    fn stats<T: Elem>(&self, x: &[T], d: Dims) -> Result<ChannelStats> {
        match &self.source {
            Source::Given(stats) => Ok(stats.clone()),
            Source::Batch(cell) => {
                let stats = batch_stats(x, d);
                // A second forward through one op would be a bug in the caller.
                cell.set(stats.clone())
                    .map_err(|_| candle_core::Error::Msg("batch norm op reused".into()))?;
                Ok(stats)
            }
        }
    }

    fn fwd<T: Elem>(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        shortcut: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1.dims(), l2.dims())?;
        let x = cpu_slice::<T>(s1, l1)?;
        let shortcut = match shortcut {
            Some((s3, l3)) if l3.dims() == l1.dims() => Some(cpu_slice::<T>(s3, l3)?),
            Some((_, l3)) => bail!(
                "batch norm: shortcut {:?} differs from input {:?}",
                l3.dims(),
                l1.dims()
            ),
            None => None,
        };
        let stats = self.stats(x, d)?;
        let y = forward(x, cpu_slice::<T>(s2, l2)?, shortcut, d, self.relu, &stats);
        Ok((T::to_cpu_storage_owned(y), l1.shape().clone()))
    }

    fn fwd_any(
        &self,
        x: (&CpuStorage, &Layout),
        affine: (&CpuStorage, &Layout),
        shortcut: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        float_dispatch!(x.0.dtype(), "batch norm", |T| self
            .fwd::<T>(x, affine, shortcut))
    }

    /// (dx, d affine, d shortcut when `residual`).
    fn bwd_any(
        &self,
        x: &Tensor,
        affine: &Tensor,
        res: &Tensor,
        grad: &Tensor,
        residual: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let Source::Batch(cell) = &self.source else {
            bail!("batch norm: no backward pass in evaluation mode");
        };
        let stats = cell
            .get()
            .ok_or_else(|| candle_core::Error::Msg("batch norm: backward before forward".into()))?;
        let d = Dims::of(x.dims(), affine.dims())?;
        let grad = grad.contiguous()?;
        let cpu = Device::Cpu;
        float_dispatch!(x.dtype(), "batch norm backward", |T| {
            let (dx, da, ds) = read::<T, _>(x, |xv| {
                read::<T, _>(affine, |av| {
                    read::<T, _>(res, |rv| {
                        read::<T, _>(&grad, |gv| {
                            Ok(backward(xv, av, rv, gv, d, self.relu, stats, residual))
                        })
                    })
                })
            })?;
            Ok((
                Tensor::from_vec(dx, x.shape(), &cpu)?,
                Tensor::from_vec(da, affine.shape(), &cpu)?,
                ds.map(|ds| Tensor::from_vec(ds, x.shape(), &cpu))
                    .transpose()?,
            ))
        })
    }
}

impl CustomOp2 for BatchNormOp {
    fn name(&self) -> &'static str {
        "mgat-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd_any((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        affine: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, da, _) = self.bwd_any(x, affine, res, grad, false)?;
        Ok((Some(dx), Some(da)))
    }
}

impl CustomOp3 for BatchNormOp {
    fn name(&self) -> &'static str {
        "mgat-batch-norm-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd_any((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        affine: &Tensor,
        _shortcut: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, da, ds) = self.bwd_any(x, affine, res, grad, true)?;
        Ok((Some(dx), Some(da), ds))
    }
}

/// Σ f(v) over `values` in f64, with eight independent partial sums so the loop vectorises.
fn sum_f64<T: Elem>(values: &[T], f: impl Fn(T) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().sum::<f64>() + rest
}

/// Mean and biased variance of every channel (two passes, for accuracy).
fn batch_stats<T: Elem>(x: &[T], d: Dims) -> ChannelStats {
    let m = d.m() as f64;
    let (mean, var) = (0..d.c)
        .into_par_iter()
        .with_min_len(min_parts(x.len(), d.c))
        .map(|c| {
            let mean = d
                .planes(x, c)
                .map(|p| sum_f64(p, |v| v.to_f64()))
                .sum::<f64>()
                / m;
            let var = d
                .planes(x, c)
                .map(|p| sum_f64(p, |v| (v.to_f64() - mean).powi(2)))
                .sum::<f64>()
                / m;
            (mean, var)
        })
        .unzip();
    ChannelStats { mean, var }
}

/// y = relu?((x − μ)·γ/σ + β + shortcut?).
fn forward<T: Elem>(
    x: &[T],
    affine: &[T],
    shortcut: Option<&[T]>,
    d: Dims,
    relu: bool,
    stats: &ChannelStats,
) -> Vec<T> {
    let scale: Vec<T> = (0..d.c)
        .map(|c| T::from_f64(affine[c].to_f64() * stats.inv_std(c)))
        .collect();
    let mean: Vec<T> = stats.mean.iter().map(|&m| T::from_f64(m)).collect();
    let beta = &affine[d.c..];
    let mut y = vec![T::ZERO; x.len()];
    let sample = d.c * d.s;
    y.par_chunks_mut(sample)
        .with_min_len(min_parts(x.len(), d.n))
        .enumerate()
        .for_each(|(n, y)| {
            for (c, y) in y.chunks_mut(d.s).enumerate() {
                let at = n * sample + c * d.s;
                let x = &x[at..][..d.s];
                let (scale, mean, beta) = (scale[c], mean[c], beta[c]);
                let relu = |v: T| if v > T::ZERO || !relu { v } else { T::ZERO };
                match shortcut {
                    Some(sc) => {
                        for ((y, &x), &r) in y.iter_mut().zip(x).zip(&sc[at..][..d.s]) {
                            *y = relu((x - mean) * scale + beta + r);
                        }
                    }
                    None => {
                        for (y, &x) in y.iter_mut().zip(x) {
                            *y = relu((x - mean) * scale + beta);
                        }
                    }
                }
            }
        });
    y
}

/// The gradient reaching the normalisation: `grad`, masked by ReLU's output where there is a ReLU.
#[inline]
fn masked<T: Elem>(grad: T, out: T, relu: bool) -> T {
    if out > T::ZERO || !relu {
        grad
    } else {
        T::ZERO
    }
}

/// dx, dγβ (2×C) and, with a residual, d shortcut (the masked gradient itself).
#[allow(clippy::too_many_arguments)]
fn backward<T: Elem>(
    x: &[T],
    affine: &[T],
    res: &[T],
    grad: &[T],
    d: Dims,
    relu: bool,
    stats: &ChannelStats,
    residual: bool,
) -> (Vec<T>, Vec<T>, Option<Vec<T>>) {
    // Per channel: Σg and Σg·(x − μ).
    let sums: Vec<(f64, f64)> = (0..d.c)
        .into_par_iter()
        .with_min_len(min_parts(x.len(), d.c))
        .map(|c| {
            let mean = stats.mean[c];
            let (mut sum_g, mut sum_gx) = (0.0, 0.0);
            let sample = d.c * d.s;
            for n in 0..d.n {
                let at = n * sample + c * d.s;
                let (x, res, grad) = (&x[at..][..d.s], &res[at..][..d.s], &grad[at..][..d.s]);
                for ((&x, &r), &g) in x.iter().zip(res).zip(grad) {
                    let g = masked(g, r, relu).to_f64();
                    sum_g += g;
                    sum_gx += g * (x.to_f64() - mean);
                }
            }
            (sum_g, sum_gx)
        })
        .collect();
    let m = d.m() as f64;
    // dx = a·(g − mean g) + b·(x − μ) per channel.
    let coefficients: Vec<(T, T, T, T)> = (0..d.c)
        .map(|c| {
            let (sum_g, sum_gx) = sums[c];
            let inv_std = stats.inv_std(c);
            let a = affine[c].to_f64() * inv_std;
            let b = -a * inv_std * inv_std * sum_gx / m;
            (
                T::from_f64(a),
                T::from_f64(b),
                T::from_f64(sum_g / m),
                T::from_f64(stats.mean[c]),
            )
        })
        .collect();
    let mut dx = vec![T::ZERO; x.len()];
    let mut d_shortcut = residual.then(|| vec![T::ZERO; x.len()]);
    let sample = d.c * d.s;
    let write = |n: usize, dx: &mut [T], ds: Option<&mut [T]>| {
        for c in 0..d.c {
            let at = n * sample + c * d.s;
            let (a, b, mean_g, mean) = coefficients[c];
            let (x, res, grad) = (&x[at..][..d.s], &res[at..][..d.s], &grad[at..][..d.s]);
            let dx = &mut dx[c * d.s..][..d.s];
            for (((dx, &x), &r), &g) in dx.iter_mut().zip(x).zip(res).zip(grad) {
                *dx = a * (masked(g, r, relu) - mean_g) + b * (x - mean);
            }
        }
        if let Some(ds) = ds {
            for ((ds, &r), &g) in ds
                .iter_mut()
                .zip(&res[n * sample..][..sample])
                .zip(&grad[n * sample..][..sample])
            {
                *ds = masked(g, r, relu);
            }
        }
    };
    match &mut d_shortcut {
        Some(ds) => dx
            .par_chunks_mut(sample)
            .zip(ds.par_chunks_mut(sample))
            .with_min_len(min_parts(x.len(), d.n))
            .enumerate()
            .for_each(|(n, (dx, ds))| write(n, dx, Some(ds))),
        None => dx
            .par_chunks_mut(sample)
            .with_min_len(min_parts(x.len(), d.n))
            .enumerate()
            .for_each(|(n, dx)| write(n, dx, None)),
    }
    let mut d_affine: Vec<T> = sums
        .iter()
        .enumerate()
        .map(|(c, &(_, gx))| T::from_f64(gx * stats.inv_std(c)))
        .collect();
    d_affine.extend(sums.iter().map(|&(g, _)| T::from_f64(g)));
    (dx, d_affine, d_shortcut)
}
