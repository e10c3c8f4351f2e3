//! Weighted PageRank (damping `d`, uniform teleport, dangling nodes spread
//! uniformly) by power iteration over a compressed in-edge list, until the L1
//! change between iterations is below a tolerance.

/// A directed weighted graph over nodes `0..n`, stored by destination.
#[derive(Debug, Clone)]
pub struct Graph {
    n: usize,
    /// `in_start[v]..in_start[v+1]` indexes `in_src`/`in_w` for node `v`.
    in_start: Vec<usize>,
    in_src: Vec<u32>,
    in_w: Vec<f64>,
    /// Total out-weight of each node.
    out_w: Vec<f64>,
}

impl Graph {
    /// Builds from `(src, dst, weight)` edges; self-loops and weights ≤ 0 are
    /// ignored, parallel edges add up.
    pub fn from_edges(n: usize, edges: &[(u32, u32, f64)]) -> Graph {
        let mut counts = vec![0usize; n + 1];
        let mut out_w = vec![0f64; n];
        for &(s, d, w) in edges {
            if s == d || w <= 0.0 || !w.is_finite() || s as usize >= n || d as usize >= n {
                continue;
            }
            counts[d as usize + 1] += 1;
            out_w[s as usize] += w;
        }
        for i in 0..n {
            counts[i + 1] += counts[i];
        }
        let m = counts[n];
        let mut fill = counts.clone();
        let mut in_src = vec![0u32; m];
        let mut in_w = vec![0f64; m];
        for &(s, d, w) in edges {
            if s == d || w <= 0.0 || !w.is_finite() || s as usize >= n || d as usize >= n {
                continue;
            }
            let k = fill[d as usize];
            in_src[k] = s;
            in_w[k] = w;
            fill[d as usize] += 1;
        }
        Graph {
            n,
            in_start: counts,
            in_src,
            in_w,
            out_w,
        }
    }

    pub fn nodes(&self) -> usize {
        self.n
    }

    pub fn edges(&self) -> usize {
        self.in_src.len()
    }
}

/// Result of [`pagerank`].
#[derive(Debug, Clone)]
pub struct PageRank {
    /// Scores summing to 1 (for a non-empty graph).
    pub rank: Vec<f64>,
    pub iterations: u32,
    /// L1 change of the last iteration.
    pub delta: f64,
}

