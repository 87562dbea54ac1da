//! BatchNorm over the channels (dim 1) of an N×C×… input, fused with an optional residual addition and ReLU, as
//! candle custom ops: y = relu?(γ·(x − μ)/√(σ² + ε) + β + shortcut?). In training mode μ and σ² are the batch's
//! (computed in f64); the forward pass keeps only them, beside its input, and the backward pass reads the input,
//! the output (ReLU's mask) and those statistics. In evaluation mode μ and σ² are the running averages given.

use super::gemm::Elem;
use super::{collect_planes, cpu_slice, float_dispatch, min_parts, read};
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
    let min_planes = min_parts(x.len(), d.n * d.c);
    // One plane (sample, channel) per part; the ReLU and the shortcut are decided outside the loops, so each loop
    // is a plain select that vectorises.
    let normalised = |plane: usize| {
        let c = plane % d.c;
        let (scale, mean, beta) = (scale[c], mean[c], beta[c]);
        let x = &x[plane * d.s..][..d.s];
        x.iter().map(move |&x| (x - mean) * scale + beta)
    };
    match (shortcut, relu) {
        (Some(sc), true) => collect_planes(x.len(), d.s, min_planes, |plane| {
            let sc = &sc[plane * d.s..][..d.s];
            normalised(plane).zip(sc).map(|(v, &r)| relu_of(v + r))
        }),
        (Some(sc), false) => collect_planes(x.len(), d.s, min_planes, |plane| {
            let sc = &sc[plane * d.s..][..d.s];
            normalised(plane).zip(sc).map(|(v, &r)| v + r)
        }),
        (None, true) => collect_planes(x.len(), d.s, min_planes, |plane| {
            normalised(plane).map(relu_of)
        }),
        (None, false) => collect_planes(x.len(), d.s, min_planes, normalised),
    }
}

/// max(v, 0), +0 for a NaN and for −0.
#[inline(always)]
fn relu_of<T: Elem>(v: T) -> T {
    v.or_zero(v > T::ZERO)
}

/// The gradient reaching the normalisation: `grad`, masked by ReLU's output where there is a ReLU.
#[inline]
fn masked<T: Elem>(grad: T, out: T, relu: bool) -> T {
    grad.or_zero(out > T::ZERO || !relu)
}

/// Channels whose gradient sums advance together in [`GradientSums::of_all`].
const SUM_LANES: usize = 4;

/// What the per-channel gradient sums read: the forward pass's input `x` and output `res` (ReLU's mask), the
/// gradient reaching the output, the batch means.
struct GradientSums<'a, T> {
    x: &'a [T],
    res: &'a [T],
    grad: &'a [T],
    d: Dims,
    relu: bool,
    mean: &'a [f64],
}

