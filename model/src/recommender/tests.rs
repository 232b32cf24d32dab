//! Tests of the recommender against straightforward versions on random inputs.

use super::*;

fn features(n: usize, tokens: usize, device: &Device) -> EntityFeatures {
    // Entity i carries tokens (i % tokens) and ((i * 7) % tokens), stored as id + 1.
    let mut padded = Vec::with_capacity(n * 2);
    for i in 0..n {
        padded.push((i % tokens) as i64 + 1);
        padded.push(((i * 7) % tokens) as i64 + 1);
    }
    EntityFeatures::new(padded, 2, device)
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 values")
}

/// The catalogue-wide fast path (`score_all`, first MLP layer split in two) gives the same
/// scores as scoring every pair one by one, for both architectures.
#[test]
fn score_all_matches_pairwise_scores() {
    let device = Device::flex();
    for architecture in [Architecture::TwoTower, Architecture::Neumf] {
        let config = RecommenderConfig::new(9, 13, 5, 6)
            .with_embedding_dim(8)
            .with_architecture(architecture)
            .with_mlp_layers(vec![12, 6]);
        let model = crate::seeded_init(&device, 3, || config.init(&device));
        let (cf, pf) = (features(9, 5, &device), features(13, 6, &device));
        let customers: Vec<u32> = (0..9).collect();
        let products: Vec<u32> = (0..13).collect();
        let u = model.customer_vectors(ids_tensor(&customers, &device), &cf);
        let p_ids = ids_tensor(&products, &device);
        let matrix = model.product_matrix(
            model.product_vectors(p_ids.clone(), &pf),
            model.product_biases(p_ids),
        );
        let fast = values(model.score_all(u, &matrix));
        // Pair by pair through the training path (`batch_logits` positives).
        let mut slow = Vec::new();
        for c in 0..9u32 {
            let batch = InteractionBatch {
                customers: ids_tensor(&[c; 13], &device),
                positives: ids_tensor(&products, &device),
                weights: Tensor::ones([13], &device),
                negatives: ids_tensor(&products, &device),
                negatives_per_positive: 1,
            };
            let (pos, _, _) = model.batch_logits(&batch, &cf, &pf);
            slow.extend(
                pos.into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("f32 values"),
            );
        }
        for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
            assert!(
                (a - b).abs() < 1e-4,
                "{architecture}: pair {i}: score_all {a} vs pairwise {b}"
            );
        }
    }
}

/// The recency term adds `weight` times the mean vector of each row's recent products.
#[test]
fn recency_term_adds_the_mean_of_recent_product_vectors() {
    let device = Device::flex();
    let config = RecommenderConfig::new(2, 5, 1, 1).with_embedding_dim(3);
    let model = crate::seeded_init(&device, 9, || config.init(&device));
    let v: Vec<f32> = (0..15).map(|i| i as f32 * 0.1).collect();
    let vectors = Tensor::<2>::from_data(TensorData::new(v.clone(), [5, 3]), &device);
    let matrix = model.product_matrix(vectors, Tensor::zeros([5], &device));
    let u = Tensor::<2>::from_data(
        TensorData::new(vec![1f32, 2., 3., 4., 5., 6.], [2, 3]),
        &device,
    );
    let out = values(model.with_recent(u, &[vec![1, 2], vec![]], &matrix, 0.5));
    for j in 0..3 {
        let expected = [1f32, 2., 3.][j] + 0.5 * (v[3 + j] + v[6 + j]) / 2.0;
        assert!(
            (out[j] - expected).abs() < 1e-5,
            "row 0, {j}: {} vs {expected}",
            out[j]
        );
        assert!(
            (out[3 + j] - [4f32, 5., 6.][j]).abs() < 1e-6,
            "row 1 must not move"
        );
    }
}

