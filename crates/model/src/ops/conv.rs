//! 2-D convolution without bias (one stride and one zero padding for both axes, any kernel size) as a candle
//! custom op with CPU kernels of our own:
//! - forward: im2col + gemm per group of samples, where a 1×1, stride-1, unpadded convolution reads the input in
//!   place (no im2col);
//! - backward: the input gradient as Wᵀ·dY + col2im per group of samples, the weight gradient as dY·colsᵀ summed
//!   over groups in a fixed order, each task owning a band of the weight's rows and re-building only its band of
//!   the im2col matrix, so no im2col buffer outlives its group.
//!
//! Work runs on rayon's pool in tasks whose boundaries depend on the shapes only, and every matrix product runs on
//! one thread, so results are bit-identical whatever the thread count.

use super::gemm::{Elem, Mat, matmul};
use super::{cpu_slice, float_dispatch, min_parts, read};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Device, Layout, Result, Shape, Tensor, WithDType, bail};
use rayon::prelude::*;
use std::borrow::Cow;
use std::ops::Range;

/// A group holds enough samples for this many output columns per matrix product…
const MIN_COLUMNS: usize = 256;
/// …while the batch still splits into at least this many groups.
const MIN_GROUPS: usize = 8;
/// The weight gradient is split into at most this many row bands…
const WEIGHT_TASKS: usize = 16;
/// …of at least this many rows.
const MIN_BAND_ROWS: usize = 8;

/// Shapes of one convolution: input N×C×H×W, weight Co×C×KH×KW, output N×Co×Ho×Wo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    pub fn new(x: &[usize], w: &[usize], stride: usize, pad: usize) -> Result<Self> {
        let (&[n, c, h, wi], &[co, cw, kh, kw]) = (x, w) else {
            bail!("conv2d: input {x:?} and weight {w:?} must both have four dimensions");
        };
        if c != cw {
            bail!("conv2d: input {x:?} has {c} channels, the weight {w:?} expects {cw}");
        }
        if stride == 0 {
            bail!("conv2d: stride must be at least 1");
        }
        let out = |len: usize, k: usize| (len + 2 * pad).checked_sub(k).map(|d| d / stride + 1);
        let (Some(ho), Some(wo)) = (out(h, kh), out(wi, kw)) else {
            bail!(
                "conv2d: kernel {kh}×{kw} is larger than the padded input {h}×{wi} (padding {pad})"
            );
        };
        Ok(Self {
            n,
            c,
            h,
            w: wi,
            co,
            kh,
            kw,
            stride,
            pad,
            ho,
            wo,
        })
    }

    pub fn output_dims(&self) -> (usize, usize, usize, usize) {
        (self.n, self.co, self.ho, self.wo)
    }

    /// Output positions per sample.
    fn p(&self) -> usize {
        self.ho * self.wo
    }

    /// Rows of the im2col matrix: C·KH·KW.
    fn kk(&self) -> usize {
        self.c * self.kh * self.kw
    }

    fn input_len(&self) -> usize {
        self.c * self.h * self.w
    }

    fn output_len(&self) -> usize {
        self.co * self.p()
    }

    /// A 1×1, stride-1, unpadded convolution: the input of one sample is its own im2col matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    /// Samples per matrix product.
    fn group(&self) -> usize {
        let wanted = MIN_COLUMNS.div_ceil(self.p().max(1));
        wanted.min(self.n.div_ceil(MIN_GROUPS)).max(1)
    }

    /// Rows of the weight gradient's transpose per task.
    fn band_rows(&self) -> usize {
        self.kk()
            .div_ceil(WEIGHT_TASKS)
            .max(MIN_BAND_ROWS)
            .next_multiple_of(8)
    }
}

