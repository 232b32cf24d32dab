//! The NeuMF scoring head (He et al. 2017) over the same hybrid vectors: a GMF part
//! (element-wise product) and an MLP over the concatenated vectors, joined by one output layer.
//! The first MLP layer is split into a customer half and a product half so that scoring the
//! catalogue is still two matrix products.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::ProductMatrix;

/// GMF + MLP scoring head of NeuMF.
#[derive(Module, Debug)]
pub struct NeuMfHead {
    /// First layer over `[customer; product]`, then the hidden layers.
    pub(super) mlp: Vec<Linear>,
    /// Over `[customer ⊙ product; last hidden]`.
    pub(super) output: Linear,
    pub(super) embedding_dim: usize,
}

impl NeuMfHead {
    /// Scores of matching rows of `u` and `p` (`[N, d]` each) -> `[N]`, without the bias.
    pub(super) fn pair_scores(&self, u: Tensor<2>, p: Tensor<2>) -> Tensor<1> {
        let mut h = Tensor::cat(vec![u.clone(), p.clone()], 1);
        for layer in &self.mlp {
            h = relu(layer.forward(h));
        }
        self.output
            .forward(Tensor::cat(vec![u * p, h], 1))
            .squeeze_dim::<1>(1)
    }

    /// `[C, P]` scores of every customer row with every product, without the bias.
    pub(super) fn all_scores(&self, u: Tensor<2>, m: &ProductMatrix) -> Tensor<2> {
        let d = self.embedding_dim;
        let [c, _] = u.dims();
        let p = m.vectors.dims()[0];
        let out_w = self.output.weight.val(); // [d + h_last, 1]
        let h_last = out_w.dims()[0] - d;
        let gmf_w = out_w.clone().narrow(0, 0, d).reshape([1, d]);
        let gmf = (u.clone() * gmf_w).matmul(m.transposed.clone()); // [C, P]
        let first = &self.mlp[0];
        let w_u = first.weight.val().narrow(0, 0, d); // customer half of the first layer
        let mut a = u.matmul(w_u);
        if let Some(b) = &first.bias {
            a = a + b.val().unsqueeze_dim::<2>(0);
        }
        let h1 = a.dims()[1];
        let product_part = match &m.mlp_product_part {
            Some(t) => t.clone(),
            None => return gmf, // not built for NeuMF: cannot happen through `product_matrix`
        };
        let mut h: Tensor<2> = relu(
            a.unsqueeze_dim::<3>(1) + product_part.unsqueeze_dim::<3>(0), // [C, P, h1]
        )
        .reshape([c * p, h1]);
        for layer in self.mlp.iter().skip(1) {
            h = relu(layer.forward(h));
        }
        let mlp_w = out_w.narrow(0, d, h_last); // [h_last, 1]
        let mut mlp = h.matmul(mlp_w).reshape([c, p]);
        if let Some(b) = &self.output.bias {
            mlp = mlp + b.val().unsqueeze_dim::<2>(0);
        }
        gmf + mlp
    }
}