/// Folding in a new customer who chose two products lowers the fold-in objective and, for the
/// dot-product model, ranks those products near the top.
#[test]
fn fold_in_moves_a_new_customer_towards_their_products() {
    let plain = Device::flex();
    let ad = plain.clone().autodiff();
    for (architecture, seed) in
        (0..12u64).flat_map(|s| [(Architecture::TwoTower, s), (Architecture::Neumf, s)])
    {
        // 32 dimensions for 20 products: random product vectors are nearly orthogonal, so a
        // customer vector can favour any two of them.
        let config = RecommenderConfig::new(4, 20, 3, 20)
            .with_embedding_dim(32)
            .with_architecture(architecture)
            .with_mlp_layers(vec![8]);
        let model = crate::seeded_init(&ad, seed, || config.init(&ad));
        let pf = features(20, 20, &ad); // every product its own attributes
        let ids: Vec<u32> = (0..20).collect();
        let t = ids_tensor(&ids, &ad);
        let matrix = model
            .product_matrix(
                model.product_vectors(t.clone(), &pf),
                model.product_biases(t),
            )
            .detach();
        // An arbitrary starting customer, not aimed at the chosen products.
        let start_values: Vec<f32> = (0..32).map(|i| (i as f32 * 1.7).sin() * 0.1).collect();
        let start = Tensor::<2>::from_data(TensorData::new(start_values, [1, 32]), &plain);
        let rank_of = |u: Tensor<2>, product: usize| -> usize {
            let scores = values(model.score_all(Tensor::from_data(u.into_data(), &ad), &matrix));
            scores.iter().filter(|s| **s > scores[product]).count()
        };
        let chosen = vec![vec![3u32, 11]];
        let fitted = model.fold_in(
            start.clone(),
            &chosen,
            &matrix,
            &FoldInConfig::new().with_steps(150),
            &plain,
        );
        // The fold-in objective (without its small L2 term): chosen products' -log sigmoid,
        // every other product's softplus weighted by negatives / catalogue size.
        let objective = |u: Tensor<2>| -> f32 {
            let scores = values(model.score_all(Tensor::from_data(u.into_data(), &ad), &matrix));
            let softplus = |x: f32| (1.0 + x.exp()).ln();
            scores
                .iter()
                .enumerate()
                .map(|(p, s)| match p {
                    3 | 11 => softplus(-s) / 2.0,
                    _ => softplus(*s) * 4.0 / 20.0,
                })
                .sum()
        };
        let (before, after) = (objective(start.clone()), objective(fitted.clone()));
        assert!(
            after < before,
            "{architecture}, seed {seed}: the fold-in objective rose from {before} to {after}"
        );
        if architecture == Architecture::TwoTower {
            // A dot product on nearly orthogonal vectors puts both at the top.
            for product in [3usize, 11] {
                let after = rank_of(fitted.clone(), product);
                assert!(
                    after < 2,
                    "seed {seed}: chosen product {product} ranks {after}"
                );
            }
        }
    }
}

/// Every path (short exclusion lists filtered on the host, long ones written into the score
/// matrix; a catalogue in whole blocks, padded, or read back whole) gives the plain answer:
/// every allowed product's score, sorted.
#[test]
fn top_k_excluding_matches_a_full_mask_on_both_paths() {
    for n_p in [3000, 3001, 50] {
        check_top_k_excluding(9, n_p);
    }
}

fn check_top_k_excluding(n_c: usize, n_p: usize) {
    let device = Device::flex();
    let model = crate::seeded_init(&device, 21, || {
        RecommenderConfig::new(n_c, n_p, 3, 3)
            .with_embedding_dim(8)
            .init(&device)
    });
    let cf = features(n_c, 3, &device);
    let pf = features(n_p, 3, &device);
    let all: Vec<u32> = (0..n_p as u32).collect();
    let matrix = model.product_matrix(
        model.product_vectors(ids_tensor(&all, &device), &pf),
        model.product_biases(ids_tensor(&all, &device)),
    );
    let customers: Vec<u32> = (0..n_c as u32).collect();
    let u = model.customer_vectors(ids_tensor(&customers, &device), &cf);
    let full = values(model.score_all(u.clone(), &matrix));
    for list_len in [3usize, 200] {
        let lists: Vec<Vec<u32>> = (0..n_c)
            .map(|c| {
                (0..list_len)
                    .map(|j| ((c * 131 + j * 17) % n_p) as u32)
                    .collect()
            })
            .collect();
        let refs: Vec<&[u32]> = lists.iter().map(Vec::as_slice).collect();
        let blocked = [7u32, (n_p - 1) as u32];
        for on_host in [true, false] {
            let got = model
                .select_top_k(u.clone(), &matrix, &refs, &blocked, 10, on_host)
                .expect("scores");
            for c in 0..n_c {
                let mut expected: Vec<(u32, f32)> = (0..n_p as u32)
                    .filter(|p| !lists[c].contains(p) && !blocked.contains(p))
                    .map(|p| (p, full[c * n_p + p as usize]))
                    .collect();
                expected.sort_by(|a, b| b.1.total_cmp(&a.1));
                expected.truncate(10);
                // The same products in the same order; the CPU path computes each score
                // in its own blocks, which may round the last bit differently.
                let ids = |l: &[(u32, f32)]| l.iter().map(|x| x.0).collect::<Vec<_>>();
                assert_eq!(
                    ids(&got[c]),
                    ids(&expected),
                    "customer {c}, lists of {list_len}, host {on_host}"
                );
                for (g, e) in got[c].iter().zip(&expected) {
                    assert!(
                        (g.1 - e.1).abs() <= 1e-6 * e.1.abs().max(1e-3),
                        "customer {c}: score {} vs {}",
                        g.1,
                        e.1
                    );
                }
            }
        }
    }
}

