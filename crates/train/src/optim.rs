//! Optimisers (Adam with L2 weight decay, AdamW with decoupled decay, SGD with momentum) over the model's `Var`s,
//! with their state exportable for checkpoints, and the learning-rate schedule (linear warm-up, then constant,
//! step or cosine decay), evaluated per epoch.

use crate::config::{Optimizer as Kind, Schedule};
use crate::key::TrainSettings;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use std::collections::HashMap;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

pub struct Optimizer {
    kind: Kind,
    vars: Vec<Var>,
    /// First moments (Adam) or momentum buffers (SGD), and second moments (Adam).
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    steps: u64,
    weight_decay: f64,
    momentum: f64,
}

impl Optimizer {
    pub fn new(cfg: &TrainSettings, vars: Vec<Var>) -> candle_core::Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        let first = vars.iter().map(zeros).collect::<candle_core::Result<_>>()?;
        let second = vars.iter().map(zeros).collect::<candle_core::Result<_>>()?;
        Ok(Self {
            kind: cfg.optimizer,
            vars,
            first,
            second,
            steps: 0,
            weight_decay: cfg.weight_decay,
            momentum: cfg.momentum,
        })
    }

    /// One update with learning rate `lr`; variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> candle_core::Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Detached: the update must not extend the autograd graph from one step to the next.
            let (g, theta) = (g.detach(), var.as_tensor().detach());
            let theta = &theta;
            let g = match self.kind {
                Kind::Adam | Kind::Sgd if self.weight_decay > 0.0 => {
                    (g + (theta * self.weight_decay)?)?
                }
                _ => g.clone(),
            };
            let next = match self.kind {
                Kind::Sgd => {
                    self.first[i] = ((&self.first[i] * self.momentum)? + &g)?;
                    (theta - (&self.first[i] * lr)?)?
                }
                Kind::Adam | Kind::Adamw => {
                    self.first[i] = ((&self.first[i] * BETA1)? + (&g * (1.0 - BETA1))?)?;
                    self.second[i] = ((&self.second[i] * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
                    let m_hat = (&self.first[i] / (1.0 - BETA1.powi(t)))?;
                    let v_hat = (&self.second[i] / (1.0 - BETA2.powi(t)))?;
                    let update = (m_hat / (v_hat.sqrt()? + EPS)?)?;
                    let decayed = if self.kind == Kind::Adamw {
                        (theta * (1.0 - lr * self.weight_decay))?
                    } else {
                        theta.clone()
                    };
                    (decayed - (update * lr)?)?
                }
            };
            var.set(&next)?;
        }
        Ok(())
    }

    /// The state for a checkpoint: moments by index.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let moments = self
            .first
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("opt.first.{i}"), t.clone()));
        moments
            .chain(
                self.second
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (format!("opt.second.{i}"), t.clone())),
            )
            .collect()
    }

    /// Restores the state saved by [`Optimizer::state`] after `steps` updates.
    pub fn restore(
        &mut self,
        state: &HashMap<String, Tensor>,
        steps: u64,
    ) -> candle_core::Result<()> {
        for i in 0..self.vars.len() {
            let get = |k: String| {
                state
                    .get(&k)
                    .cloned()
                    .ok_or_else(|| candle_core::Error::Msg(format!("checkpoint lacks {k}")))
            };
            self.first[i] = get(format!("opt.first.{i}"))?;
            self.second[i] = get(format!("opt.second.{i}"))?;
        }
        self.steps = steps;
        Ok(())
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }
}

