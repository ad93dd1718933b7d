//! The thread pool every `std` front end runs riffle-core's parallel steps on: one pool
//! for the process (no thread spawned per operation), each worker with its own scratch
//! that grows to the largest part it has run.
//!
//! A step is a handful of parts of tens to hundreds of microseconds, and a forward pass
//! is hundreds of steps with short serial work between them. What limits scaling at that
//! grain is how fast an idle worker notices the next step, so the workers here do not
//! sleep between steps: after a step they spin on one atomic word for a while (about a
//! millisecond) and only then park on a condition variable. The caller publishes a step
//! by bumping that word, runs part 0 itself (its caches already hold the step's input),
//! then takes any part no worker has claimed yet, and waits for the rest. Parts are
//! claimed one at a time by compare-and-swap, so a worker that is slow to wake costs at
//! most one part's time, never the whole step. Which thread runs a part never changes
//! what the part computes: results are the same for every thread count (the core's
//! splits are fixed by the thread count alone).
//!
//! The worker loops run on rayon threads (one long-lived body per thread), so the same
//! pool runs on native threads and on the browser's Web Workers ([`Pool::from_rayon`]).
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

use std::cell::{RefCell, UnsafeCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use riffle_core::par::{Executor, Part, MAX_PARTS};

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Spin iterations (`spin_loop` hints) an idle worker polls for the next step before it
/// starts yielding its core (about a millisecond: x86-64's `pause` takes tens of cycles;
/// WebAssembly has no such hint, so its loop is a bare atomic load and counts longer).
#[cfg(not(target_arch = "wasm32"))]
const SPINS: u32 = 1 << 14;
#[cfg(target_arch = "wasm32")]
const SPINS: u32 = 1 << 19;
/// Yields of the core after the spins, before an idle worker parks.
const YIELDS: u32 = 1 << 8;

/// `threads` threads for each step: the caller and `threads - 1` workers.
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
    threads: usize,
    /// Held by the thread whose step is running; a second caller (another thread, or a
    /// part that itself splits) runs its parts on its own thread instead of waiting.
    caller: Mutex<()>,
    /// The threads the worker loops run on (kept for the life of the pool).
    _threads: rayon::ThreadPool,
}

/// The number of threads to use by default: the cores this process may run on.
pub fn available() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Pool {
    /// A pool of `threads` threads (at least 1): the caller and `threads - 1` workers.
    ///
    /// # Errors
    /// The operating system's refusal to start threads, as text.
    pub fn new(threads: usize) -> Result<Self, String> {
        let rayon = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(2) - 1)
            .thread_name(|i| format!("riffle-{i}"))
            .build()
            .map_err(|e| e.to_string())?;
        let mut pool = Pool::from_rayon(rayon);
        pool.threads = threads.max(1);
        Ok(pool)
    }

    /// A pool over a rayon pool built elsewhere (the browser's Web Workers, started by a
    /// spawn handler): each of its threads runs one worker loop for the life of the pool,
    /// and the caller is one more thread.
    pub fn from_rayon(rayon: rayon::ThreadPool) -> Self {
        let workers = rayon.current_num_threads();
        let shared = Arc::new(Shared::default());
        for _ in 0..workers {
            let shared = Arc::clone(&shared);
            rayon.spawn(move || shared.serve());
        }
        Pool {
            shared,
            threads: workers + 1,
            caller: Mutex::new(()),
            _threads: rayon,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake_sleepers();
    }
}

impl Executor for Pool {
    fn threads(&self) -> usize {
        self.threads
    }

    fn for_each(&self, outs: &mut [&mut [f32]], scratch_len: usize, f: &Part<'_>) {
        let run = |i: usize, out: &mut [f32]| {
            SCRATCH.with(|s| match s.try_borrow_mut() {
                Ok(mut s) => {
                    if s.len() < scratch_len {
                        s.resize(scratch_len, 0.0);
                    }
                    f(i, out, &mut s[..scratch_len]);
                }
                // A part that splits again: the thread's scratch is its outer part's.
                Err(_) => f(i, out, &mut vec![0.0; scratch_len]),
            });
        };
        let guard = match self.caller.try_lock() {
            Ok(g) if outs.len() > 1 && outs.len() <= MAX_PARTS && self.threads > 1 => g,
            _ => {
                for (i, out) in outs.iter_mut().enumerate() {
                    run(i, out);
                }
                return;
            }
        };
        let parts: [Slot; MAX_PARTS] = core::array::from_fn(|_| Slot(UnsafeCell::new(None)));
        for (slot, out) in parts.iter().zip(outs.iter_mut()) {
            // SAFETY: the slots are written here, before the step is published, and read
            // after it is, by the one thread that claims each index.
            unsafe { *slot.0.get() = Some(&mut **out as *mut [f32]) };
        }
        let job = |i: usize| {
            // SAFETY: index `i` is claimed by exactly one thread (the compare-and-swap in
            // `Shared::help`, or part 0 kept by the caller), so this is the only
            // reference to `outs[i]` while the step runs; `outs` outlives the step
            // because the caller waits below for every part to finish.
            if let Some(out) = unsafe { *parts[i].0.get() } {
                run(i, unsafe { &mut *out });
            }
        };
        self.shared.run(&job, outs.len());
        drop(guard);
    }
}