/// The sequential loss on host memory (`sequence_loss`) against the plain tensor version
/// (`sampled_softmax` of `sequence_logits`) through the whole model on random windows: the same
/// loss and the same gradient for the product table, the attribute tables and the encoder's
/// first weights (and the customer id table when the model reads it). Dropout off, so that both
/// passes see the same network.
#[test]
fn sequence_loss_matches_the_plain_tensor_version() {
    check_sequence_loss(false, false);
    check_sequence_loss(true, false);
    check_sequence_loss(true, true);
}

fn check_sequence_loss(customer_embedding: bool, completion: bool) {
    use burn::optim::GradientsParams;
    let device = Device::flex().autodiff();
    let (n_c, n_p, tokens) = (40, 90, 11);
    let config = RecommenderConfig::new(n_c, n_p, tokens, tokens)
        .with_embedding_dim(16)
        .with_architecture(Architecture::Sequential)
        .with_max_sequence(12)
        .with_sequence_dropout(0.0)
        .with_sequence_customer_embedding(customer_embedding);
    let model = crate::seeded_init(&device, 3, || config.init(&device));
    let (cf, pf) = (
        features(n_c, tokens, &device),
        features(n_p, tokens, &device),
    );
    let batch = small_sequence_batch(n_p as u32, completion, &device);
    let fast = model.sequence_loss(&batch, &cf, &pf).expect("sequential");
    let (pos, neg) = model.sequence_logits(&batch, &cf, &pf).expect("sequential");
    let plain = crate::losses::sampled_softmax(pos, neg);
    let (a, b) = (
        fast.clone().into_scalar::<f32>(),
        plain.clone().into_scalar::<f32>(),
    );
    assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "loss {a} vs {b}");
    let (ga, gb) = (
        GradientsParams::from_grads(fast.backward(), &model),
        GradientsParams::from_grads(plain.backward(), &model),
    );
    let encoder = model.sequence.as_ref().expect("encoder");
    let mut params = vec![
        ("product ids", model.product_id.weight.id),
        ("product attributes", model.product_attribute.weight.id),
        ("customer attributes", model.customer_attribute.weight.id),
        ("product bias", model.product_bias.weight.id),
        ("encoder positions", encoder.position_weight_id()),
    ];
    if customer_embedding {
        params.push(("customer ids", model.customer_id.weight.id));
    } else {
        assert!(ga.get::<2>(model.customer_id.weight.id).is_none());
    }
    for (name, id) in params {
        let (x, y) = match (ga.get::<2>(id), gb.get::<2>(id)) {
            (Some(x), Some(y)) => (values(x), values(y)),
            _ => panic!("{name}: no gradient"),
        };
        let scale = y.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (i, (p, q)) in x.iter().zip(&y).enumerate() {
            assert!((p - q).abs() <= 1e-4 * scale, "{name}[{i}]: {p} vs {q}");
        }
    }
}

