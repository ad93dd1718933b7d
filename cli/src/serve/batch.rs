//! Continuous batching across adapters: one thread computes every request's steps. The
//! next tokens of all the requests that are decoding go in one step (`Model::decode_steps`),
//! each under its own adapter, so the base's weights are read once per step for all of
//! them instead of once per request; between two such steps it reads one chunk of one
//! waiting prompt. Only this thread uses the process's thread pool, so each step gets
//! every core (requests computed on their own threads take turns at the pool instead).
//! Request threads tokenize, sample and stream.
//!
//! A request's state moves to the batch thread for its step and back (no shared mutable
//! memory), and every row of logits is bit for bit the request's own step: answers do not
//! depend on which requests ran beside them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use riffle_core::runtime::{DecodeStep, DecoderState, Model, Prepared, MAX_STEPS};
use riffle_core::Error;

use super::registry::Entry;

/// Longest the batch thread waits, after a first token arrived, for the other decoding
/// requests' tokens (each samples its token and sends its text between two steps).
const GATHER: Duration = Duration::from_millis(3);

/// One request's step, waiting for the batch thread: a generated token, or a chunk of its
/// prompt.
struct Job {
    adapter: Option<Arc<Entry>>,
    state: DecoderState<'static>,
    tokens: Vec<u32>,
    logits: Vec<f32>,
    reply: mpsc::SyncSender<Done>,
}

/// A job's state and logits back, with the step's result.
struct Done {
    state: DecoderState<'static>,
    logits: Vec<f32>,
    result: Result<(), Error>,
}

/// Steps waiting, and how many requests are generating (each sends one step at a time).
struct Queue {
    jobs: Vec<Job>,
    decoding: usize,
}

/// The batch thread's inbox; see the module's text.
pub struct Batcher {
    queue: Mutex<Queue>,
    ready: Condvar,
    max: usize,
    /// Steps run, and tokens decoded in them (their ratio: the mean batch).
    pub steps: AtomicU64,
    /// Tokens decoded by the batch thread.
    pub tokens: AtomicU64,
}

