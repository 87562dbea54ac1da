//! ResNet-18/34/50 backbones with a width multiplier and a configurable last stride, in torchvision's parameter
//! naming (`conv1.weight`, `layer1.0.bn1.running_mean`, …), ending in global average pooling. BatchNorm uses batch
//! statistics and updates its running statistics in training mode, and uses the running statistics otherwise.

use super::ops::{self, Epilogue};
use super::params::{Init, ModelError, Params};
use crate::config::Backbone;
use candle_core::{DType, Tensor, Var};

/// A convolution without bias.
struct Conv {
    weight: Var,
    stride: usize,
    padding: usize,
}

impl Conv {
    fn new(
        p: &mut Params,
        name: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
    ) -> Result<Self, ModelError> {
        // torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
        let std = (2.0 / (c_out * k * k) as f64).sqrt();
        let weight = p.weight(
            &format!("{name}.weight"),
            &[c_out, c_in, k, k],
            Init::Normal(std),
        )?;
        Ok(Self {
            weight,
            stride,
            padding: k / 2,
        })
    }

    /// The convolution, computed in `compute` (input and weight cast to it, the output cast back) when given.
    fn forward(
        &self,
        x: &Tensor,
        train: bool,
        compute: Option<DType>,
    ) -> candle_core::Result<Tensor> {
        let w = weight(&self.weight, train);
        match compute {
            Some(dtype) if dtype != x.dtype() => {
                let y = ops::conv2d(
                    &x.to_dtype(dtype)?,
                    &w.to_dtype(dtype)?,
                    self.stride,
                    self.padding,
                )?;
                y.to_dtype(x.dtype())
            }
            _ => ops::conv2d(x, &w, self.stride, self.padding),
        }
    }
}

/// BatchNorm over channels of an N×C×H×W or N×C input (momentum 0.1, ε 1e-5, as torch).
pub struct BatchNorm {
    weight: Var,
    bias: Var,
    running_mean: Var,
    running_var: Var,
}

impl BatchNorm {
    pub fn new(p: &mut Params, name: &str, c: usize) -> Result<Self, ModelError> {
        Ok(Self {
            weight: p.weight(&format!("{name}.weight"), &[c], Init::Const(1.0))?,
            bias: p.weight(&format!("{name}.bias"), &[c], Init::Const(0.0))?,
            running_mean: p.buffer(&format!("{name}.running_mean"), &[c], Init::Const(0.0))?,
            running_var: p.buffer(&format!("{name}.running_var"), &[c], Init::Const(1.0))?,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_then(x, train, Epilogue::default())
    }

    /// BatchNorm followed by `then` (residual addition, ReLU), fused into one op on the CPU. In training the batch
    /// statistics normalise and update the running ones with momentum 0.1 (variance unbiased), as torch.
    pub fn forward_then(
        &self,
        x: &Tensor,
        train: bool,
        then: Epilogue,
    ) -> candle_core::Result<Tensor> {
        const MOMENTUM: f64 = 0.1;
        let (gamma, beta) = (weight(&self.weight, train), weight(&self.bias, train));
        if !train {
            let (mean, var) = (self.running_mean.as_tensor(), self.running_var.as_tensor());
            return ops::batch_norm_eval(x, &gamma, &beta, mean, var, then);
        }
        let (y, mean, var) = ops::batch_norm_train(x, &gamma, &beta, then)?;
        let n = (x.elem_count() / gamma.elem_count()) as f64;
        let unbiased = (var * (n / (n - 1.0).max(1.0)))?;
        let update = |stat: &Var, batch: &Tensor| {
            stat.set(&((stat.as_tensor().detach() * (1.0 - MOMENTUM))? + (batch * MOMENTUM)?)?)
        };
        update(&self.running_mean, &mean)?;
        update(&self.running_var, &unbiased)?;
        Ok(y)
    }
}

/// A weight as the forward pass uses it: tracked for gradients in training, detached otherwise, so that an
/// evaluation pass builds no autograd graph and frees each activation once the next layer has read it.
fn weight(v: &Var, train: bool) -> Tensor {
    if train {
        v.as_tensor().clone()
    } else {
        v.as_tensor().detach()
    }
}

/// A residual block: basic (two 3×3) for ResNet-18/34, bottleneck (1×1, 3×3, 1×1) for ResNet-50.
struct Block {
    convs: Vec<(Conv, BatchNorm)>,
    downsample: Option<(Conv, BatchNorm)>,
}

impl Block {
    fn forward(
        &self,
        x: &Tensor,
        train: bool,
        compute: Option<DType>,
    ) -> candle_core::Result<Tensor> {
        let shortcut = match &self.downsample {
            Some((conv, bn)) => bn.forward(&conv.forward(x, train, compute)?, train)?,
            None => x.clone(),
        };
        let mut y = x.clone();
        let last = self.convs.len() - 1;
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            let then = Epilogue {
                shortcut: (i == last).then_some(&shortcut),
                relu: true,
            };
            y = bn.forward_then(&conv.forward(&y, train, compute)?, train, then)?;
        }
        Ok(y)
    }
}

pub struct ResNet {
    stem: (Conv, BatchNorm),
    blocks: Vec<Block>,
    out_dim: usize,
    /// The dtype convolutions compute in, when not the parameters' (bf16 training).
    compute: Option<DType>,
}

impl ResNet {
    /// Registers the backbone's parameters in `p` under torchvision names.
    pub fn new(
        p: &mut Params,
        backbone: Backbone,
        width: usize,
        last_stride: usize,
    ) -> Result<Self, ModelError> {
        let (layers, bottleneck): ([usize; 4], bool) = match backbone {
            Backbone::Resnet18 => ([2, 2, 2, 2], false),
            Backbone::Resnet34 => ([3, 4, 6, 3], false),
            Backbone::Resnet50 => ([3, 4, 6, 3], true),
        };
        let expansion = if bottleneck { 4 } else { 1 };
        let stem = (
            Conv::new(p, "conv1", 3, width, 7, 2)?,
            BatchNorm::new(p, "bn1", width)?,
        );
        let mut blocks = Vec::new();
        let mut c_in = width;
        for (l, &n) in layers.iter().enumerate() {
            let planes = width << l;
            let stride = [1, 2, 2, last_stride][l];
            for b in 0..n {
                let name = format!("layer{}.{b}", l + 1);
                let s = if b == 0 { stride } else { 1 };
                let c_out = planes * expansion;
                let convs = if bottleneck {
                    vec![
                        (
                            Conv::new(p, &format!("{name}.conv1"), c_in, planes, 1, 1)?,
                            BatchNorm::new(p, &format!("{name}.bn1"), planes)?,
                        ),
                        (
                            Conv::new(p, &format!("{name}.conv2"), planes, planes, 3, s)?,
                            BatchNorm::new(p, &format!("{name}.bn2"), planes)?,
                        ),
                        (
                            Conv::new(p, &format!("{name}.conv3"), planes, c_out, 1, 1)?,
                            BatchNorm::new(p, &format!("{name}.bn3"), c_out)?,
                        ),
                    ]
                } else {
                    vec![
                        (
                            Conv::new(p, &format!("{name}.conv1"), c_in, planes, 3, s)?,
                            BatchNorm::new(p, &format!("{name}.bn1"), planes)?,
                        ),
                        (
                            Conv::new(p, &format!("{name}.conv2"), planes, planes, 3, 1)?,
                            BatchNorm::new(p, &format!("{name}.bn2"), planes)?,
                        ),
                    ]
                };
                let downsample = if s != 1 || c_in != c_out {
                    Some((
                        Conv::new(p, &format!("{name}.downsample.0"), c_in, c_out, 1, s)?,
                        BatchNorm::new(p, &format!("{name}.downsample.1"), c_out)?,
                    ))
                } else {
                    None
                };
                blocks.push(Block { convs, downsample });
                c_in = c_out;
            }
        }
        Ok(Self {
            stem,
            blocks,
            out_dim: c_in,
            compute: None,
        })
    }