/// Power iteration until the L1 change is below `tolerance` or `max_iter` runs.
pub fn pagerank(g: &Graph, damping: f64, tolerance: f64, max_iter: u32) -> PageRank {
    let n = g.n;
    if n == 0 {
        return PageRank {
            rank: Vec::new(),
            iterations: 0,
            delta: 0.0,
        };
    }
    let nf = n as f64;
    let mut rank = vec![1.0 / nf; n];
    let mut next = vec![0f64; n];
    // contribution per unit of out-weight of each node, recomputed per iteration
    let mut share = vec![0f64; n];
    let mut delta = f64::INFINITY;
    let mut it = 0;
    while it < max_iter && delta >= tolerance {
        let mut dangling = 0.0;
        for v in 0..n {
            if g.out_w[v] > 0.0 {
                share[v] = rank[v] / g.out_w[v];
            } else {
                share[v] = 0.0;
                dangling += rank[v];
            }
        }
        let base = (1.0 - damping) / nf + damping * dangling / nf;
        for (v, slot) in next.iter_mut().enumerate() {
            let mut s = 0.0;
            for k in g.in_start[v]..g.in_start[v + 1] {
                s += share[g.in_src[k] as usize] * g.in_w[k];
            }
            *slot = base + damping * s;
        }
        delta = rank
            .iter()
            .zip(next.iter())
            .map(|(a, b)| (a - b).abs())
            .sum();
        std::mem::swap(&mut rank, &mut next);
        it += 1;
    }
    PageRank {
        rank,
        iterations: it,
        delta,
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // matrix code reads better with indices
mod tests {
    use super::*;

    /// Reference: the dense PageRank matrix solved by Gaussian elimination,
    /// (I - d·M) r = (1-d)/n · 1 with dangling columns replaced by 1/n.
    fn reference(n: usize, edges: &[(u32, u32, f64)], d: f64) -> Vec<f64> {
        let mut out = vec![0f64; n];
        let mut w = vec![vec![0f64; n]; n]; // w[dst][src]
        for &(s, t, x) in edges {
            if s != t {
                out[s as usize] += x;
                w[t as usize][s as usize] += x;
            }
        }
        let mut a = vec![vec![0f64; n + 1]; n];
        for i in 0..n {
            for j in 0..n {
                let m = if out[j] > 0.0 {
                    w[i][j] / out[j]
                } else {
                    1.0 / n as f64
                };
                a[i][j] = if i == j { 1.0 } else { 0.0 } - d * m;
            }
            a[i][n] = (1.0 - d) / n as f64;
        }
        for c in 0..n {
            let p = (c..n)
                .max_by(|x, y| a[*x][c].abs().total_cmp(&a[*y][c].abs()))
                .expect("pivot");
            a.swap(c, p);
            for r in 0..n {
                if r != c {
                    let f = a[r][c] / a[c][c];
                    for k in c..=n {
                        a[r][k] -= f * a[c][k];
                    }
                }
            }
        }
        (0..n).map(|i| a[i][n] / a[i][i]).collect()
    }

    #[test]
    fn two_node_cycle_closed_form() {
        let g = Graph::from_edges(2, &[(0, 1, 1.0), (1, 0, 1.0)]);
        let pr = pagerank(&g, 0.85, 1e-12, 1000);
        assert!((pr.rank[0] - 0.5).abs() < 1e-9 && (pr.rank[1] - 0.5).abs() < 1e-9);
    }

    #[test]
    fn star_closed_form() {
        // k leaves all point at the hub; the hub is dangling.
        // leaf: x, hub: h; h + k x = 1; x = (1-d)/n + d h/n; h = (1-d)/n + d k x + d h/n
        let k = 4usize;
        let n = k + 1;
        let edges: Vec<_> = (1..=k as u32).map(|i| (i, 0, 1.0)).collect();
        let pr = pagerank(&Graph::from_edges(n, &edges), 0.85, 1e-13, 10_000);
        let r = reference(n, &edges, 0.85);
        for i in 0..n {
            assert!(
                (pr.rank[i] - r[i]).abs() < 1e-9,
                "{i}: {} vs {}",
                pr.rank[i],
                r[i]
            );
        }
        assert!(pr.rank[0] > pr.rank[1]);
        let sum: f64 = pr.rank.iter().sum();
        assert!((sum - 1.0).abs() < 1e-9);
    }

    #[test]
    fn matches_the_dense_solution_on_small_weighted_graphs() {
        let mut seed = 7u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for n in [3usize, 5, 8, 13] {
            let edges: Vec<(u32, u32, f64)> = (0..n * 3)
                .map(|_| {
                    (
                        (rnd() % n as u64) as u32,
                        (rnd() % n as u64) as u32,
                        1.0 + (rnd() % 5) as f64,
                    )
                })
                .collect();
            let pr = pagerank(&Graph::from_edges(n, &edges), 0.85, 1e-13, 10_000);
            let r = reference(n, &edges, 0.85);
            for i in 0..n {
                assert!((pr.rank[i] - r[i]).abs() < 1e-9, "n={n} node {i}");
            }
        }
    }

    #[test]
    fn converges_on_a_large_random_graph() {
        let n = 200_000usize;
        let mut seed = 99u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let edges: Vec<(u32, u32, f64)> = (0..n * 5)
            .map(|_| {
                // preferential-ish: destinations skewed towards low ids
                let s = (rnd() % n as u64) as u32;
                let d = ((rnd() % n as u64) * (rnd() % n as u64) / n as u64) as u32;
                (s, d, 1.0)
            })
            .collect();
        let pr = pagerank(&Graph::from_edges(n, &edges), 0.85, 1e-6, 200);
        assert!(
            pr.delta < 1e-6,
            "delta {} after {}",
            pr.delta,
            pr.iterations
        );
        assert!(pr.iterations < 200);
        let sum: f64 = pr.rank.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
    }

    #[test]
    fn adding_an_in_link_never_lowers_the_target() {
        let base = vec![(0, 1, 1.0), (1, 2, 1.0), (2, 0, 1.0), (3, 2, 1.0)];
        let before = pagerank(&Graph::from_edges(5, &base), 0.85, 1e-12, 1000);
        let mut more = base.clone();
        more.push((4, 1, 1.0));
        let after = pagerank(&Graph::from_edges(5, &more), 0.85, 1e-12, 1000);
        assert!(after.rank[1] > before.rank[1]);
    }
}
