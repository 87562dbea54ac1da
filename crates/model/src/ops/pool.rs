//! Max pooling (k×k window, stride, −∞ padding) that saves the position of each window's maximum for its
//! backward pass, and global average pooling N×C×H×W → N×C, as candle custom ops with CPU kernels.

use super::gemm::Elem;
use super::{cpu_slice, float_dispatch, min_parts, read};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor, WithDType, bail};
use rayon::prelude::*;
use std::ops::Range;
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
                    let rows = self.taps(oi, h);
                    for oj in 0..wo {
                        let cols = self.taps(oj, w);
                        let (v, at) = self.window_max(x, w, (oi, oj), (&rows, &cols));
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

    /// The window offsets along one axis whose input position, for output position `o`, lies inside an input of
    /// `len`.
    fn taps(&self, o: usize, len: usize) -> Range<usize> {
        let start = o * self.stride;
        let lo = self.pad.saturating_sub(start).min(self.k);
        let hi = (len + self.pad).saturating_sub(start).min(self.k);
        lo..hi.max(lo)
    }

    /// The maximum of one window of the plane `x` (rows `w` long) at output (oi, oj), over the taps `rows` ×
    /// `cols` that lie inside the input, scanned row by row, and its offset ki·k + kj: as torch, the first maximum,
    /// unless a later value is a NaN, which takes the place. (−∞, 0) for a window without taps.
    #[inline]
    fn window_max<T: Elem>(
        &self,
        x: &[T],
        w: usize,
        (oi, oj): (usize, usize),
        (rows, cols): (&Range<usize>, &Range<usize>),
    ) -> (T, u8) {
        if rows.is_empty() || cols.is_empty() {
            return (T::NEG_INFINITY, 0);
        }
        let (k, stride, pad) = (self.k, self.stride, self.pad);
        // Inside the input, so no subtraction underflows.
        let at = |ki: usize, kj: usize| (oi * stride + ki - pad) * w + oj * stride + kj - pad;
        let (mut best, mut offset) = (x[at(rows.start, cols.start)], rows.start * k + cols.start);
        for ki in rows.clone() {
            for kj in cols.clone() {
                let v = x[at(ki, kj)];
                if v > best || v.is_nan() {
                    (best, offset) = (v, ki * k + kj);
                }
            }
        }
        (best, offset as u8)
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

#[cfg(test)]
mod tests {
    use super::*;
    use mgat_util::rng::Rng;

    #[test]
    fn window_max_is_the_plain_scan_over_every_tap_with_its_ties_and_nans() {
        let mut rng = Rng::new(3, &[]);
        for (k, stride, pad, h, w) in [
            (3, 2, 1, 9, 6),
            (3, 1, 1, 4, 3),
            (2, 2, 0, 5, 7),
            (5, 2, 2, 6, 5),
        ] {
            let pool = MaxPool2d::new(k, stride, pad).unwrap();
            // Few distinct values, so windows hold ties, and a NaN now and then.
            let x: Vec<f32> = (0..h * w)
                .map(|_| match rng.below(8) {
                    0 => f32::NAN,
                    v => v as f32 % 3.0,
                })
                .collect();
            let (_, _, _, ho, wo) = pool.dims(&[1, 1, h, w]).unwrap();
            for oi in 0..ho {
                for oj in 0..wo {
                    // Every tap checked against the input, as the op did before the taps were computed per axis.
                    let mut best: Option<(f32, u8)> = None;
                    for ki in 0..k {
                        for kj in 0..k {
                            let (ii, jj) = (oi * stride + ki, oj * stride + kj);
                            if ii < pad || jj < pad || ii - pad >= h || jj - pad >= w {
                                continue;
                            }
                            let v = x[(ii - pad) * w + jj - pad];
                            if best.is_none_or(|(b, _)| v > b || v.is_nan()) {
                                best = Some((v, (ki * k + kj) as u8));
                            }
                        }
                    }
                    let (rows, cols) = (pool.taps(oi, h), pool.taps(oj, w));
                    let got = pool.window_max(&x, w, (oi, oj), (&rows, &cols));
                    let want = best.unwrap();
                    assert_eq!(
                        (got.0.to_bits(), got.1),
                        (want.0.to_bits(), want.1),
                        "k {k} at ({oi}, {oj})"
                    );
                }
            }
        }
    }
}