/// The convolution op: `x.apply_op2(&w, Conv2d { stride, pad })`.
pub struct Conv2d {
    pub stride: usize,
    pub pad: usize,
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "mgat-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(l1.dims(), l2.dims(), self.stride, self.pad)?;
        let storage = float_dispatch!(s1.dtype(), "conv2d", |T| {
            T::to_cpu_storage_owned(forward(
                &g,
                cpu_slice::<T>(s1, l1)?,
                cpu_slice::<T>(s2, l2)?,
            ))
        });
        Ok((storage, Shape::from(g.output_dims())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Geometry::new(x.dims(), w.dims(), self.stride, self.pad)?;
        let dy = grad.contiguous()?;
        // The input gradient of a tensor nothing trains through (the images) is skipped.
        let want_dx = x.track_op();
        float_dispatch!(x.dtype(), "conv2d backward", |T| {
            let (dx, dw) = read::<T, _>(x, |xv| {
                read::<T, _>(w, |wv| {
                    read::<T, _>(&dy, |dyv| Ok(backward(&g, xv, wv, dyv, want_dx)))
                })
            })?;
            let dx = dx
                .map(|dx| Tensor::from_vec(dx, x.shape(), &Device::Cpu))
                .transpose()?;
            Ok((dx, Some(Tensor::from_vec(dw, w.shape(), &Device::Cpu)?)))
        })
    }
}

/// The output N×Co×Ho×Wo.
fn forward<T: Elem>(g: &Geometry, x: &[T], w: &[T]) -> Vec<T> {
    let mut y = vec![T::ZERO; g.n * g.output_len()];
    let plan = Im2col::new(g, 0..g.kk());
    // One task per group; each rayon job reuses its scratch across the groups it runs.
    y.par_chunks_mut(g.group() * g.output_len())
        .enumerate()
        .for_each_init(
            || (Columns::default(), Vec::new()),
            |(cols, product), (i, y)| {
                let samples = i * g.group()..i * g.group() + y.len() / g.output_len();
                let width = samples.len() * g.p();
                let count = samples.len();
                let input = plan.matrix(g, x, samples, cols);
                let weights = Mat::rows(w, g.kk());
                if count == 1 {
                    matmul(g.co, width, g.kk(), y, width, false, weights, input);
                } else {
                    product.resize(g.co * width, T::ZERO);
                    matmul(g.co, width, g.kk(), product, width, false, weights, input);
                    scatter_group(g, count, product, y);
                }
            },
        );
    y
}

/// How to build rows of the im2col matrix (row (c, ki, kj), column (s, oi, oj) holding
/// x[s, c, oi·stride + ki − pad, oj·stride + kj − pad], zero outside the input): the runs of one sample that lie
/// inside the input, computed once per call and replayed for every sample.
struct Im2col {
    rows: Range<usize>,
    runs: Vec<Run>,
    /// For stride 1: the runs of a row whose input and block positions advance alike, merged into one copy that
    /// also covers the padding between them, which `holes` then zeroes again (fewer, longer copies than `runs`).
    copies: Vec<Run>,
    /// Stretches of the block that a merged copy wrote over and that must stay zero: (row, dst, len).
    holes: Vec<Run>,
}

/// `len` values, every `stride`-th from offset `src` of a sample's input, to offset `dst` of its block in row `row`
/// (counted from the first row built).
#[derive(Clone, Copy)]
struct Run {
    row: usize,
    dst: usize,
    src: usize,
    len: usize,
}

/// A reusable im2col buffer (rows × width). Zeros fall at the same places for every group of one width, so the
/// buffer is zeroed only when its shape changes and each group writes only its runs.
struct Columns<T> {
    data: Vec<T>,
    shape: (usize, usize),
}

impl<T> Default for Columns<T> {
    fn default() -> Self {
        Self {
            data: Vec::new(),
            shape: (0, 0),
        }
    }
}

impl Im2col {
    fn new(g: &Geometry, rows: Range<usize>) -> Self {
        let mut runs = Vec::new();
        for r in rows.clone() {
            let (c, ki, kj) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
            let cols = valid_outputs(g.wo, g.w, kj, g.stride, g.pad);
            if cols.is_empty() {
                continue; // every tap of this row lies in the padding
            }
            for oi in valid_outputs(g.ho, g.h, ki, g.stride, g.pad) {
                // Inside the input, so neither subtraction underflows.
                let (ii, jj) = (
                    oi * g.stride + ki - g.pad,
                    cols.start * g.stride + kj - g.pad,
                );
                runs.push(Run {
                    row: r - rows.start,
                    dst: oi * g.wo + cols.start,
                    src: c * g.h * g.w + ii * g.w + jj,
                    len: cols.len(),
                });
            }
        }
        let (copies, holes) = if g.stride == 1 {
            merged(&runs)
        } else {
            (Vec::new(), Vec::new())
        };
        Self {
            rows,
            runs,
            copies,
            holes,
        }
    }

