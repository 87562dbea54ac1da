//! Max pooling (k×k window, stride, −∞ padding) that saves the position of each window's maximum for its
//! backward pass, and global average pooling N×C×H×W → N×C, as candle custom ops with CPU kernels.

use super::gemm::Elem;
use super::{cpu_slice, float_dispatch, input_index, min_parts, read};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor, WithDType, bail};
use rayon::prelude::*;
use std::sync::OnceLock;

/// The op: `x.apply_op1(MaxPool2d::new(3, 2, 1)?)`.
pub struct MaxPool2d {
    k: usize,
    stride: usize,
    pad: usize,
    /// Per output, the window offset ki·k + kj of its maximum (set by the forward pass).
    argmax: OnceLock<Vec<u8>>,
}

impl MaxPool2d {
    /// A k×k pool; like torch, padding may be at most half the window, so every window holds an input value.
    pub fn new(k: usize, stride: usize, pad: usize) -> Result<Self> {
        if k == 0 || k * k > 256 || stride == 0 || pad > k / 2 {
            bail!("max pool: window {k}, stride {stride}, padding {pad} not supported");
        }
        Ok(Self {
            k,
            stride,
            pad,
            argmax: OnceLock::new(),
        })
    }

    /// (N·C, H, W, Ho, Wo) of an input shape.
    fn dims(&self, dims: &[usize]) -> Result<(usize, usize, usize, usize, usize)> {
        let &[n, c, h, w] = dims else {
            bail!("max pool: input {dims:?} needs N×C×H×W");
        };
        let out = |len: usize| {
            (len + 2 * self.pad)
                .checked_sub(self.k)
                .map(|d| d / self.stride + 1)
        };
        match (out(h), out(w)) {
            (Some(ho), Some(wo)) => Ok((n * c, h, w, ho, wo)),
            _ => bail!(
                "max pool: window {} larger than the padded input {h}×{w}",
                self.k
            ),
        }
    }

    fn fwd<T: Elem>(&self, x: &[T], dims: &[usize]) -> Result<(Vec<T>, Shape)> {
        let (planes, h, w, ho, wo) = self.dims(dims)?;
        let mut y = vec![T::ZERO; planes * ho * wo];
        let mut argmax = vec![0u8; y.len()];
        y.par_chunks_mut(ho * wo)
            .zip(argmax.par_chunks_mut(ho * wo))
            .zip(x.par_chunks(h * w))
            .with_min_len(min_parts(x.len(), planes))
            .for_each(|((y, arg), x)| {
                for oi in 0..ho {
                    for oj in 0..wo {
                        let mut best: Option<(T, u8)> = None;
                        for ki in 0..self.k {
                            let Some(ii) = input_index(oi, ki, self.stride, self.pad, h) else {
                                continue;
                            };
                            for kj in 0..self.k {
                                let Some(jj) = input_index(oj, kj, self.stride, self.pad, w) else {
                                    continue;
                                };
                                let v = x[ii * w + jj];
                                // As torch: a larger value or a NaN takes the place.
                                if best.is_none_or(|(b, _)| v > b || v.is_nan()) {
                                    best = Some((v, (ki * self.k + kj) as u8));
                                }
                            }
                        }
                        let (v, at) = best.unwrap_or((T::NEG_INFINITY, 0));
                        y[oi * wo + oj] = v;
                        arg[oi * wo + oj] = at;
                    }
                }
            });
        self.argmax
            .set(argmax)
            .map_err(|_| candle_core::Error::Msg("max pool op reused".into()))?;
        let &[n, c, ..] = dims else {
            unreachable!("checked by dims")
        };
        Ok((y, Shape::from((n, c, ho, wo))))
    }

    fn bwd_typed<T: Elem>(&self, shape: &[usize], grad: &[T], argmax: &[u8]) -> Result<Vec<T>> {
        let (planes, h, w, ho, wo) = self.dims(shape)?;
        let mut dx = vec![T::ZERO; planes * h * w];
        dx.par_chunks_mut(h * w)
            .zip(grad.par_chunks(ho * wo))
            .zip(argmax.par_chunks(ho * wo))
            .with_min_len(min_parts(planes * h * w, planes))
            .for_each(|((dx, grad), arg)| {
                for oi in 0..ho {
                    for oj in 0..wo {
                        let at = arg[oi * wo + oj] as usize;
                        let ii = (oi * self.stride + at / self.k).checked_sub(self.pad);
                        let jj = (oj * self.stride + at % self.k).checked_sub(self.pad);
                        if let (Some(ii), Some(jj)) = (ii, jj) {
                            dx[ii * w + jj] += grad[oi * wo + oj];
                        }
                    }
                }
            });
        Ok(dx)
    }
}

impl CustomOp1 for MaxPool2d {
    fn name(&self) -> &'static str {
        "mgat-max-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        float_dispatch!(storage.dtype(), "max pool", |T| {
            let (y, shape) = self.fwd(cpu_slice::<T>(storage, layout)?, layout.dims())?;
            Ok((T::to_cpu_storage_owned(y), shape))
        })
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let argmax = self
            .argmax
            .get()
            .ok_or_else(|| candle_core::Error::Msg("max pool: backward before forward".into()))?;
        let grad = grad.contiguous()?;
        let dx = float_dispatch!(grad.dtype(), "max pool backward", |T| {
            let dx = read::<T, _>(&grad, |g| self.bwd_typed(x.dims(), g, argmax))?;
            Tensor::from_vec(dx, x.shape(), &Device::Cpu)?
        });
        Ok(Some(dx))
    }
}

/// The op: `x.apply_op1(GlobalAvgPool)`, N×C×H×W → N×C.
pub struct GlobalAvgPool;

impl GlobalAvgPool {
    fn fwd<T: Elem>(x: &[T], dims: &[usize]) -> Result<(Vec<T>, Shape)> {
        let &[n, c, h, w] = dims else {
            bail!("global average pool: input {dims:?} needs N×C×H×W");
        };
        let s = (h * w).max(1);
        let y = x
            .par_chunks(s)
            .with_min_len(min_parts(x.len(), n * c))
            .map(|plane| T::from_f64(plane.iter().map(|v| v.to_f64()).sum::<f64>() / s as f64));
        Ok((y.collect(), Shape::from((n, c))))
    }

    fn bwd_typed<T: Elem>(grad: &[T], s: usize) -> Vec<T> {
        let mut dx = vec![T::ZERO; grad.len() * s];
        dx.par_chunks_mut(s)
            .zip(grad)
            .with_min_len(min_parts(grad.len() * s, grad.len()))
            .for_each(|(dx, &g)| dx.fill(T::from_f64(g.to_f64() / s as f64)));
        dx
    }
}

impl CustomOp1 for GlobalAvgPool {
    fn name(&self) -> &'static str {
        "mgat-global-avg-pool"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        float_dispatch!(storage.dtype(), "global average pool", |T| {
            let (y, shape) = Self::fwd(cpu_slice::<T>(storage, layout)?, layout.dims())?;
            Ok((T::to_cpu_storage_owned(y), shape))
        })
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let s: usize = x.dims()[2..].iter().product();
        let grad = grad.contiguous()?;
        let dx = float_dispatch!(grad.dtype(), "global average pool backward", |T| {
            Tensor::from_vec(
                read::<T, _>(&grad, |g| Ok(Self::bwd_typed(g, s)))?,
                x.shape(),
                &Device::Cpu,
            )?
        });
        Ok(Some(dx))
    }
}
