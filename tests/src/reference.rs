//! An independent float64 reference of docs/gs-math.md, written from the document
//! (not from riffle-core's code): dense skew matrices, Cayley by Gauss-Jordan in f64,
//! permutation tables, and dense chains `Q = F_{m-1} ··· F_0`.

/// Row-major dense `n x n` matrix in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// Width and height.
    pub n: usize,
    /// Entries, row-major.
    pub a: Vec<f64>,
}

impl Dense {
    /// The identity.
    pub fn eye(n: usize) -> Self {
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            a[i * n + i] = 1.0;
        }
        Dense { n, a }
    }
    /// Entry (i, j).
    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.a[i * self.n + j]
    }
    /// Matrix product `self · o`.
    pub fn mul(&self, o: &Dense) -> Dense {
        let n = self.n;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for k in 0..n {
                let v = self.at(i, k);
                if v != 0.0 {
                    for j in 0..n {
                        a[i * n + j] += v * o.at(k, j);
                    }
                }
            }
        }
        Dense { n, a }
    }
    /// Transpose.
    pub fn t(&self) -> Dense {
        let n = self.n;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[j * n + i] = self.at(i, j);
            }
        }
        Dense { n, a }
    }
    /// `self · x`.
    pub fn mul_vec(&self, x: &[f64]) -> Vec<f64> {
        (0..self.n)
            .map(|i| (0..self.n).map(|j| self.at(i, j) * x[j]).sum())
            .collect()
    }
}

/// Skew matrix of packed parameters (strict upper triangle, row-major).
pub fn skew(p: &[f64], b: usize) -> Dense {
    let mut s = Dense {
        n: b,
        a: vec![0.0; b * b],
    };
    let mut idx = 0;
    for i in 0..b {
        for j in i + 1..b {
            s.a[i * b + j] = p[idx];
            s.a[j * b + i] = -p[idx];
            idx += 1;
        }
    }
    s
}

/// `C = (I - S)^{-1} (I + S)` by Gauss-Jordan elimination with partial pivoting in f64.
pub fn cayley(p: &[f64], b: usize) -> Dense {
    let s = skew(p, b);
    let mut a: Vec<f64> = (0..b * b)
        .map(|i| if i / b == i % b { 1.0 } else { 0.0 } - s.a[i])
        .collect();
    let mut r: Vec<f64> = (0..b * b)
        .map(|i| if i / b == i % b { 1.0 } else { 0.0 } + s.a[i])
        .collect();
    for c in 0..b {
        let piv = (c..b)
            .max_by(|&x, &y| a[x * b + c].abs().total_cmp(&a[y * b + c].abs()))
            .unwrap();
        for j in 0..b {
            a.swap(c * b + j, piv * b + j);
            r.swap(c * b + j, piv * b + j);
        }
        let d = a[c * b + c];
        for j in 0..b {
            a[c * b + j] /= d;
            r[c * b + j] /= d;
        }
        for row in 0..b {
            if row != c {
                let f = a[row * b + c];
                for j in 0..b {
                    a[row * b + j] -= f * a[c * b + j];
                    r[row * b + j] -= f * r[c * b + j];
                }
            }
        }
    }
    Dense { n: b, a: r }
}

/// Gather table of factor `f` of `m` (gs-math.md section 4).
pub fn factor_pi(perm: &str, n: usize, b: usize, m: usize, f: usize) -> Vec<usize> {
    let k = n / b;
    match perm {
        "none" => (0..n).collect(),
        "gs" => (0..n)
            .map(|i| {
                let mut j = i;
                for _ in 0..f {
                    j = (j % b) * k + j / b;
                }
                j
            })
            .collect(),
        "butterfly" => {
            let level = m - 1 - f;
            if level == 0 {
                return (0..n).collect();
            }
            let h = b / 2;
            let span = b << level;
            (0..n)
                .map(|j| {
                    let base = j / span * span;
                    let (q, e) = ((j - base) / h, (j - base) % h);
                    let c = if q % 2 == 0 {
                        q / 2
                    } else {
                        (1 << level) + (q - 1) / 2
                    };
                    base + c * h + e
                })
                .collect()
        }
        other => panic!("unknown permutation {other}"),
    }
}

/// Dense `Q = F_{m-1} ··· F_0` with `F = P^T blockdiag(C(p_j)) P`; `params[f]` is the
/// packed tensor `(k, b(b-1)/2)` of factor `f`, flattened.
pub fn chain_dense(params: &[Vec<f64>], n: usize, b: usize, perm: &str) -> Dense {
    let m = params.len();
    let np = b * (b - 1) / 2;
    let mut q = Dense::eye(n);
    for (f, p) in params.iter().enumerate() {
        let pi = factor_pi(perm, n, b, m, f);
        let mut d = Dense {
            n,
            a: vec![0.0; n * n],
        };
        for j in 0..n / b {
            let c = cayley(&p[j * np..(j + 1) * np], b);
            for r in 0..b {
                for cc in 0..b {
                    d.a[(j * b + r) * n + j * b + cc] = c.at(r, cc);
                }
            }
        }
        let mut pm = Dense {
            n,
            a: vec![0.0; n * n],
        };
        for (i, &src) in pi.iter().enumerate() {
            pm.a[i * n + src] = 1.0;
        }
        q = pm.t().mul(&d).mul(&pm).mul(&q);
    }
    q
}
