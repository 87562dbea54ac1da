//! Named parameters: trainable weights and buffers (BatchNorm running statistics) keyed by torchvision-style names,
//! seeded initialisation, and safetensors save/load with errors that name the tensor and both shapes.

use candle_core::{DType, Device, Tensor, Var};
use mgat_stage::DeviceChoice;
use mgat_util::rng::Rng;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] mgat_util::fsio::IoError),
    #[error("{path}: tensor `{name}` has shape {found:?}, the model expects {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{path}: tensor `{name}` (shape {expected:?}) is missing")]
    Missing {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
    },
    #[error("{}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    #[error("{error}; the file looks like {looks_like}")]
    Misfit {
        error: Box<ModelError>,
        looks_like: String,
    },
    #[error("device `{0}`: {1}")]
    Device(String, String),
    #[error(
        "{}: model.pretrained has {found}, but its stage was planned with {expected}: the file changed since; run again to plan with it",
        path.display()
    )]
    ChangedWeights {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

impl ModelError {
    /// Whether the error is the user's input (a checkpoint that does not fit, a changed pretrained file, a device
    /// name or a device that is not there) rather than a failure of the computation.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ModelError::Shape { .. }
                | ModelError::Missing { .. }
                | ModelError::ChangedWeights { .. }
                | ModelError::Checkpoint { .. }
                | ModelError::Misfit { .. }
                | ModelError::Device(..)
        )
    }
}

/// How a weight starts.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// Normal with this standard deviation.
    Normal(f64),
    Const(f64),
}

/// The model's tensors by name. Trainable ones are `Var`s handed to the optimiser; buffers are updated in place.
pub struct Params {
    pub device: Device,
    pub dtype: DType,
    trainable: BTreeMap<String, Var>,
    buffers: BTreeMap<String, Var>,
    rng: Rng,
}

impl Params {
    /// An empty store whose initial values draw from `seed`.
    pub fn new(device: Device, dtype: DType, seed: u64) -> Self {
        Self {
            device,
            dtype,
            trainable: BTreeMap::new(),
            buffers: BTreeMap::new(),
            rng: Rng::new(seed, &[0x1417]),
        }
    }

