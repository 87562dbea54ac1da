//! Every op against candle's composition of the same maths (and the convolution also against an im2col built from
//! candle's indexing ops, which has a gradient for every shape): forward values and every gradient, on random
//! shapes with odd sizes, in f64 (1e-6 relative) and f32 (1e-4 relative). Relative error is the largest absolute
//! difference over the largest absolute reference value.

use super::*;
use candle_core::{DType, Device, Var};
use mgat_util::rng::Rng;

const CPU: Device = Device::Cpu;

fn random(rng: &mut Rng, shape: &[usize], dtype: DType) -> Var {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    Var::from_tensor(
        &Tensor::from_vec(v, shape, &CPU)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
    )
    .unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn relative_error(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.dims(), want.dims());
    let (g, w) = (values(got), values(want));
    let scale = w.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    g.iter()
        .zip(&w)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

fn tolerance(dtype: DType) -> f64 {
    if dtype == DType::F64 { 1e-6 } else { 1e-4 }
}

/// Σ out ⊙ r for a fixed random r: a loss whose gradient with respect to `out` is r.
fn projection(out: &Tensor, seed: u64) -> Tensor {
    let r = random(&mut Rng::new(seed, &[7]), out.dims(), out.dtype());
    out.mul(r.as_tensor()).unwrap().sum_all().unwrap()
}

/// Compares `ours` and `reference` (functions of `inputs`): outputs, and the gradient of every input.
fn check(what: &str, inputs: &[&Var], ours: impl Fn() -> Tensor, reference: impl Fn() -> Tensor) {
    let (a, b) = (ours(), reference());
    let dtype = a.dtype();
    let err = relative_error(&a, &b);
    assert!(
        err < tolerance(dtype),
        "{what} forward: relative error {err:e}"
    );
    let (ga, gb) = (
        projection(&a, 1).backward().unwrap(),
        projection(&b, 1).backward().unwrap(),
    );
    for (i, v) in inputs.iter().enumerate() {
        let (x, y) = (
            ga.get(v.as_tensor()).unwrap(),
            gb.get(v.as_tensor()).unwrap(),
        );
        let err = relative_error(x, y);
        assert!(
            err < tolerance(dtype),
            "{what} gradient of input {i}: relative error {err:e}"
        );
    }
}

/// Convolution as an explicit im2col from candle's indexing ops and a matmul.
fn im2col_reference(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Tensor {
    let (n, c, h, wi) = x.dims4().unwrap();
    let (co, _, kh, kw) = w.dims4().unwrap();
    let xp = x
        .pad_with_zeros(2, pad, pad)
        .unwrap()
        .pad_with_zeros(3, pad, pad)
        .unwrap();
    let (ho, wo) = (
        (h + 2 * pad - kh) / stride + 1,
        (wi + 2 * pad - kw) / stride + 1,
    );
    let index = |len: usize, k: usize| {
        Tensor::new(
            (0..len)
                .map(|o| (o * stride + k) as u32)
                .collect::<Vec<_>>(),
            &CPU,
        )
        .unwrap()
    };
    let mut taps = Vec::new();
    for ki in 0..kh {
        let rows = xp.index_select(&index(ho, ki), 2).unwrap();
        for kj in 0..kw {
            taps.push(rows.index_select(&index(wo, kj), 3).unwrap());
        }
    }
    let cols = Tensor::stack(&taps, 2)
        .unwrap()
        .reshape((n, c * kh * kw, ho * wo))
        .unwrap();
    let wm = w.reshape((co, c * kh * kw)).unwrap();
    wm.broadcast_matmul(&cols)
        .unwrap()
        .reshape((n, co, ho, wo))
        .unwrap()
}

/// (N, C, H, W, Co, k, stride, pad): the named odd sizes, 1×1, stride 2 and padding 0/1/3, then random ones.
fn conv_shapes() -> Vec<[usize; 8]> {
    let mut shapes = vec![
        [2, 3, 48, 24, 4, 3, 1, 1],
        [2, 3, 48, 24, 4, 3, 2, 1],
        [1, 3, 7, 5, 2, 3, 1, 1],
        [3, 2, 7, 5, 3, 3, 2, 0],
        [2, 3, 13, 9, 2, 7, 2, 3],
        [2, 4, 6, 5, 3, 1, 1, 0],
        [2, 4, 7, 5, 3, 1, 2, 0],
        [1, 2, 1, 1, 3, 1, 1, 0],
        [1, 2, 1, 1, 3, 3, 1, 1],
        [1, 2, 3, 3, 2, 1, 1, 3],
        [40, 3, 4, 3, 2, 3, 1, 1], // several samples per group, the last group short
        [1, 2, 8, 1, 2, 7, 1, 3],  // kernel columns wholly in the padding
    ];
    let mut rng = Rng::new(5, &[]);
    for _ in 0..12 {
        let k = [1, 3, 7][rng.below(3) as usize];
        let pad = [0, 1, 3][rng.below(3) as usize];
        let (h, w) = (k + rng.below(12) as usize, k + rng.below(12) as usize);
        shapes.push([
            1 + rng.below(3) as usize,
            1 + rng.below(5) as usize,
            h,
            w,
            1 + rng.below(6) as usize,
            k,
            1 + rng.below(2) as usize,
            pad,
        ]);
    }
    shapes
}

#[test]
fn convolution_matches_the_im2col_composition_forward_and_backward() {
    for dtype in [DType::F64, DType::F32] {
        for (i, &[n, c, h, w, co, k, stride, pad]) in conv_shapes().iter().enumerate() {
            let mut rng = Rng::new(i as u64, &[1]);
            let x = random(&mut rng, &[n, c, h, w], dtype);
            let wt = random(&mut rng, &[co, c, k, k], dtype);
            check(
                &format!("{dtype:?} conv {n}×{c}×{h}×{w} * {co}×{c}×{k}×{k} /{stride} pad {pad}"),
                &[&x, &wt],
                || conv2d(&x, &wt, stride, pad).unwrap(),
                || im2col_reference(&x, &wt, stride, pad),
            );
        }
    }
}

#[test]
fn convolution_matches_candles_own_wherever_candles_backward_runs() {
    let mut compared = 0;
    for (i, &[n, c, h, w, co, k, stride, pad]) in conv_shapes().iter().enumerate() {
        let mut rng = Rng::new(i as u64, &[2]);
        let x = random(&mut rng, &[n, c, h, w], DType::F64);
        let wt = random(&mut rng, &[co, c, k, k], DType::F64);
        let theirs = x.conv2d(wt.as_tensor(), pad, stride, 1, 1).unwrap();
        let ours = conv2d(&x, &wt, stride, pad).unwrap();
        assert!(relative_error(&ours, &theirs) < 1e-9, "shape {i}");
        if let Ok(grads) = projection(&theirs, 1).backward() {
            let mine = projection(&ours, 1).backward().unwrap();
            for v in [&x, &wt] {
                if let (Some(a), Some(b)) = (mine.get(v.as_tensor()), grads.get(v.as_tensor()))
                    && a.dims() == b.dims()
                {
                    assert!(relative_error(a, b) < 1e-9, "shape {i}");
                    compared += 1;
                }
            }
        }
    }
    assert!(compared >= 10, "only {compared} gradients compared");
}

#[test]
fn convolution_is_bit_identical_whatever_the_thread_count() {
    let mut rng = Rng::new(3, &[]);
    let x = random(&mut rng, &[20, 6, 11, 9], DType::F32);
    let w = random(&mut rng, &[5, 6, 3, 3], DType::F32);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let y = conv2d(&x, &w, 2, 1).unwrap();
            let g = projection(&y, 2).backward().unwrap();
            [
                values(&y),
                values(g.get(x.as_tensor()).unwrap()),
                values(g.get(w.as_tensor()).unwrap()),
            ]
        })
    };
    let one = run(1);
    for threads in [2, 3, 8] {
        assert!(run(threads) == one, "{threads} threads differ from one");
    }
}

