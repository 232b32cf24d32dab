//! A moving average of a network's parameters over its training steps (Polyak averaging, the
//! "EMA" of many training recipes), kept beside the network the optimiser trains.
//!
//! Why: with a small validation set the score moves by more between two epochs than one setting
//! differs from another, and the network kept is whichever epoch happened to land high. The
//! average of the last steps sits near the middle of where the optimiser wanders, so it is less
//! of a draw and often scores higher; it is what the loop validates, keeps and returns.
//!
//! The average is exponential with a bias correction: after `t` steps, step `s` weighs
//! `beta^(t - s)`, normalised over the steps so far, so the first steps are not pulled towards
//! the initial weights and the average is the network itself after the first step.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

/// The averaged network (on the plain device) and how many steps it has seen.
#[derive(Clone)]
pub struct WeightAverage<M> {
    model: M,
    steps: u64,
    beta: f64,
}

impl<M: Module> WeightAverage<M> {
    /// An average over about `horizon_steps` of the latest steps (the exponential's mean age),
    /// or `None` for a horizon under two steps (the network itself).
    pub fn spanning(horizon_steps: f64, start: M) -> Option<Self> {
        (horizon_steps >= 2.0).then(|| WeightAverage {
            model: start,
            steps: 0,
            beta: 1.0 - 1.0 / horizon_steps,
        })
    }

    /// A saved average resumed after `steps` steps.
    pub fn resumed(self, model: M, steps: u64) -> Self {
        WeightAverage {
            model,
            steps,
            ..self
        }
    }

    /// Folds in the network after one more step; `network` is on the plain device (the
    /// autodiff network's `valid()`).
    pub fn update(&mut self, network: &M) {
        self.steps += 1;
        // Bias-corrected weight of the newest step: 1 on the first step, 1 - beta in the limit.
        let rate = (1.0 - self.beta) / (1.0 - self.beta.powf(self.steps as f64));
        let mut current = Flattened::default();
        network.visit(&mut current);
        let mut mix = Mix {
            current: current.0.into_iter(),
            rate,
        };
        self.model = self.model.clone().map(&mut mix);
    }

    /// The averaged network.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Steps folded in so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

/// Every float parameter of a network, flattened, in visiting order.
#[derive(Default)]
struct Flattened(Vec<Tensor<1>>);

impl ModuleVisitor for Flattened {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let n = value.shape().num_elements();
        self.0.push(value.reshape([n]));
    }
}

/// Moves each parameter of the average towards the same parameter of the current network (the
/// two networks have the same structure, so the visiting orders match).
struct Mix {
    current: std::vec::IntoIter<Tensor<1>>,
    rate: f64,
}

impl ModuleMapper for Mix {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(current) = self.current.next() else {
            return param;
        };
        let rate = self.rate;
        param.map(|average| {
            let current: Tensor<D> = current.reshape(average.shape());
            average * (1.0 - rate) + current * rate
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    fn weights(linear: &Linear) -> Vec<f32> {
        linear
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default()
    }

    fn with_weights(linear: Linear, values: &[f32]) -> Linear {
        let mut linear = linear;
        let shape = linear.weight.val().shape();
        let device = linear.weight.val().device();
        linear.weight = linear
            .weight
            .map(|_| Tensor::<1>::from_floats(values, &device).reshape(shape));
        linear
    }

    /// The average after a sequence of networks equals the bias-corrected exponential average
    /// computed directly from the definition.
    #[test]
    fn the_average_is_the_bias_corrected_exponential_mean_of_the_steps() {
        let device = Device::default();
        let base = LinearConfig::new(3, 2).with_bias(false).init(&device);
        let horizon = 4.0;
        let beta: f64 = 1.0 - 1.0 / horizon;
        let mut average = WeightAverage::spanning(horizon, base.clone()).expect("a horizon of 4");
        let steps: Vec<Vec<f32>> = (0..7)
            .map(|t| {
                (0..6)
                    .map(|i| ((t * 5 + i * 3) % 11) as f32 - 4.0)
                    .collect()
            })
            .collect();
        for step in &steps {
            average.update(&with_weights(base.clone(), step));
        }
        let t = steps.len();
        let norm: f64 = (0..t).map(|s| beta.powi((t - 1 - s) as i32)).sum();
        let expected: Vec<f32> = (0..6)
            .map(|i| {
                let sum: f64 = (0..t)
                    .map(|s| beta.powi((t - 1 - s) as i32) * steps[s][i] as f64)
                    .sum();
                (sum / norm) as f32
            })
            .collect();
        let got = weights(average.model());
        for (g, e) in got.iter().zip(&expected) {
            assert!(
                (g - e).abs() < 1e-4,
                "average {got:?}, expected {expected:?}"
            );
        }
        // Not simply the last step, nor the plain mean: the test would pass for neither.
        assert!(got
            .iter()
            .zip(&steps[t - 1])
            .any(|(g, l)| (g - l).abs() > 0.1));
        assert_eq!(average.steps(), t as u64);
    }

    #[test]
    fn after_one_step_the_average_is_the_network() {
        let device = Device::default();
        let base = LinearConfig::new(2, 2).init(&device);
        let mut average = WeightAverage::spanning(10.0, base.clone()).expect("a horizon of 10");
        let step = with_weights(base, &[1.0, -2.0, 3.0, 0.5]);
        average.update(&step);
        assert_eq!(weights(average.model()), vec![1.0, -2.0, 3.0, 0.5]);
    }

    #[test]
    fn a_horizon_under_two_steps_means_no_average() {
        let device = Device::default();
        let base = LinearConfig::new(2, 2).init(&device);
        assert!(WeightAverage::spanning(1.5, base).is_none());
    }
}