    /// The rows of the im2col matrix of `samples` (rows × samples·P): the input itself for one sample of a
    /// pointwise convolution, else built in `cols`.
    fn matrix<'a, T: Elem>(
        &self,
        g: &Geometry,
        x: &'a [T],
        samples: Range<usize>,
        cols: &'a mut Columns<T>,
    ) -> Mat<'a, T> {
        let width = samples.len() * g.p();
        if samples.len() == 1 && g.pointwise() {
            let start = samples.start * g.input_len() + self.rows.start * width;
            return Mat::rows(&x[start..start + self.rows.len() * width], width);
        }
        let shape = (self.rows.len(), width);
        if cols.shape != shape {
            cols.data.clear();
            cols.data.resize(shape.0 * shape.1, T::ZERO);
            cols.shape = shape;
        }
        for (s, sample) in samples.enumerate() {
            let input = &x[sample * g.input_len()..][..g.input_len()];
            let block = |run: &Run| run.row * width + s * g.p() + run.dst;
            if g.stride == 1 {
                for run in &self.copies {
                    cols.data[block(run)..][..run.len]
                        .copy_from_slice(&input[run.src..run.src + run.len]);
                }
                self.zero_holes(&mut cols.data, block);
            } else {
                for run in &self.runs {
                    let src = &input[run.src..][..(run.len - 1) * g.stride + 1];
                    let out = &mut cols.data[block(run)..][..run.len];
                    match g.stride {
                        // The downsampling convolutions: inlined with the stride a constant, the copy vectorises.
                        2 => gather(src, out, 2),
                        stride => gather(src, out, stride),
                    }
                }
            }
        }
        Mat::rows(&cols.data, width)
    }

    /// Zeroes the padding that the merged stride-1 copies cover, each hole at `block(hole)` in `data`.
    fn zero_holes<T: Elem>(&self, data: &mut [T], block: impl Fn(&Run) -> usize) {
        for hole in &self.holes {
            // Mostly one or two values (a padding column at each end of a row): stores, not a memset.
            let at = block(hole);
            match hole.len {
                1 => data[at] = T::ZERO,
                2 => data[at..at + 2].copy_from_slice(&[T::ZERO; 2]),
                len => data[at..at + len].fill(T::ZERO),
            }
        }
    }

    /// dx (samples × C×H×W) += col2im(`col`): the adjoint of [`Im2col::matrix`], for a plan over all rows. For
    /// stride 1 it first zeroes `col` where a merged copy covers padding, then adds each merged copy in one pass:
    /// the padding adds +0.0, which changes no bit of a sum that starts at +0.0.
    fn add_back<T: Elem>(&self, g: &Geometry, col: &mut [T], samples: usize, dx: &mut [T]) {
        let width = samples * g.p();
        for (s, dx) in dx.chunks_mut(g.input_len()).take(samples).enumerate() {
            let block = |run: &Run| run.row * width + s * g.p() + run.dst;
            if g.stride == 1 {
                self.zero_holes(col, block);
                for run in &self.copies {
                    let src = &col[block(run)..][..run.len];
                    dx[run.src..][..run.len]
                        .iter_mut()
                        .zip(src)
                        .for_each(|(d, &v)| *d += v);
                }
            } else {
                for run in &self.runs {
                    let src = &col[block(run)..][..run.len];
                    let dx = &mut dx[run.src..][..(run.len - 1) * g.stride + 1];
                    match g.stride {
                        2 => scatter_add(src, dx, 2),
                        stride => scatter_add(src, dx, stride),
                    }
                }
            }
        }
    }
}