/// Reading customers at several completion weights from one pass of the encoder gives exactly
/// what setting each weight and reading again gives (the customer embedding on, histories with
/// baskets, so that the two readings differ).
#[test]
fn customer_vectors_by_completion_weight_match_one_weight_at_a_time() {
    let device = Device::flex();
    let (n_c, n_p, tokens) = (40, 90, 11);
    let config = RecommenderConfig::new(n_c, n_p, tokens, tokens)
        .with_embedding_dim(16)
        .with_architecture(Architecture::Sequential)
        .with_max_sequence(12)
        .with_sequence_customer_embedding(true);
    let model = crate::seeded_init(&device, 5, || config.init(&device));
    let features = (
        &features(n_c, tokens, &device),
        &features(n_p, tokens, &device),
    );
    let histories = small_histories(n_p as u32);
    let rows: Vec<&[SequenceEvent]> = histories.iter().map(Vec::as_slice).collect();
    let slots = SequenceSlots::scoring(&rows, 12);
    let customers = ids_tensor(&[3, 7, 11, 19, 23], &device);
    let weights = [0.0, 0.25, 0.6, 1.0];
    let together =
        model.sequence_customer_vectors_by_weight(customers.clone(), features, &slots, &weights);
    assert_eq!(together.len(), weights.len());
    let mut read = Vec::new();
    for (&w, vectors) in weights.iter().zip(together) {
        let alone = model
            .clone()
            .with_completion_weight(w)
            .sequence_customer_vectors(customers.clone(), features, &slots);
        let (vectors, alone) = (values(vectors), values(alone));
        assert_eq!(vectors, alone, "completion weight {w}");
        read.push(vectors);
    }
    let moved = read[0]
        .iter()
        .zip(&read[3])
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(moved > 1e-3, "the weights read the same vectors ({moved})");
}

/// Five histories of 7-11 events: baskets of 1-3 items, every fourth event a view.
fn small_histories(n_p: u32) -> Vec<Vec<SequenceEvent>> {
    (0..5u32)
        .map(|r| {
            (0..(7 + r))
                .map(|j| SequenceEvent {
                    product: (r * 31 + j * 17) % n_p,
                    ts: ((j / (1 + r % 3)) * 86_400) as i64,
                    is_target: j % 4 != 1,
                })
                .collect()
        })
        .collect()
}

/// Five windows of 7-11 events (baskets of 1-3 items, a few views) of customers 3, 7, 11, 19
/// and 23, every purchase a target (with `completion`, also from the rest of its basket where it
/// has one), 60 negatives that overlap the targets.
fn small_sequence_batch(n_p: u32, completion: bool, device: &Device) -> SequenceBatch {
    let windows = small_histories(n_p);
    let rows: Vec<&[SequenceEvent]> = windows.iter().map(Vec::as_slice).collect();
    let completed: Vec<Vec<u32>> = windows
        .iter()
        .map(|w| {
            (0..w.len())
                .filter(|&i| completion && w[i].is_target)
                .filter(|&i| w.iter().enumerate().any(|(j, e)| j != i && e.ts == w[i].ts))
                .map(|i| i as u32 + 1)
                .collect()
        })
        .collect();
    let slots = SequenceSlots::training(&rows, 12).with_completion_queries(&completed);
    assert_eq!(slots.queries > 0, completion);
    let (mut target_slots, mut target_rows, mut targets) = (vec![], vec![], vec![]);
    for (r, w) in windows.iter().enumerate() {
        for (i, e) in w.iter().enumerate().filter(|(_, e)| e.is_target) {
            target_slots.push(slots.flat_slot(r, i + 1));
            target_rows.push(r as u32);
            targets.push(e.product);
        }
        for (k, &slot) in completed[r].iter().enumerate() {
            target_slots.push(slots.flat_query(r, k));
            target_rows.push(r as u32);
            targets.push(w[slot as usize - 1].product);
        }
    }
    let negatives: Vec<u32> = (0..60u32).map(|q| (q * 13) % n_p).collect();
    SequenceBatch {
        input: slots.to_device(device),
        customers: ids_tensor(&[3, 7, 11, 19, 23], device),
        target_slots: ids_tensor(&target_slots, device),
        target_rows: ids_tensor(&target_rows, device),
        targets: ids_tensor(&targets, device),
        negatives: ids_tensor(&negatives, device),
    }
}