/// The learning rate of 0-based `epoch`: linear warm-up from 1% over `warmup_epochs`, then the schedule.
pub fn learning_rate(cfg: &TrainSettings, epoch: u32) -> f64 {
    if epoch < cfg.warmup_epochs {
        let alpha = epoch as f64 / cfg.warmup_epochs as f64;
        return cfg.lr * (0.01 * (1.0 - alpha) + alpha);
    }
    match cfg.schedule {
        Schedule::Constant => cfg.lr,
        Schedule::Step => {
            cfg.lr
                * cfg
                    .lr_decay
                    .powi(cfg.lr_steps.iter().filter(|&&s| s <= epoch).count() as i32)
        }
        Schedule::Cosine => {
            let span = (cfg.epochs - cfg.warmup_epochs).max(1) as f64;
            let progress = (epoch - cfg.warmup_epochs) as f64 / span;
            cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn cfg(kind: Kind) -> TrainSettings {
        TrainSettings {
            optimizer: kind,
            weight_decay: 0.0,
            momentum: 0.9,
            ..TrainSettings::default()
        }
    }

    /// Minimises (θ − 3)² and checks the first Adam and SGD steps by hand.
    #[test]
    fn steps_match_hand_computations_and_converge() {
        for kind in [Kind::Adam, Kind::Adamw, Kind::Sgd] {
            let theta = Var::new(&[0.0f64], &Device::Cpu).unwrap();
            let mut opt = Optimizer::new(&cfg(kind), vec![theta.clone()]).unwrap();
            for step in 0..400 {
                let loss = (theta.as_tensor() - 3.0)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap();
                opt.step(&loss.backward().unwrap(), 0.05).unwrap();
                let v = theta.as_tensor().to_vec1::<f64>().unwrap()[0];
                if step == 0 {
                    // Gradient −6: Adam moves by lr·sign = +0.05; SGD by lr·6 = 0.3.
                    let expected = if kind == Kind::Sgd { 0.3 } else { 0.05 };
                    assert!((v - expected).abs() < 1e-9, "{kind:?} first step {v}");
                }
            }
            let v = theta.as_tensor().to_vec1::<f64>().unwrap()[0];
            assert!((v - 3.0).abs() < 0.05, "{kind:?} ends at {v}");
        }
    }

    /// With a zero gradient, Adam's L2 decay acts through the gradient (its first step moves by lr, as every first
    /// Adam step does), AdamW's decoupled decay shrinks the weight by lr·wd directly, and SGD's by lr·wd·θ.
    #[test]
    fn weight_decay_is_l2_for_adam_and_sgd_and_decoupled_for_adamw() {
        let (lr, wd) = (0.1, 0.5);
        for (kind, expected) in [
            (Kind::Adam, 1.0 - lr),
            (Kind::Adamw, 1.0 - lr * wd),
            (Kind::Sgd, 1.0 - lr * wd),
        ] {
            let theta = Var::new(&[1.0f64], &Device::Cpu).unwrap();
            let c = TrainSettings {
                weight_decay: wd,
                ..cfg(kind)
            };
            let mut opt = Optimizer::new(&c, vec![theta.clone()]).unwrap();
            // (θ − 1)² at θ = 1: a gradient that is exactly zero.
            let loss = (theta.as_tensor() - 1.0)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            opt.step(&loss.backward().unwrap(), lr).unwrap();
            let v = theta.as_tensor().to_vec1::<f64>().unwrap()[0];
            assert!(
                (v - expected).abs() < 1e-7,
                "{kind:?}: {v}, expected {expected}"
            );
        }
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        let c = TrainSettings {
            lr: 1.0,
            epochs: 20,
            warmup_epochs: 4,
            lr_steps: vec![10, 15],
            lr_decay: 0.1,
            schedule: Schedule::Step,
            ..TrainSettings::default()
        };
        assert!((learning_rate(&c, 0) - 0.01).abs() < 1e-12);
        assert!((learning_rate(&c, 2) - 0.505).abs() < 1e-12);
        assert_eq!(learning_rate(&c, 4), 1.0);
        assert!((learning_rate(&c, 10) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&c, 19) - 0.01).abs() < 1e-12);
        let cos = TrainSettings {
            schedule: Schedule::Cosine,
            ..c
        };
        assert_eq!(learning_rate(&cos, 4), 1.0);
        assert!((learning_rate(&cos, 12) - 0.5).abs() < 1e-12);
    }
}