    /// Convolutions compute in `dtype` from now on (weights, BatchNorm and everything else stay as they are).
    pub fn set_compute(&mut self, dtype: DType) {
        self.compute = Some(dtype);
    }

    pub fn compute(&self) -> Option<DType> {
        self.compute
    }

    /// Feature dimension after pooling.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// N×3×H×W images → N×D pooled features.
    pub fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let relu = Epilogue {
            shortcut: None,
            relu: true,
        };
        let y =
            self.stem
                .1
                .forward_then(&self.stem.0.forward(x, train, self.compute)?, train, relu)?;
        let mut y = ops::max_pool2d(&y, 3, 2, 1)?;
        for block in &self.blocks {
            y = block.forward(&y, train, self.compute)?;
        }
        ops::global_avg_pool(&y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn torchvision_names_shapes_and_output() {
        let mut p = Params::new(Device::Cpu, DType::F32, 1);
        let net = ResNet::new(&mut p, Backbone::Resnet50, 8, 1).unwrap();
        let t = p.tensors();
        assert_eq!(t["conv1.weight"].dims(), [8, 3, 7, 7]);
        assert_eq!(t["layer1.0.downsample.0.weight"].dims(), [32, 8, 1, 1]);
        assert_eq!(t["layer4.2.bn3.running_var"].dims(), [256]);
        assert_eq!(t.len(), 53 * 2 + 53 * 2 + 53); // 53 conv weights; 53 BNs with 2 weights and 2 buffers
        assert_eq!(net.out_dim(), 256);
        let x = Tensor::zeros((2, 3, 64, 32), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(net.forward(&x, false).unwrap().dims(), [2, 256]);
        let mut p18 = Params::new(Device::Cpu, DType::F32, 1);
        let r18 = ResNet::new(&mut p18, Backbone::Resnet18, 16, 2).unwrap();
        assert_eq!(r18.out_dim(), 128);
        assert!(p18.tensors().contains_key("layer4.1.bn2.running_mean"));
    }

    #[test]
    fn batch_norm_train_uses_batch_statistics_and_updates_running_ones() {
        let mut p = Params::new(Device::Cpu, DType::F64, 1);
        let bn = BatchNorm::new(&mut p, "bn", 2).unwrap();
        let x = Tensor::new(&[[1.0f64, 10.0], [3.0, 14.0]], &Device::Cpu).unwrap();
        let y = bn.forward(&x, true).unwrap().to_vec2::<f64>().unwrap();
        assert!(
            (y[0][0] + 1.0).abs() < 1e-4 && (y[1][1] - 1.0).abs() < 1e-4,
            "{y:?}"
        );
        let t = p.tensors();
        let rm = t["bn.running_mean"].to_vec1::<f64>().unwrap();
        assert!(
            (rm[0] - 0.2).abs() < 1e-12 && (rm[1] - 1.2).abs() < 1e-12,
            "{rm:?}"
        );
        // Unbiased batch variances 2 and 8: 0.9·1 + 0.1·v.
        let rv = t["bn.running_var"].to_vec1::<f64>().unwrap();
        assert!(
            (rv[0] - 1.1).abs() < 1e-12 && (rv[1] - 1.7).abs() < 1e-12,
            "{rv:?}"
        );
    }
}
