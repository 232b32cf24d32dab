//! Customer segments: k-means over customer vectors (k-means++ start, fixed seed).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn dist2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Assigns each of the `n` rows of `vectors` (`[n, d]` row-major) to one of `k` clusters.
pub fn kmeans(vectors: &[f32], d: usize, k: usize, seed: u64, iterations: usize) -> Vec<u32> {
    let n = vectors.len() / d.max(1);
    if n == 0 {
        return Vec::new();
    }
    let k = k.min(n).max(1);
    let row = |i: usize| &vectors[i * d..(i + 1) * d];
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b6d_6561_6e73);
    let mut centres: Vec<Vec<f32>> = vec![row(rng.random_range(0..n)).to_vec()];
    let mut nearest: Vec<f32> = (0..n).map(|i| dist2(row(i), &centres[0])).collect();
    while centres.len() < k {
        let total: f32 = nearest.iter().sum();
        let next = if total <= 0.0 {
            rng.random_range(0..n)
        } else {
            let mut r = rng.random::<f32>() * total;
            let mut pick = n - 1;
            for (i, w) in nearest.iter().enumerate() {
                if r < *w {
                    pick = i;
                    break;
                }
                r -= w;
            }
            pick
        };
        centres.push(row(next).to_vec());
        let c = centres.len() - 1;
        for (i, v) in nearest.iter_mut().enumerate() {
            *v = v.min(dist2(row(i), &centres[c]));
        }
    }
    let mut assign = vec![0u32; n];
    for _ in 0..iterations {
        let mut changed = false;
        for (i, a) in assign.iter_mut().enumerate() {
            let best = (0..k)
                .min_by(|&x, &y| dist2(row(i), &centres[x]).total_cmp(&dist2(row(i), &centres[y])))
                .unwrap_or(0) as u32;
            changed |= best != *a;
            *a = best;
        }
        let mut sums = vec![vec![0f32; d]; k];
        let mut counts = vec![0usize; k];
        for (i, &a) in assign.iter().enumerate() {
            counts[a as usize] += 1;
            for (s, x) in sums[a as usize].iter_mut().zip(row(i)) {
                *s += x;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                centres[c] = sums[c].iter().map(|s| s / counts[c] as f32).collect();
            }
        }
        if !changed {
            break;
        }
    }
    assign
}

#[cfg(test)]
mod tests {
    #[test]
    fn separates_two_blobs() {
        let mut v = Vec::new();
        for i in 0..20 {
            let off = if i < 10 { 0.0 } else { 10.0 };
            v.extend([off + (i % 3) as f32 * 0.1, off]);
        }
        let a = super::kmeans(&v, 2, 2, 1, 20);
        assert!(a[..10].iter().all(|x| *x == a[0]));
        assert!(a[10..].iter().all(|x| *x == a[10]));
        assert_ne!(a[0], a[10]);
    }
}