#[test]
fn batch_norm_matches_the_composition_with_every_epilogue() {
    for dtype in [DType::F64, DType::F32] {
        for (i, shape) in [
            vec![4, 3, 5, 7],
            vec![2, 5, 48, 24],
            vec![6, 4],
            vec![1, 2, 1, 1],
        ]
        .into_iter()
        .enumerate()
        {
            let c = shape[1];
            for (relu, residual) in [(false, false), (true, false), (true, true), (false, true)] {
                let mut rng = Rng::new(i as u64, &[3]);
                let x = random(&mut rng, &shape, dtype);
                // Offset and scale per channel, so the statistics matter.
                let x = Var::from_tensor(&(x.as_tensor() * 3.0).unwrap().affine(1.0, 2.0).unwrap())
                    .unwrap();
                let gamma = random(&mut rng, &[c], dtype);
                let beta = random(&mut rng, &[c], dtype);
                let shortcut = random(&mut rng, &shape, dtype);
                let then = Epilogue {
                    shortcut: residual.then_some(shortcut.as_tensor()),
                    relu,
                };
                let what =
                    format!("{dtype:?} batch norm {shape:?} relu {relu} residual {residual}");
                check(
                    &what,
                    &[&x, &gamma, &beta, &shortcut][..if residual { 4 } else { 3 }],
                    || batch_norm_train(&x, &gamma, &beta, then).unwrap().0,
                    || {
                        composed::batch_norm_train(&x, &gamma, &beta, then)
                            .unwrap()
                            .0
                    },
                );
                let (_, m1, v1) = batch_norm_train(&x, &gamma, &beta, then).unwrap();
                let (_, m2, v2) = composed::batch_norm_train(&x, &gamma, &beta, then).unwrap();
                assert!(relative_error(&m1, &m2) < tolerance(dtype), "{what}: mean");
                assert!(
                    relative_error(&v1, &v2) < tolerance(dtype),
                    "{what}: variance"
                );
                let (mean, var) = (random(&mut rng, &[c], dtype), random(&mut rng, &[c], dtype));
                let var = var.as_tensor().abs().unwrap();
                let eval = batch_norm_eval(&x, &gamma, &beta, &mean, &var, then).unwrap();
                let want = composed::batch_norm(&x, &gamma, &beta, &mean, &var, then).unwrap();
                assert!(
                    relative_error(&eval, &want) < tolerance(dtype),
                    "{what}: evaluation mode"
                );
            }
        }
    }
}