/// out[i] = src[i·stride], for `src` of (out.len() − 1)·stride + 1 values: all but the last from whole chunks, the last
/// alone. Always inlined, so that a call with a constant stride compiles to a vectorised copy.
#[inline(always)]
fn gather<T: Elem>(src: &[T], out: &mut [T], stride: usize) {
    let (body, last) = out.split_at_mut(out.len() - 1);
    body.iter_mut()
        .zip(src.chunks_exact(stride))
        .for_each(|(o, chunk)| *o = chunk[0]);
    last[0] = src[src.len() - 1];
}

/// dx[i·stride] += src[i], the adjoint of [`gather`], for `dx` of (src.len() − 1)·stride + 1 values; inlined like it.
#[inline(always)]
fn scatter_add<T: Elem>(src: &[T], dx: &mut [T], stride: usize) {
    let (body, last) = src.split_at(src.len() - 1);
    dx.chunks_exact_mut(stride)
        .zip(body)
        .for_each(|(d, &v)| d[0] += v);
    dx[dx.len() - 1] += last[0];
}

/// Stride-1 runs (in the order [`Im2col::new`] makes them) merged where consecutive runs of a row have the same gap
/// in the block as in the input, and the gaps such a merged copy writes over.
fn merged(runs: &[Run]) -> (Vec<Run>, Vec<Run>) {
    let (mut copies, mut holes): (Vec<Run>, Vec<Run>) = (Vec::new(), Vec::new());
    for run in runs {
        if let Some(last) = copies.last_mut() {
            let (dst_end, src_end) = (last.dst + last.len, last.src + last.len);
            let gap = run.dst.checked_sub(dst_end);
            if let Some(gap) =
                gap.filter(|_| last.row == run.row && run.src.checked_sub(src_end) == gap)
            {
                if gap > 0 {
                    holes.push(Run {
                        row: run.row,
                        dst: dst_end,
                        src: 0,
                        len: gap,
                    });
                }
                last.len += gap + run.len;
                continue;
            }
        }
        copies.push(*run);
    }
    (copies, holes)
}

/// The output positions whose input position o·stride + k − pad lies inside an input of `len`.
fn valid_outputs(out_len: usize, len: usize, k: usize, stride: usize, pad: usize) -> Range<usize> {
    let lo = pad.saturating_sub(k).div_ceil(stride).min(out_len);
    let hi = match (len + pad).checked_sub(k + 1) {
        Some(last) => (last / stride + 1).min(out_len),
        None => 0,
    };
    lo..hi.max(lo)
}

/// Group layout (Co × samples·P) → NCHW block (samples × Co × P).
fn scatter_group<T: Elem>(g: &Geometry, samples: usize, grouped: &[T], y: &mut [T]) {
    let (p, width) = (g.p(), samples * g.p());
    for (s, y) in y.chunks_mut(g.output_len()).take(samples).enumerate() {
        for (co, y) in y.chunks_mut(p).enumerate() {
            y.copy_from_slice(&grouped[co * width + s * p..][..p]);
        }
    }
}

/// NCHW gradient → each group's block in group layout (Co × samples·P), at the same offsets; borrowed when groups
/// are single samples (the layouts then agree).
fn regroup<'a, T: Elem>(g: &Geometry, dy: &'a [T]) -> Cow<'a, [T]> {
    let group = g.group();
    if group == 1 {
        return Cow::Borrowed(dy);
    }
    let mut out = vec![T::ZERO; dy.len()];
    out.par_chunks_mut(group * g.output_len())
        .zip(dy.par_chunks(group * g.output_len()))
        .with_min_len(min_parts(dy.len(), g.n.div_ceil(group)))
        .for_each(|(out, dy)| {
            let (p, width) = (g.p(), dy.len() / g.co);
            for (s, dy) in dy.chunks(g.output_len()).enumerate() {
                for (co, dy) in dy.chunks(p).enumerate() {
                    out[co * width + s * p..][..p].copy_from_slice(dy);
                }
            }
        });
    Cow::Owned(out)
}