impl Batcher {
    /// Starts the batch thread for `model`: at most `max` requests decoded per step (at
    /// most [`MAX_STEPS`]), prompts read in chunks of at most `chunk` tokens.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start(
        model: &'static Model<'static>,
        max: usize,
        chunk: usize,
    ) -> std::io::Result<Arc<Self>> {
        let batcher = Arc::new(Batcher {
            queue: Mutex::new(Queue {
                jobs: Vec::new(),
                decoding: 0,
            }),
            ready: Condvar::new(),
            max: max.clamp(1, MAX_STEPS),
            steps: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
        });
        let b = Arc::clone(&batcher);
        std::thread::Builder::new()
            .name("riffle-decode".into())
            .spawn(move || b.run(model, chunk))?;
        Ok(batcher)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request's handle on the batch thread, under `adapter` (`None`: the bare base). It
    /// joins the generating requests at its first [`Decoding::step`] and leaves when
    /// dropped.
    pub fn join(self: &Arc<Self>, adapter: Option<Arc<Entry>>, vocab: usize) -> Decoding {
        Decoding {
            batcher: Arc::clone(self),
            adapter,
            logits: vec![0.0; vocab],
            joined: false,
        }
    }

    /// The batch thread: waits for a step, gathers the other generating requests' (at
    /// most [`GATHER`]), decodes the generated tokens together and hands their states
    /// back, then reads one waiting prompt chunk.
    fn run(&self, model: &'static Model<'static>, chunk: usize) {
        let mut out = vec![0.0f32; self.max * model.output_len()];
        let mut arena = vec![0.0f32; model.decode_steps_arena_len(self.max)];
        let mut one = vec![0.0f32; model.step_arena_len(chunk.max(1))];
        loop {
            let (mut tokens, prompt) = {
                let mut q = self.lock();
                while q.jobs.is_empty() {
                    q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                let first = Instant::now();
                while q.jobs.len() < q.decoding {
                    let Some(left) = GATHER.checked_sub(first.elapsed()) else {
                        break;
                    };
                    q = self
                        .ready
                        .wait_timeout(q, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                // Every waiting generated token (up to `max`), and the oldest prompt chunk.
                let mut tokens = Vec::new();
                let mut prompt = None;
                let mut i = 0;
                while i < q.jobs.len() {
                    let is_token = q.jobs[i].tokens.len() == 1;
                    if is_token && tokens.len() < self.max {
                        tokens.push(q.jobs.remove(i));
                    } else if !is_token && prompt.is_none() {
                        prompt = Some(q.jobs.remove(i));
                    } else {
                        i += 1;
                    }
                }
                (tokens, prompt)
            };
            if !tokens.is_empty() {
                let n = tokens.len() as u64;
                let results = catch_unwind(AssertUnwindSafe(|| {
                    decode(model, &mut tokens, (&mut out, &mut arena, &mut one))
                }))
                .unwrap_or_else(|_| vec![Err(Error::BadInput); tokens.len()]);
                self.steps.fetch_add(1, Ordering::Relaxed);
                self.tokens.fetch_add(n, Ordering::Relaxed);
                reply(tokens, results);
            }
            if let Some(mut job) = prompt {
                let result = catch_unwind(AssertUnwindSafe(|| {
                    decode(
                        model,
                        std::slice::from_mut(&mut job),
                        (&mut out, &mut arena, &mut one),
                    )
                }))
                .unwrap_or_else(|_| vec![Err(Error::BadInput)]);
                reply(vec![job], result);
            }
        }
    }
}

/// Hands every job's state and logits back with its result (a request that went away takes
/// nothing back).
fn reply(jobs: Vec<Job>, results: Vec<Result<(), Error>>) {
    for (job, result) in jobs.into_iter().zip(results) {
        let done = Done {
            state: job.state,
            logits: job.logits,
            result,
        };
        let _ = job.reply.send(done);
    }
}

/// Runs `jobs` (one step each) and writes each one's logits into its buffer; one result
/// per job. Several (one token each) go through `decode_steps`; one, or a batch that fails
/// as a whole, step by step, each with its own result.
fn decode(
    model: &'static Model<'static>,
    jobs: &mut [Job],
    (out, arena, one): (&mut [f32], &mut [f32], &mut [f32]),
) -> Vec<Result<(), Error>> {
    let vocab = model.output_len();
    let entries: Vec<Option<Arc<Entry>>> = jobs.iter().map(|j| j.adapter.clone()).collect();
    let adapters: Vec<Option<&Prepared<'_, '_>>> = entries
        .iter()
        .map(|e| e.as_deref().map(Entry::prepared))
        .collect();
    let model: &Model<'_> = model;
    if jobs.len() > 1 {
        let mut steps: Vec<DecodeStep<'_, '_, '_, '_>> = jobs
            .iter_mut()
            .zip(&adapters)
            .map(|(j, a)| DecodeStep {
                adapter: *a,
                state: &mut j.state,
                token: j.tokens[0],
            })
            .collect();
        let r = crate::threads::decode_steps(model, &mut steps, out, arena);
        if r.is_ok() {
            for (j, row) in jobs.iter_mut().zip(out.chunks_exact(vocab)) {
                j.logits.copy_from_slice(row);
            }
            return vec![Ok(()); jobs.len()];
        }
    }
    jobs.iter_mut()
        .zip(&adapters)
        .map(|(j, a)| {
            crate::threads::step(model, *a, &mut j.state, &j.tokens, &mut j.logits, one).map(|_| ())
        })
        .collect()
}

/// One request's part in the batch ([`Batcher::join`]).
pub struct Decoding {
    batcher: Arc<Batcher>,
    adapter: Option<Arc<Entry>>,
    logits: Vec<f32>,
    joined: bool,
}

impl Decoding {
    /// Reads `tokens` into `state` on the batch thread (one token: with the other
    /// requests' next tokens) and writes the logits of the token after them into
    /// `logits`, as `Session::step` would with this request's adapter.
    ///
    /// # Errors
    /// The step's error, with the state back and holding the positions it held
    /// ([`Error::BadInput`] if the step panicked); [`Error::BadInput`] if the batch
    /// thread is gone, and then the state is not back: `state` is left empty (no
    /// context), so the slot's next request fails instead of reading another's cache.
    pub fn step(
        &mut self,
        state: &mut DecoderState<'static>,
        tokens: &[u32],
        logits: &mut [f32],
    ) -> Result<(), Error> {
        let empty: &'static mut [f32] = &mut [];
        let placeholder = DecoderState::new(empty, 0, 0)?;
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job {
            adapter: self.adapter.clone(),
            state: std::mem::replace(state, placeholder),
            tokens: tokens.to_vec(),
            logits: std::mem::take(&mut self.logits),
            reply,
        };
        {
            let mut q = self.batcher.lock();
            if !self.joined {
                self.joined = true;
                q.decoding += 1;
            }
            q.jobs.push(job);
        }
        self.batcher.ready.notify_one();
        // The batch thread answers every job it takes, even when a step panics.
        let Ok(done) = answer.recv() else {
            return Err(Error::BadInput);
        };
        *state = done.state;
        self.logits = done.logits;
        logits.copy_from_slice(&self.logits);
        done.result
    }
}

impl Drop for Decoding {
    fn drop(&mut self) {
        if self.joined {
            self.batcher.lock().decoding -= 1;
            // A gather waiting for this request's token stops waiting.
            self.batcher.ready.notify_one();
        }
    }
}