/// One output slice of a running step, handed to the thread that claims its index.
struct Slot(UnsafeCell<Option<*mut [f32]>>);

// SAFETY: a slot is written before its step is published and then read by the one thread
// that claims its index (see `Pool::for_each`).
unsafe impl Sync for Slot {}

/// A published step: its parts, run by index.
type Job<'a> = dyn Fn(usize) + Sync + 'a;

/// What the caller and the workers share.
struct Shared {
    /// The step word: `epoch << 32 | parts << 16 | next index to claim`.
    step: AtomicU64,
    /// Parts of the current step that have finished.
    done: AtomicUsize,
    /// The current step's parts; valid from its publication until `done == parts`.
    job: UnsafeCell<Option<*const Job<'static>>>,
    /// A part panicked (its panic is resumed on the caller).
    panicked: AtomicBool,
    stop: AtomicBool,
    sleepers: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the caller holding `Pool::caller` while no step is
// running (every part of the previous step has finished, `done == parts`), and read only
// by a thread that has claimed a part of the step it belongs to (so before `done` can
// reach `parts`); the step word's release/acquire orders the two.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            step: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            park: Mutex::new(()),
            wake: Condvar::new(),
        }
    }
}

impl core::fmt::Debug for Shared {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Shared")
            .field("step", &self.step.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn epoch(word: u64) -> u64 {
    word >> 32
}
fn parts(word: u64) -> usize {
    ((word >> 16) & 0xffff) as usize
}
fn next(word: u64) -> usize {
    (word & 0xffff) as usize
}

impl Shared {
    /// Runs `job(0 .. parts)` on the caller and the workers; returns when all are done.
    fn run(&self, job: &Job<'_>, parts: usize) {
        // SAFETY: the lifetime is erased for the workers' sake only: they call `job`
        // solely for parts they claimed from this step, all of which finish before this
        // function returns (it waits for `done == parts`).
        let job: *const Job<'static> =
            unsafe { core::mem::transmute::<&Job<'_>, &'static Job<'static>>(job) };
        // SAFETY: no step is running (see `Sync for Shared`).
        unsafe { *self.job.get() = Some(job) };
        self.done.store(0, Ordering::Relaxed);
        let word = self.step.load(Ordering::Relaxed);
        let epoch = (epoch(word) + 1) & 0xffff_ffff;
        // Index 0 is the caller's.
        self.step
            .store(epoch << 32 | (parts as u64) << 16 | 1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.wake_sleepers();
        }
        self.call(0);
        self.help(epoch);
        let mut spins = 0u32;
        while self.done.load(Ordering::Acquire) < parts {
            pause(&mut spins);
        }
        if self.panicked.swap(false, Ordering::Relaxed) {
            resume_unwind(Box::new("a part of a parallel step panicked"));
        }
    }

    /// Runs part `i` of the current step and counts it done.
    fn call(&self, i: usize) {
        // SAFETY: a part of the current step is claimed, so `job` is this step's.
        if let Some(job) = unsafe { *self.job.get() } {
            // SAFETY: valid until `done == parts`, which needs this part's count below.
            let job = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| job(i))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
        }
        self.done.fetch_add(1, Ordering::Release);
    }

    /// Claims and runs parts of step `epoch` until none is left unclaimed.
    fn help(&self, epoch: u64) {
        let mut word = self.step.load(Ordering::Acquire);
        while self::epoch(word) == epoch && next(word) < parts(word) {
            match self.step.compare_exchange_weak(
                word,
                word + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.call(next(word));
                    word = self.step.load(Ordering::Acquire);
                }
                Err(now) => word = now,
            }
        }
    }

    /// A worker's life: wait for a step, help with it, repeat until the pool is dropped.
    fn serve(&self) {
        let mut seen = epoch(self.step.load(Ordering::Acquire));
        loop {
            let mut spins = 0u32;
            let mut word = self.step.load(Ordering::Acquire);
            while epoch(word) == seen {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                if spins < SPINS + YIELDS {
                    pause(&mut spins);
                } else {
                    self.sleep(seen);
                    spins = 0;
                }
                word = self.step.load(Ordering::Acquire);
            }
            seen = epoch(word);
            self.help(seen);
        }
    }

    /// Parks until a step newer than `seen` is published (or the pool stops).
    fn sleep(&self, seen: u64) {
        let mut guard = self.park.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        while epoch(self.step.load(Ordering::SeqCst)) == seen && !self.stop.load(Ordering::SeqCst) {
            guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    fn wake_sleepers(&self) {
        // Taking the lock orders this wake-up after a parking worker's check.
        let _guard = self.park.lock();
        self.wake.notify_all();
    }
}

/// One wait step: a spin hint at first, then yielding the core (so that a pool with more
/// threads than cores still lets the thread being waited for run).
fn pause(spins: &mut u32) {
    if *spins < SPINS {
        core::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
    *spins = spins.saturating_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(pool: &Pool, parts: usize, len: usize) -> Vec<Vec<f32>> {
        let mut bufs = vec![vec![0.0f32; len]; parts];
        let mut outs: Vec<&mut [f32]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        pool.for_each(&mut outs, 8, &|i, out, scratch| {
            scratch.fill(i as f32);
            for (j, o) in out.iter_mut().enumerate() {
                *o = (i * 1000 + j) as f32 + scratch[7];
            }
        });
        bufs
    }

    fn expected(parts: usize, len: usize) -> Vec<Vec<f32>> {
        (0..parts)
            .map(|i| (0..len).map(|j| (i * 1000 + j + i) as f32).collect())
            .collect()
    }

    #[test]
    fn every_part_runs_once_for_every_count() {
        for threads in [1, 2, 3, 7] {
            let pool = Pool::new(threads).unwrap();
            for parts in [0, 1, 2, 3, 5, 7, 16, MAX_PARTS] {
                for _ in 0..50 {
                    assert_eq!(filled(&pool, parts, 33), expected(parts, 33));
                }
            }
        }
    }

    #[test]
    fn callers_on_several_threads_share_one_pool() {
        let pool = Pool::new(3).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for k in 0..200 {
                        let parts = 1 + k % 6;
                        assert_eq!(filled(&pool, parts, 17), expected(parts, 17));
                    }
                });
            }
        });
    }

    #[test]
    fn a_part_may_split_again() {
        let pool = Pool::new(2).unwrap();
        let mut a = [0.0f32; 4];
        let mut b = [0.0f32; 4];
        let mut outs: [&mut [f32]; 2] = [&mut a, &mut b];
        pool.for_each(&mut outs, 0, &|i, out, _| {
            let (x, y) = out.split_at_mut(2);
            let mut inner: [&mut [f32]; 2] = [x, y];
            pool.for_each(&mut inner, 0, &|k, o, _| o.fill((10 * i + k) as f32));
        });
        assert_eq!(a, [0.0, 0.0, 1.0, 1.0]);
        assert_eq!(b, [10.0, 10.0, 11.0, 11.0]);
    }

    #[test]
    fn a_panicking_part_reaches_the_caller_and_the_pool_goes_on() {
        let pool = Pool::new(2).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            let mut bufs = [[0.0f32; 2]; 4];
            let mut outs: Vec<&mut [f32]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            pool.for_each(&mut outs, 0, &|i, _, _| assert!(i != 3, "part 3 fails"));
        }));
        assert!(r.is_err());
        assert_eq!(filled(&pool, 4, 5), expected(4, 5));
    }

    #[test]
    fn idle_workers_park_and_wake() {
        let pool = Pool::new(2).unwrap();
        assert_eq!(filled(&pool, 2, 3), expected(2, 3));
        // The worker passes its spins and yields, then parks (give a loaded machine time).
        let start = std::time::Instant::now();
        while pool.shared.sleepers.load(Ordering::SeqCst) != 1 {
            assert!(
                start.elapsed().as_secs() < 30,
                "the idle worker never parked"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(filled(&pool, 2, 3), expected(2, 3));
        drop(pool);
    }
}