/// The input gradient (when `want_dx`) and the weight gradient.
fn backward<T: Elem>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    dy: &[T],
    want_dx: bool,
) -> (Option<Vec<T>>, Vec<T>) {
    let dy = regroup(g, dy);
    // One fork for both, so the pool's workers stay busy from one to the other.
    rayon::join(
        || want_dx.then(|| input_gradient(g, w, &dy)),
        || weight_gradient(g, x, &dy),
    )
}

/// dX = col2im(Wᵀ·dY), group by group; `dy` in group layout.
fn input_gradient<T: Elem>(g: &Geometry, w: &[T], dy: &[T]) -> Vec<T> {
    let mut dx = vec![T::ZERO; g.n * g.input_len()];
    let weights_t = Mat::transposed(w, g.kk());
    let plan = Im2col::new(g, 0..g.kk());
    dx.par_chunks_mut(g.group() * g.input_len())
        .enumerate()
        .for_each_init(Vec::new, |cols, (i, dx)| {
            let samples = dx.len() / g.input_len();
            let first = i * g.group();
            let width = samples * g.p();
            let dy = Mat::rows(
                &dy[first * g.output_len()..][..samples * g.output_len()],
                width,
            );
            if samples == 1 && g.pointwise() {
                matmul(g.kk(), width, g.co, dx, width, false, weights_t, dy);
            } else {
                cols.resize(g.kk() * width, T::ZERO);
                matmul(g.kk(), width, g.co, cols, width, false, weights_t, dy);
                plan.add_back(g, cols, samples, dx);
            }
        });
    dx
}

/// dW = Σ over groups of dY·colsᵀ, computed as its transpose (KK × Co) in bands of rows, each task summing its
/// band over the groups in order; `dy` in group layout.
fn weight_gradient<T: Elem>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    let mut dw_t = vec![T::ZERO; g.kk() * g.co];
    let band = g.band_rows();
    dw_t.par_chunks_mut(band * g.co)
        .enumerate()
        .for_each(|(task, dw_band)| {
            let plan = Im2col::new(g, task * band..task * band + dw_band.len() / g.co);
            let mut cols = Columns::default();
            for (i, first) in (0..g.n).step_by(g.group()).enumerate() {
                let samples = first..(first + g.group()).min(g.n);
                let width = samples.len() * g.p();
                let dy_t = Mat::transposed(
                    &dy[first * g.output_len()..][..samples.len() * g.output_len()],
                    width,
                );
                let rows = plan.rows.len();
                let input = plan.matrix(g, x, samples, &mut cols);
                matmul(rows, g.co, width, dw_band, g.co, i > 0, input, dy_t);
            }
        });
    let mut dw = vec![T::ZERO; g.co * g.kk()];
    for (r, row) in dw_t.chunks(g.co).enumerate() {
        for (co, &v) in row.iter().enumerate() {
            dw[co * g.kk() + r] = v;
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_same_padded_stride_one_row_is_one_copy_with_its_padding_zeroed_again() {
        // 3×3, padding 1 on 16×8: each kernel row's 16 runs (one per output row) become one copy; the centre
        // column needs no hole, the side columns one padding value between consecutive output rows.
        let g = Geometry::new(&[1, 2, 16, 8], &[4, 2, 3, 3], 1, 1).unwrap();
        let plan = Im2col::new(&g, 0..g.kk());
        assert_eq!(plan.copies.len(), g.kk());
        let holes_of = |row| plan.holes.iter().filter(|h| h.row == row).count();
        assert_eq!(holes_of(1), 0, "centre column");
        assert_eq!(holes_of(4), 0, "centre tap");
        assert_eq!(
            holes_of(3),
            15,
            "left column: a hole between each two output rows"
        );
        assert!(plan.holes.iter().all(|h| h.len == 1));
        // Strided convolutions keep their runs.
        let strided = Geometry::new(&[1, 2, 16, 8], &[4, 2, 3, 3], 2, 1).unwrap();
        assert!(Im2col::new(&strided, 0..strided.kk()).copies.is_empty());
    }
}