impl<T: Elem> GradientSums<'_, T> {
    /// Per channel, Σg and Σg·(x − μ) in f64, g the masked gradient: each channel summed on its own, value by
    /// value in memory order (so the bits are those of one plain loop per channel), with [`SUM_LANES`] channels in
    /// one loop so that their chains of dependent additions overlap instead of waiting on each other.
    fn of_all(&self) -> Vec<(f64, f64)> {
        let mut sums = vec![(0.0, 0.0); self.d.c];
        sums.par_chunks_mut(SUM_LANES)
            .with_min_len(min_parts(self.x.len(), self.d.c.div_ceil(SUM_LANES)))
            .enumerate()
            .for_each(|(block, out)| {
                let first = block * SUM_LANES;
                if out.len() == SUM_LANES {
                    out.copy_from_slice(&self.of_lanes::<SUM_LANES>(first));
                } else {
                    for (c, out) in (first..).zip(out) {
                        *out = self.of_lanes::<1>(c)[0];
                    }
                }
            });
        sums
    }

    /// The sums of channels `first..first + L`, a block of each plane at a time: the terms g and g·(x − μ) of the
    /// block first (a loop without dependencies, which vectorises), then their sums in order.
    fn of_lanes<const L: usize>(&self, first: usize) -> [(f64, f64); L] {
        const BLOCK: usize = 64;
        let d = self.d;
        let (mut sum_g, mut sum_gx) = ([0f64; L], [0f64; L]);
        let (mut g, mut gx) = ([[0f64; BLOCK]; L], [[0f64; BLOCK]; L]);
        for n in 0..d.n {
            for start in (0..d.s).step_by(BLOCK) {
                let len = BLOCK.min(d.s - start);
                for j in 0..L {
                    let from = (n * d.c + first + j) * d.s + start;
                    let at = from..from + len;
                    let (x, res, grad) =
                        (&self.x[at.clone()], &self.res[at.clone()], &self.grad[at]);
                    let mean = self.mean[first + j];
                    let terms = g[j][..len].iter_mut().zip(&mut gx[j][..len]);
                    for ((g, gx), ((&x, &r), &dy)) in terms.zip(x.iter().zip(res).zip(grad)) {
                        *g = masked(dy, r, self.relu).to_f64();
                        *gx = *g * (x.to_f64() - mean);
                    }
                }
                for i in 0..len {
                    for j in 0..L {
                        sum_g[j] += g[j][i];
                        sum_gx[j] += gx[j][i];
                    }
                }
            }
        }
        std::array::from_fn(|j| (sum_g[j], sum_gx[j]))
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
    let sums = GradientSums {
        x,
        res,
        grad,
        d,
        relu,
        mean: &stats.mean,
    }
    .of_all();
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
    let min_planes = min_parts(x.len(), d.n * d.c);
    let dx = collect_planes(x.len(), d.s, min_planes, |plane| {
        let (a, b, mean_g, mean) = coefficients[plane % d.c];
        let at = plane * d.s..(plane + 1) * d.s;
        let (x, res, grad) = (&x[at.clone()], &res[at.clone()], &grad[at]);
        x.iter()
            .zip(res)
            .zip(grad)
            .map(move |((&x, &r), &g)| a * (masked(g, r, relu) - mean_g) + b * (x - mean))
    });
    let d_shortcut = residual.then(|| {
        collect_planes(x.len(), d.s, min_planes, |plane| {
            let at = plane * d.s..(plane + 1) * d.s;
            res[at.clone()]
                .iter()
                .zip(&grad[at])
                .map(move |(&r, &g)| masked(g, r, relu))
        })
    });
    let mut d_affine: Vec<T> = sums
        .iter()
        .enumerate()
        .map(|(c, &(_, gx))| T::from_f64(gx * stats.inv_std(c)))
        .collect();
    d_affine.extend(sums.iter().map(|&(g, _)| T::from_f64(g)));
    (dx, d_affine, d_shortcut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgat_util::rng::Rng;

    /// Normal values with the cases a select must keep apart: ties with 0, −0 and, with `nan`, NaN (which a sum
    /// carries to its end, hiding every other difference).
    fn values(rng: &mut Rng, len: usize, nan: bool) -> Vec<f32> {
        (0..len)
            .map(|i| match i % 17 {
                3 => 0.0,
                5 => -0.0,
                11 if nan => f32::NAN,
                _ => rng.normal() as f32,
            })
            .collect()
    }

    /// The references below are the kernels' maths as plain loops, one value at a time and each sum in the order
    /// it was taken before the kernels were tuned: what every tuning must reproduce bit for bit. This is ReLU's
    /// mask, `v` where `out` is positive, as a branch as it was written then.
    fn plain_masked(v: f32, out: f32, relu: bool) -> f32 {
        if out > 0.0 || !relu { v } else { 0.0 }
    }

    #[test]
    fn gradient_sums_are_each_channels_plain_sequential_sums_bit_for_bit() {
        // 6 channels: one block of SUM_LANES and two alone; 70 values per plane: a block of 64 and a rest.
        let d = Dims { n: 3, c: 6, s: 70 };
        let mut rng = Rng::new(1, &[]);
        let len = d.n * d.c * d.s;
        let (x, res, grad) = (
            values(&mut rng, len, false),
            values(&mut rng, len, false),
            values(&mut rng, len, false),
        );
        let mean: Vec<f64> = (0..d.c).map(|c| (c as f64 + 0.3).sin()).collect();
        for relu in [true, false] {
            let got = GradientSums {
                x: &x,
                res: &res,
                grad: &grad,
                d,
                relu,
                mean: &mean,
            }
            .of_all();
            for c in 0..d.c {
                let (mut sum_g, mut sum_gx) = (0f64, 0f64);
                for n in 0..d.n {
                    for i in 0..d.s {
                        let at = (n * d.c + c) * d.s + i;
                        let g = plain_masked(grad[at], res[at], relu) as f64;
                        sum_g += g;
                        sum_gx += g * (x[at] as f64 - mean[c]);
                    }
                }
                let bits = |(a, b): (f64, f64)| (a.to_bits(), b.to_bits());
                assert_eq!(
                    bits(got[c]),
                    bits((sum_g, sum_gx)),
                    "channel {c}, relu {relu}"
                );
            }
        }
    }

    #[test]
    fn forward_and_backward_values_are_the_plain_formulas_bit_for_bit() {
        let d = Dims { n: 2, c: 5, s: 9 };
        let mut rng = Rng::new(2, &[]);
        let len = d.n * d.c * d.s;
        let (x, res, grad, shortcut) = (
            values(&mut rng, len, true),
            values(&mut rng, len, true),
            values(&mut rng, len, true),
            values(&mut rng, len, true),
        );
        let affine: Vec<f32> = (0..2 * d.c).map(|_| rng.normal() as f32).collect();
        let stats = ChannelStats {
            mean: (0..d.c).map(|c| c as f64 * 0.1).collect(),
            var: (0..d.c).map(|c| 1.0 + c as f64).collect(),
        };
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for relu in [true, false] {
            for sc in [None, Some(shortcut.as_slice())] {
                let y = forward(&x, &affine, sc, d, relu, &stats);
                let want: Vec<f32> = (0..len)
                    .map(|at| {
                        let c = at / d.s % d.c;
                        let scale = (affine[c] as f64 * stats.inv_std(c)) as f32;
                        let v = (x[at] - stats.mean[c] as f32) * scale + affine[d.c + c];
                        let v = sc.map_or(v, |sc| v + sc[at]);
                        plain_masked(v, v, relu)
                    })
                    .collect();
                assert_eq!(bits(&y), bits(&want), "forward, relu {relu}");
            }
            let (dx, _, ds) = backward(&x, &affine, &res, &grad, d, relu, &stats, true);
            let sums = GradientSums {
                x: &x,
                res: &res,
                grad: &grad,
                d,
                relu,
                mean: &stats.mean,
            }
            .of_all();
            let m = d.m() as f64;
            let want_dx: Vec<f32> = (0..len)
                .map(|at| {
                    let c = at / d.s % d.c;
                    let inv_std = stats.inv_std(c);
                    let a = affine[c] as f64 * inv_std;
                    let b = -a * inv_std * inv_std * sums[c].1 / m;
                    let g = plain_masked(grad[at], res[at], relu);
                    (a as f32) * (g - (sums[c].0 / m) as f32)
                        + (b as f32) * (x[at] - stats.mean[c] as f32)
                })
                .collect();
            let want_ds: Vec<f32> = (0..len)
                .map(|at| plain_masked(grad[at], res[at], relu))
                .collect();
            assert_eq!(bits(&dx), bits(&want_dx), "dx, relu {relu}");
            assert_eq!(
                bits(&ds.unwrap()),
                bits(&want_ds),
                "d shortcut, relu {relu}"
            );
        }
    }
}
