//! The thread pool every `std` front end runs riffle-core's parallel steps on: one rayon
//! pool for the process (no thread spawned per operation), each worker with its own
//! scratch that grows to the largest part it has run. The calling thread runs the first
//! part itself (its caches already hold the step's input), the pool's `threads - 1`
//! workers the others.
//!
//! ```
//! use riffle_core::par::Executor;
//! let pool = riffle_host::threads::Pool::new(2).unwrap();
//! let mut a = [0.0f32; 4];
//! let mut b = [0.0f32; 4];
//! let mut outs: [&mut [f32]; 2] = [&mut a, &mut b];
//! pool.for_each(&mut outs, 1000, &|i, out, scratch| {
//!     assert!(scratch.len() >= 1000);
//!     out.fill(i as f32);
//! });
//! assert_eq!(b, [1.0; 4]);
//! ```

use std::cell::RefCell;

use riffle_core::par::{Executor, Part};

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `threads` threads for each step: the caller and `threads - 1` workers.
#[derive(Debug)]
pub struct Pool {
    pool: rayon::ThreadPool,
    threads: usize,
}

/// The number of threads to use by default: the cores this process may run on.
pub fn available() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Pool {
    /// A pool of `threads` workers (at least 1).
    ///
    /// # Errors
    /// The operating system's refusal to start threads, as text.
    pub fn new(threads: usize) -> Result<Self, String> {
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads((threads - 1).max(1))
            .thread_name(|i| format!("riffle-{i}"))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Pool { pool, threads })
    }

    /// A pool over a rayon pool built elsewhere (the browser's Web Workers, started by a
    /// spawn handler): its threads plus the caller's.
    pub fn from_rayon(pool: rayon::ThreadPool) -> Self {
        let threads = pool.current_num_threads() + 1;
        Pool { pool, threads }
    }
}

impl Executor for Pool {
    fn threads(&self) -> usize {
        self.threads
    }

    fn for_each(&self, outs: &mut [&mut [f32]], scratch_len: usize, f: &Part<'_>) {
        let run = |i: usize, out: &mut [f32]| {
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < scratch_len {
                    s.resize(scratch_len, 0.0);
                }
                f(i, out, &mut s[..scratch_len]);
            });
        };
        let Some((first, rest)) = outs.split_first_mut() else {
            return;
        };
        self.pool.in_place_scope(|scope| {
            for (i, out) in rest.iter_mut().enumerate() {
                scope.spawn(move |_| run(i + 1, out));
            }
            run(0, first);
        });
    }
}
