//! The thread pool every `std` front end runs riffle-core's parallel steps on: one rayon
//! pool for the process (no thread spawned per operation), each worker with its own
//! scratch that grows to the largest part it has run.
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

use rayon::prelude::*;
use riffle_core::par::{Executor, Part};

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A pool of `threads` worker threads (the calling thread waits while they run).
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
            .num_threads(threads)
            .thread_name(|i| format!("riffle-{i}"))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Pool { pool, threads })
    }
}

impl Executor for Pool {
    fn threads(&self) -> usize {
        self.threads
    }

    fn for_each(&self, outs: &mut [&mut [f32]], scratch_len: usize, f: &Part<'_>) {
        self.pool.install(|| {
            outs.par_iter_mut().enumerate().for_each(|(i, out)| {
                SCRATCH.with(|s| {
                    let mut s = s.borrow_mut();
                    if s.len() < scratch_len {
                        s.resize(scratch_len, 0.0);
                    }
                    f(i, out, &mut s[..scratch_len]);
                });
            });
        });
    }
}