#[test]
fn max_pool_matches_the_composition_and_saves_the_first_maximum() {
    for dtype in [DType::F64, DType::F32] {
        for (i, &[n, c, h, w, k, stride, pad]) in [
            [2, 3, 48, 24, 3, 2, 1],
            [1, 2, 7, 5, 3, 2, 1],
            [2, 1, 6, 6, 2, 2, 0],
            [1, 2, 5, 4, 3, 1, 1],
            [1, 1, 1, 1, 3, 2, 1],
        ]
        .iter()
        .enumerate()
        {
            let x = random(&mut Rng::new(i as u64, &[4]), &[n, c, h, w], dtype);
            check(
                &format!("{dtype:?} max pool {n}×{c}×{h}×{w} k{k}/{stride} pad {pad}"),
                &[&x],
                || max_pool2d(&x, k, stride, pad).unwrap(),
                || composed::max_pool2d(&x, k, stride, pad).unwrap(),
            );
        }
    }
    // Ties: the first maximum in window order takes the whole gradient, as in torch.
    let x = Var::new(&[[[[1f64, 1.0], [1.0, 0.0]]]], &CPU).unwrap();
    let g = max_pool2d(&x, 2, 2, 0)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(values(g.get(x.as_tensor()).unwrap()), [1.0, 0.0, 0.0, 0.0]);
    assert!(
        max_pool2d(&x, 3, 2, 2).is_err(),
        "padding over half the window"
    );
}

#[test]
fn global_average_pool_matches_the_mean() {
    for dtype in [DType::F64, DType::F32] {
        let x = random(&mut Rng::new(9, &[]), &[3, 4, 7, 5], dtype);
        check(
            &format!("{dtype:?} global average pool"),
            &[&x],
            || global_avg_pool(&x).unwrap(),
            || x.mean(D::Minus1).unwrap().mean(D::Minus1).unwrap(),
        );
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let x = Tensor::zeros((1, 3, 4, 4), DType::F32, &CPU).unwrap();
    let w = Tensor::zeros((2, 4, 3, 3), DType::F32, &CPU).unwrap();
    assert!(conv2d(&x, &w, 1, 1).is_err(), "channel mismatch");
    let big = Tensor::zeros((2, 3, 9, 9), DType::F32, &CPU).unwrap();
    assert!(
        conv2d(&x, &big, 1, 0).is_err(),
        "kernel larger than the input"
    );
    assert!(
        conv2d(&x, &w.narrow(1, 0, 3).unwrap(), 0, 1).is_err(),
        "stride 0"
    );
    let g = Tensor::ones(4, DType::F32, &CPU).unwrap();
    assert!(
        batch_norm_train(&x, &g, &g, Epilogue::default()).is_err(),
        "4 affine channels for 3"
    );
}