    /// Creates a trainable tensor `name` of `shape`.
    pub fn weight(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Var, ModelError> {
        let var = self.fresh(shape, init)?;
        self.trainable.insert(name.to_string(), var.clone());
        Ok(var)
    }

    /// Creates a buffer (not trained by gradient) `name` of `shape`.
    pub fn buffer(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Var, ModelError> {
        let var = self.fresh(shape, init)?;
        self.buffers.insert(name.to_string(), var.clone());
        Ok(var)
    }

    fn fresh(&mut self, shape: &[usize], init: Init) -> Result<Var, ModelError> {
        let n: usize = shape.iter().product();
        let values: Vec<f64> = match init {
            Init::Normal(std) => (0..n).map(|_| self.rng.normal() * std).collect(),
            Init::Const(c) => vec![c; n],
        };
        let t = Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?;
        Ok(Var::from_tensor(&t)?)
    }

    /// Trainable tensors in name order.
    pub fn trainable(&self) -> Vec<Var> {
        self.trainable.values().cloned().collect()
    }

    /// Trainable tensors with their names, in name order.
    pub fn named_trainable(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.trainable.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Every tensor by name (weights and buffers).
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.trainable
            .iter()
            .chain(&self.buffers)
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    }

    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        save_tensors(&self.tensors(), path)
    }

    /// Copies tensors from a checkpoint file (safetensors or PyTorch zip, see [`super::checkpoint`]).
    pub fn load(&self, path: &Path, required: impl Fn(&str) -> bool) -> Result<usize, ModelError> {
        self.load_from(&super::checkpoint::read(path, &self.device)?, required)
    }

    /// Copies tensors from a checkpoint already read. With `required`, every tensor of the model whose name passes it
    /// must be present; tensors of the file the model does not have are ignored (e.g. torchvision's `fc.*`).
    pub fn load_from(
        &self,
        checkpoint: &super::checkpoint::Checkpoint,
        required: impl Fn(&str) -> bool,
    ) -> Result<usize, ModelError> {
        let (path, file) = (&checkpoint.path, &checkpoint.tensors);
        let mut loaded = 0;
        for (name, var) in self.trainable.iter().chain(&self.buffers) {
            let expected = var.dims().to_vec();
            match file.get(name) {
                Some(t) if t.dims() != expected.as_slice() => {
                    return Err(ModelError::Shape {
                        path: path.clone(),
                        name: name.clone(),
                        found: t.dims().to_vec(),
                        expected,
                    });
                }
                Some(t) => {
                    var.set(&t.to_dtype(self.dtype)?)?;
                    loaded += 1;
                }
                None if required(name) => {
                    return Err(ModelError::Missing {
                        path: path.clone(),
                        name: name.clone(),
                        expected,
                    });
                }
                None => {}
            }
        }
        Ok(loaded)
    }
}

/// Writes `tensors` as safetensors to `path` with the one durable atomic write (and so the same permissions as
/// every other output).
pub fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<(), ModelError> {
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let bytes = safetensors::serialize(sorted, None)
        .map_err(|e| ModelError::Candle(candle_core::Error::Msg(e.to_string())))?;
    Ok(mgat_util::fsio::write_atomic(path, &bytes)?)
}

/// Opens `choice` as a candle device, with the concrete device it is (`cpu` or `cuda:N`; `auto` is CUDA device 0
/// when this binary has CUDA and a device is present, else the CPU).
pub fn open_device(choice: DeviceChoice) -> Result<(Device, DeviceChoice), ModelError> {
    let unavailable = |message: String| ModelError::Device(choice.to_string(), message);
    let index = match choice {
        DeviceChoice::Cpu => return Ok((Device::Cpu, DeviceChoice::Cpu)),
        DeviceChoice::Auto if !cfg!(feature = "cuda") => {
            return Ok((Device::Cpu, DeviceChoice::Cpu));
        }
        DeviceChoice::Auto => 0,
        DeviceChoice::Cuda(i) => i,
    };
    if !cfg!(feature = "cuda") {
        return Err(unavailable(
            "this mgat binary was built without CUDA (build with --features cuda)".into(),
        ));
    }
    match Device::new_cuda(index as usize) {
        Ok(d) => Ok((d, DeviceChoice::Cuda(index))),
        Err(_) if choice == DeviceChoice::Auto => Ok((Device::Cpu, DeviceChoice::Cpu)),
        Err(e) => Err(unavailable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_opens_as_itself_and_auto_falls_back_to_it_without_cuda() {
        assert!(matches!(
            open_device(DeviceChoice::Cpu),
            Ok((Device::Cpu, DeviceChoice::Cpu))
        ));
        if !cfg!(feature = "cuda") {
            assert!(matches!(
                open_device(DeviceChoice::Auto),
                Ok((Device::Cpu, DeviceChoice::Cpu))
            ));
            let err = open_device(DeviceChoice::Cuda(1)).unwrap_err();
            assert!(
                err.is_bad_input() && err.to_string().contains("without CUDA"),
                "{err}"
            );
        }
    }

    #[test]
    fn same_seed_same_values_and_load_checks_shapes() {
        let dir = mgat_testutil::tempdir();
        let make = |seed| {
            let mut p = Params::new(Device::Cpu, DType::F32, seed);
            p.weight("a.weight", &[2, 3], Init::Normal(1.0)).unwrap();
            p.buffer("a.running_mean", &[3], Init::Const(0.0)).unwrap();
            p
        };
        let (p, q) = (make(1), make(1));
        let values = |p: &Params| {
            p.tensors()["a.weight"]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(values(&p), values(&q));
        assert_ne!(values(&p), values(&make(2)));
        let path = dir.join("m.safetensors");
        p.save(&path).unwrap();
        let r = make(3);
        assert_eq!(r.load(&path, |_| true).unwrap(), 2);
        assert_eq!(values(&r), values(&p));

        let mut wrong = Params::new(Device::Cpu, DType::F32, 1);
        wrong.weight("a.weight", &[3, 2], Init::Const(0.0)).unwrap();
        wrong.weight("b.weight", &[1], Init::Const(0.0)).unwrap();
        let err = wrong.load(&path, |_| true).unwrap_err().to_string();
        assert!(
            err.contains("`a.weight` has shape [2, 3], the model expects [3, 2]"),
            "{err}"
        );
        let mut missing = Params::new(Device::Cpu, DType::F32, 1);
        missing.weight("b.weight", &[1], Init::Const(0.0)).unwrap();
        let err = missing.load(&path, |_| true).unwrap_err().to_string();
        assert!(err.contains("`b.weight` (shape [1]) is missing"), "{err}");
    }
}
