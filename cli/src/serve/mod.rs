//! `riffle serve`: an OpenAI-compatible local HTTP server over one base model with an
//! adapter chosen per request (the request's `model` is an adapter's task name, or the
//! base's id for none).
//!
//! - Requests run on blocking threads, at most `--parallel` at once (a semaphore); behind
//!   them a queue of at most `--queue` requests, then `429`; a request that waits longer
//!   than [`QUEUE_TIMEOUT`] gets `503`.
//! - Causal models: one decoder slot per parallel request, made at start-up
//!   (`state_len(--ctx-size)` floats each). A request opens its own `Session` with only its
//!   adapter; a slot keeps the prompt tokens whose keys and values it holds and the
//!   adapter they were computed under, and a later request with the same adapter and
//!   prefix reuses them (whole prefill chunks, so answers stay bit-identical). States are
//!   never reused across adapters (the core refuses: `StaleState`).
//! - Adapters load (`POST /v1/adapters`, only from `--adapter-dir`) and unload
//!   (`DELETE /v1/adapters/{task}`) while requests run: each one owns its bytes and
//!   workspace, and is freed when the last request holding it ends.
//! - A client that disconnects cancels its generation (the stream's receiver is gone).

mod api;
mod batch;
mod metrics;
mod registry;
mod work;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use riffle_core::runtime::{InputKind, Model};
use riffle_core::sample::SamplerConfig;
use riffle_host::chat::ChatTemplate;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use crate::fail::{bad, runtime, Result};
use crate::files::{load_model, Mapped};
use crate::llm::KvBuffer;
use api::ApiError;
use metrics::{Metrics, Usage};
use registry::{Entry, LoadError, Registry};
use work::{Causal, Encoder, Event, GenRequest, Kind, PromptIn, Slot};

/// Longest a request waits in the queue before `503`.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(120);

/// Most texts in one embeddings request.
pub const MAX_EMBED_INPUTS: usize = 256;

/// Arguments of `riffle serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Base model (GGUF).
    #[arg(long, short = 'm', value_name = "M.gguf")]
    pub model: PathBuf,
    /// Adapter resident from the start (GGUF); repeat for several.
    #[arg(long = "adapter", short = 'a', value_name = "A.gguf")]
    pub adapters: Vec<PathBuf>,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests computed at once, one decoder slot each (default: 4); each splits
    /// its dense products across the process's --threads.
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Positions (prompt and answer) of each decoder slot, at most the model's context.
    #[arg(long, default_value_t = 2048, value_name = "TOKENS")]
    pub ctx_size: usize,
    /// Requests that may wait for a worker; more get 429.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub queue: usize,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_body: usize,
    /// Directory that `POST /v1/adapters` loads from (nothing outside it is read);
    /// without it runtime loading is off.
    #[arg(long, value_name = "DIR")]
    pub adapter_dir: Option<PathBuf>,
    /// Most adapters resident at once.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_adapters: usize,
    /// Decode each request on its own instead of every running request's next token
    /// together (the answers are the same either way, bit for bit).
    #[arg(long)]
    pub no_batching: bool,
    #[command(flatten)]
    pub cache: crate::llm::CacheArgs,
}

/// The server's shared state.
struct Server {
    model: &'static Model<'static>,
    model_name: String,
    base_id: String,
    kind: Kind,
    registry: Registry,
    metrics: Metrics,
    permits: Arc<Semaphore>,
    parallel: usize,
    queue_max: usize,
    max_body: usize,
    ids: AtomicU64,
}

type Shared = Arc<Server>;

/// `riffle serve`.
pub fn run(a: ServeArgs) -> Result<()> {
    let map: &'static Mapped = Box::leak(Box::new(Mapped::open(&a.model)?));
    let model: &'static Model<'static> = Box::leak(Box::new(load_model(map.name(), map.bytes())?));
    let base_id = a
        .model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "base".to_string());
    let parallel = a.parallel.unwrap_or(4).clamp(1, 256);
    if a.ctx_size == 0 {
        return Err(bad("--ctx-size", "must be at least 1"));
    }
    let kind = if model.is_causal() {
        let context = a.ctx_size.min(model.max_tokens());
        let template = ChatTemplate::from_gguf(model.gguf()).map_err(|e| bad(map.name(), e))?;
        let mut slots = Vec::with_capacity(parallel);
        let mut bytes = 0;
        for i in 0..parallel {
            let what = format!(
                "--parallel {parallel}: the key/value cache of slot {}",
                i + 1
            );
            let kv = KvBuffer::new(model, context, a.cache.cache_type, &what)?;
            bytes = kv.bytes();
            slots.push(Slot::new(model, context, kv).map_err(|e| runtime(map.name(), e))?);
        }
        eprintln!(
            "riffle serve: {parallel} decoder slots of {context} positions, {:.1} MiB each ({} keys and values)",
            bytes as f64 / (1 << 20) as f64,
            riffle_core::runtime::KvType::from(a.cache.cache_type).name()
        );
        let vocab: Option<Box<dyn work::Vocab>> = match work::BpeVocab::of(model) {
            Ok(v) => Some(Box::new(v)),
            Err(e) => {
                eprintln!(
                    "riffle serve: note: {}: tokenizer not usable ({}); prompts must be token ids and no text comes out",
                    map.name(),
                    crate::fail::describe(e, Some(model.gguf()))
                );
                None
            }
        };
        // With more than one slot, the running requests' tokens are decoded together.
        let batcher = if parallel > 1 && !a.no_batching {
            let b = batch::Batcher::start(model, parallel, work::PREFILL_CHUNK).map_err(|e| {
                bad(
                    "--parallel",
                    format!("cannot start the decoding thread: {e}"),
                )
            })?;
            eprintln!(
                "riffle serve: the running requests' next tokens are decoded together, each under its own adapter (--no-batching: each on its own)"
            );
            Some(b)
        } else {
            None
        };
        Kind::Causal(Box::new(Causal {
            vocab,
            template,
            context,
            slots: std::sync::Mutex::new(slots),
            slot_count: parallel,
            batcher,
        }))
    } else if matches!(model.input_kind(), InputKind::Tokens { .. }) {
        let n = model
            .tokenizer_index_len()
            .map_err(|e| crate::fail::core_bad(map.name(), e, Some(model.gguf())))?;
        let index: &'static mut [u32] = Box::leak(vec![0u32; n].into_boxed_slice());
        let tokenizer = model
            .tokenizer(index)
            .map_err(|e| crate::fail::core_bad(map.name(), e, Some(model.gguf())))?;
        Kind::Encoder(Encoder { tokenizer })
    } else {
        Kind::Other
    };
    let dir = match &a.adapter_dir {
        Some(d) => Some(d.canonicalize().map_err(|e| {
            bad(
                d.display(),
                format!("--adapter-dir: {}", crate::files::io_problem(&e)),
            )
        })?),
        None => None,
    };
    if let Some(d) = &dir {
        if !d.is_dir() {
            return Err(bad(d.display(), "--adapter-dir is not a directory"));
        }
    }
    let registry = Registry::new(dir, a.max_adapters.max(a.adapters.len()));
    for path in &a.adapters {
        let e = registry::load_file(path, model, map.name())?;
        registry.insert(e).map_err(|e| match e {
            LoadError::Duplicate(m) => bad(path.display(), m),
            _ => bad(path.display(), "cannot be made resident"),
        })?;
    }
    let server = Arc::new(Server {
        model,
        model_name: map.name().to_string(),
        base_id,
        kind,
        registry,
        metrics: Metrics::default(),
        permits: Arc::new(Semaphore::new(parallel)),
        parallel,
        queue_max: a.queue,
        max_body: a.max_body,
        ids: AtomicU64::new(1),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(parallel + 8)
        .enable_all()
        .build()
        .map_err(|e| runtime("serve", e))?;
    rt.block_on(serve(server, &a.host, a.port))
}

async fn serve(server: Shared, host: &str, port: u16) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .map_err(|e| bad(format!("{host}:{port}"), crate::files::io_problem(&e)))?;
    let addr: SocketAddr = listener.local_addr().map_err(|e| runtime("serve", e))?;
    if !addr.ip().is_loopback() {
        eprintln!("riffle serve: warning: listening on {addr}, reachable from other machines");
    }
    crate::show::line(format!("riffle serve: listening on http://{addr}"));
    let app = router(server);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| runtime("serve", e))
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn router(server: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/v1/adapters", post(load_adapter).get(list_adapters))
        .route("/v1/adapters/{task}", delete(unload_adapter))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(server)
}

async fn not_found(State(s): State<Shared>) -> Response {
    s.fail(
        "other",
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "unknown_url",
            "no such endpoint",
        ),
    )
}

async fn method_not_allowed(State(s): State<Shared>) -> Response {
    s.fail(
        "other",
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            "this endpoint does not take this method",
        ),
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Decrements a gauge when dropped (also when a request is cancelled while it waits).
struct Gauge<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Server {
    fn fail(&self, endpoint: &'static str, e: ApiError) -> Response {
        self.metrics.error(e.code);
        self.metrics.response(endpoint, e.status.as_u16());
        e.into_response()
    }

    fn ok(&self, endpoint: &'static str, r: impl IntoResponse) -> Response {
        self.metrics.response(endpoint, 200);
        r.into_response()
    }

    async fn body(
        &self,
        req: Request,
    ) -> std::result::Result<serde_json::Map<String, Value>, ApiError> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                format!("the request body is larger than {} bytes", self.max_body),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(req.into_body(), self.max_body)
            .await
            .map_err(|e| {
                // A chunked body past the limit, or a body cut short.
                if declared.is_none() && e.to_string().contains("length limit") {
                    too_large()
                } else {
                    ApiError::invalid(
                        "incomplete_body",
                        None,
                        "the request body could not be read in full",
                    )
                }
            })?;
        api::object(&bytes)
    }

    /// The adapter a request's `model` names (`None`: the bare base).
    fn resolve(&self, model: &str) -> std::result::Result<Option<Arc<Entry>>, ApiError> {
        if let Some(e) = self.registry.get(model) {
            return Ok(Some(e));
        }
        if model == self.base_id || model == "base" {
            return Ok(None);
        }
        let mut ids = vec![self.base_id.clone()];
        ids.extend(self.registry.list().iter().map(|e| e.task.clone()));
        Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "the model `{model}` does not exist (resident: {})",
                ids.join(", ")
            ),
            kind: "invalid_request_error",
            code: "model_not_found",
            param: Some("model".into()),
        })
    }

    /// Waits for a worker: a place in the queue first, `429` when it is full, `503` after
    /// [`QUEUE_TIMEOUT`].
    async fn admit(&self) -> std::result::Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        let waiting = self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        let _g = Gauge(&self.metrics.queued);
        if waiting >= self.queue_max {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "queue_full",
                format!(
                    "the server is busy: {} requests running and {} waiting",
                    self.parallel, self.queue_max
                ),
            ));
        }
        match tokio::time::timeout(QUEUE_TIMEOUT, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "server_overloaded",
                "the server is overloaded: no worker became free in time",
            )),
        }
    }

    /// The metrics label of a request's model: the adapter's task, or the base's id.
    fn label(&self, adapter: Option<&Entry>) -> String {
        adapter.map_or_else(|| self.base_id.clone(), |e| e.task.clone())
    }

    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.ids.fetch_add(1, Ordering::Relaxed))
    }
}

async fn health(State(s): State<Shared>) -> Response {
    s.ok("health", Json(json!({"status": "ok"})))
}

async fn models(State(s): State<Shared>) -> Response {
    let mut data = vec![json!({
        "id": s.base_id,
        "object": "model",
        "created": 0,
        "owned_by": "riffle",
    })];
    for e in s.registry.list() {
        data.push(json!({
            "id": e.task,
            "object": "model",
            "created": 0,
            "owned_by": "riffle",
            "parent": s.base_id,
        }));
    }
    s.ok("models", Json(json!({"object": "list", "data": data})))
}

/// The causal model's tokenizer, or the error a tokenizer endpoint answers without one.
fn vocab_of(s: &Server) -> std::result::Result<&dyn work::Vocab, ApiError> {
    match &s.kind {
        Kind::Causal(c) => c.vocab.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "invalid_request_error",
                "no_tokenizer",
                "this build cannot read this model's tokenizer",
            )
        }),
        _ => Err(ApiError::invalid(
            "unsupported_model",
            None,
            format!("`{}` is not a generative model", s.base_id),
        )),
    }
}

/// `POST /tokenize` (llama.cpp's server): `{"content": text, "with_pieces": bool}` to
/// `{"tokens": [id, ...]}`, or `[{"id", "piece"}, ...]` with pieces (a piece that is not
/// whole UTF-8 is given as its bytes, control tokens as their text). The ids a prompt of
/// that text is read as.
async fn tokenize(State(s): State<Shared>, req: Request) -> Response {
    let answer = async {
        let body = s.body(req).await?;
        let vocab = vocab_of(&s)?;
        let text = api::string(&body, "content")?;
        let ids = vocab
            .encode(&text)
            .map_err(|e| ApiError::invalid("tokenize_error", Some("content"), e))?;
        if !api::boolean(&body, "with_pieces")? {
            return Ok(json!({"tokens": ids}));
        }
        let tokens: Vec<Value> = ids
            .iter()
            .map(|&id| {
                let mut b = Vec::new();
                vocab.text_bytes(id, &mut b);
                let piece = match String::from_utf8(b) {
                    Ok(t) => json!(t),
                    Err(e) => json!(e.into_bytes()),
                };
                json!({"id": id, "piece": piece})
            })
            .collect();
        Ok(json!({"tokens": tokens}))
    };
    match answer.await {
        Ok(v) => s.ok("tokenize", Json(v)),
        Err(e) => s.fail("tokenize", e),
    }
}

/// `POST /detokenize` (llama.cpp's server): `{"tokens": [id, ...]}` to `{"content": text}`
/// (control tokens as their text; bytes that are not whole UTF-8 become U+FFFD).
async fn detokenize(State(s): State<Shared>, req: Request) -> Response {
    let answer = async {
        let body = s.body(req).await?;
        let vocab = vocab_of(&s)?;
        let ids = match body.get("tokens") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_u64().and_then(|v| u32::try_from(v).ok()))
                .collect::<Option<Vec<u32>>>(),
            _ => None,
        }
        .ok_or_else(|| {
            ApiError::invalid(
                "invalid_type",
                Some("tokens"),
                "`tokens` must be an array of token ids",
            )
        })?;
        api::ids_in_vocab(&ids, vocab.len(), "tokens")?;
        Ok(json!({"content": vocab.text(&ids)}))
    };
    match answer.await {
        Ok(v) => s.ok("detokenize", Json(v)),
        Err(e) => s.fail("detokenize", e),
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    let (slots, batched) = match &s.kind {
        Kind::Causal(c) => (
            c.slot_count,
            c.batcher.as_ref().map(|b| {
                use std::sync::atomic::Ordering::Relaxed;
                [b.steps.load(Relaxed), b.tokens.load(Relaxed)]
            }),
        ),
        _ => (0, None),
    };
    let mut text = s.metrics.render(s.registry.list().len(), slots);
    metrics::render_batching(&mut text, batched.unwrap_or_default());
    s.ok(
        "metrics",
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text),
    )
}

async fn list_adapters(State(s): State<Shared>) -> Response {
    let data: Vec<Value> = s
        .registry
        .list()
        .iter()
        .map(|e| {
            json!({
                "id": e.task,
                "object": "adapter",
                "file": e.file,
                "bytes": e.bytes,
                "running": Arc::strong_count(e).saturating_sub(2),
            })
        })
        .collect();
    s.ok("adapters", Json(json!({"object": "list", "data": data})))
}

async fn load_adapter(State(s): State<Shared>, req: Request) -> Response {
    let body = match s.body(req).await {
        Ok(b) => b,
        Err(e) => return s.fail("adapters", e),
    };
    let path = match api::string(&body, "path") {
        Ok(p) => p,
        Err(e) => return s.fail("adapters", e),
    };
    let s2 = s.clone();
    let p2 = path.clone();
    let loaded =
        tokio::task::spawn_blocking(move || s2.registry.load(&p2, s2.model, &s2.model_name)).await;
    let e = match loaded {
        Ok(Ok(e)) => e,
        Ok(Err(err)) => {
            let (status, code, msg) = match err {
                LoadError::Disabled => (
                    StatusCode::FORBIDDEN,
                    "adapter_loading_disabled",
                    "loading adapters at runtime is off (start the server with --adapter-dir)"
                        .to_string(),
                ),
                LoadError::Outside => (
                    StatusCode::FORBIDDEN,
                    "path_outside_adapter_dir",
                    format!("`{path}` is outside the adapter directory"),
                ),
                LoadError::NotFound => (
                    StatusCode::NOT_FOUND,
                    "adapter_file_not_found",
                    format!("no adapter file `{path}` in the adapter directory"),
                ),
                LoadError::Duplicate(m) => (StatusCode::CONFLICT, "adapter_exists", m),
                LoadError::Full(n) => (
                    StatusCode::CONFLICT,
                    "too_many_adapters",
                    format!("{n} adapters are resident already (--max-adapters)"),
                ),
                LoadError::Bad(m) => (StatusCode::BAD_REQUEST, "invalid_adapter", m),
            };
            let mut e = ApiError::new(status, "invalid_request_error", code, msg);
            e.param = Some("path".into());
            return s.fail("adapters", e);
        }
        Err(_) => return s.fail("adapters", ApiError::internal("loading the adapter failed")),
    };
    s.metrics.response("adapters", 201);
    (
        StatusCode::CREATED,
        Json(json!({"id": e.task, "object": "adapter", "file": e.file, "bytes": e.bytes})),
    )
        .into_response()
}

async fn unload_adapter(State(s): State<Shared>, UrlPath(task): UrlPath<String>) -> Response {
    match s.registry.remove(&task) {
        Some(e) => {
            let running = Arc::strong_count(&e).saturating_sub(1);
            s.ok(
                "adapters",
                Json(json!({"id": task, "object": "adapter", "deleted": true, "running": running})),
            )
        }
        None => s.fail(
            "adapters",
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "adapter_not_found",
                format!("no resident adapter has the task `{task}`"),
            ),
        ),
    }
}

/// Which generation endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Completion,
}

impl Api {
    fn endpoint(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Completion => "completions",
        }
    }
}

async fn chat(State(s): State<Shared>, req: Request) -> Response {
    generation(s, req, Api::Chat).await
}

async fn completions(State(s): State<Shared>, req: Request) -> Response {
    generation(s, req, Api::Completion).await
}

/// A checked generation request and how to answer it.
struct Parsed {
    model: String,
    label: String,
    req: GenRequest,
    stream: bool,
    include_usage: bool,
}

fn parse_generation(
    s: &Server,
    body: &serde_json::Map<String, Value>,
    api: Api,
) -> std::result::Result<Parsed, ApiError> {
    let model = api::string(body, "model")?;
    let adapter = s.resolve(&model)?;
    let label = s.label(adapter.as_deref());
    let Kind::Causal(c) = &s.kind else {
        return Err(ApiError::invalid(
            "unsupported_model",
            Some("model"),
            format!(
                "`{}` does not generate text (use /v1/embeddings for encoders)",
                s.base_id
            ),
        ));
    };
    let prompt = match api {
        Api::Chat => PromptIn::Chat(api::messages(body)?),
        Api::Completion => PromptIn::Plain(api::prompt(body)?),
    };
    api::single_choice(body)?;
    api::refuse_unsupported(body)?;
    let logprobs = api::logprobs(body, api == Api::Chat)?;
    let echo = api::boolean(body, "echo")?;
    if echo && api == Api::Chat {
        return Err(ApiError::invalid(
            "unsupported_parameter",
            Some("echo"),
            "`echo` is a parameter of /v1/completions",
        ));
    }
    let adjust = api::logit_adjust(body, c.vocab_len(s.model))?;
    let mut max_tokens = api::integer(body, "max_tokens")?;
    if api == Api::Chat {
        if let Some(m) = api::integer(body, "max_completion_tokens")? {
            max_tokens = Some(m);
        }
    }
    if let Some(m) = max_tokens {
        if m as usize > c.context {
            return Err(ApiError::invalid(
                "invalid_value",
                Some("max_tokens"),
                format!(
                    "`max_tokens` is {m}; the context holds {} tokens",
                    c.context
                ),
            ));
        }
    }
    let temperature = api::number(body, "temperature", 0.0, 2.0)?.unwrap_or(1.0);
    let top_p = api::number(body, "top_p", 0.0, 1.0)?.unwrap_or(1.0);
    if top_p <= 0.0 {
        return Err(ApiError::invalid(
            "invalid_value",
            Some("top_p"),
            "`top_p` must be above 0",
        ));
    }
    let seed = match body.get("seed") {
        None | Some(Value::Null) => work::fresh_seed(),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_i64().map(|v| v as u64))
            .ok_or_else(|| {
                ApiError::invalid("invalid_type", Some("seed"), "`seed` must be an integer")
            })?,
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_type",
                Some("seed"),
                "`seed` must be an integer",
            ))
        }
    };
    let stream = api::boolean(body, "stream")?;
    let include_usage = match body.get("stream_options") {
        Some(Value::Object(o)) => api::boolean(o, "include_usage")?,
        _ => false,
    };
    Ok(Parsed {
        model,
        label,
        req: GenRequest {
            adapter,
            prompt,
            max_tokens: max_tokens.map(|m| m as usize),
            sampler: SamplerConfig {
                temperature: temperature as f32,
                top_k: 0,
                top_p: top_p as f32,
                seed,
            },
            stops: api::stops(body)?,
            return_tokens: api::boolean(body, "return_tokens")?,
            logprobs,
            adjust,
            json_object: api::json_mode(body),
            echo,
            logprob_of_stop: api == Api::Completion,
        },
        stream,
        include_usage,
    })
}

async fn generation(s: Shared, req: Request, api: Api) -> Response {
    let endpoint = api.endpoint();
    let body = match s.body(req).await {
        Ok(b) => b,
        Err(e) => return s.fail(endpoint, e),
    };
    let p = match parse_generation(&s, &body, api) {
        Ok(p) => p,
        Err(e) => return s.fail(endpoint, e),
    };
    let permit = match s.admit().await {
        Ok(p) => p,
        Err(e) => return s.fail(endpoint, e),
    };
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let worker = s.clone();
    let Parsed {
        model,
        label,
        req,
        stream,
        include_usage,
    } = p;
    let req_logprobs = req.logprobs.is_some();
    s.metrics.running.fetch_add(1, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || {
        let _running = Gauge(&worker.metrics.running);
        if let Kind::Causal(c) = &worker.kind {
            // Errors the handler may no longer be there to count.
            if let Some(code @ "client_disconnected") = c.generate(worker.model, &req, &tx) {
                worker.metrics.error(code);
            }
        }
        drop(permit);
    });
    match rx.recv().await {
        Some(Event::Started) => {}
        Some(Event::Failed(e)) => return s.fail(endpoint, e),
        _ => {
            return s.fail(
                endpoint,
                ApiError::internal("the generation ended without an answer"),
            )
        }
    }
    let id = s.next_id(if api == Api::Chat { "chatcmpl" } else { "cmpl" });
    let created = unix_now();
    if stream {
        return stream_response(
            s,
            rx,
            api,
            id,
            created,
            (model, label),
            [include_usage, req_logprobs],
        );
    }
    let mut text = String::new();
    let mut logprobs = Vec::new();
    let mut first = None;
    let done = loop {
        match rx.recv().await {
            Some(Event::Echo(e)) => {
                text = e.text;
                logprobs = e.logprobs;
                first = Some(e.first);
            }
            Some(Event::Piece(p)) => {
                text.push_str(&p.text);
                logprobs.extend(p.logprobs);
            }
            Some(Event::Done(d)) => break d,
            Some(Event::Failed(e)) => return s.fail(endpoint, e),
            Some(Event::Started) => {}
            None => {
                return s.fail(
                    endpoint,
                    ApiError::internal("the generation ended without an answer"),
                )
            }
        }
    };
    s.metrics.finished(&label, usage_of(&done));
    let usage = usage_json(&done);
    let logprobs = if req_logprobs {
        logprobs_json(api, &logprobs, first.as_deref())
    } else {
        Value::Null
    };
    let mut body = match api {
        Api::Chat => json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": logprobs,
                "finish_reason": done.finish,
            }],
            "usage": usage,
        }),
        Api::Completion => json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": done.finish,
            }],
            "usage": usage,
        }),
    };
    if let Some(t) = &done.tokens {
        body["choices"][0]["tokens"] = json!(t);
    }
    s.ok(endpoint, Json(body))
}

/// Text of a token's bytes for OpenAI's `token` fields (a token holding part of a UTF-8
/// character shows U+FFFD there; `bytes` has the exact bytes).
fn token_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `logprobs` object of a choice (or of one streamed chunk) for `entries`: chat's
/// `{"content": [{token, logprob, bytes, top_logprobs}]}` (each item also with the
/// token's `id`, as llama.cpp's server gives it), or the completions API's `{tokens,
/// token_logprobs, top_logprobs}`.
///
/// `first`: an echoed prompt's first token, which comes first with a `null` log
/// probability and alternatives (completions only: chat has no echo).
fn logprobs_json(api: Api, entries: &[work::TokenLogprob], first: Option<&[u8]>) -> Value {
    match api {
        Api::Chat => {
            let item = |id: u32, bytes: &[u8], lp: f64| json!({"id": id, "token": token_text(bytes), "logprob": lp, "bytes": bytes});
            let content: Vec<Value> = entries
                .iter()
                .map(|e| {
                    let mut v = item(e.id, &e.bytes, e.logprob);
                    v["top_logprobs"] = e.top.iter().map(|(i, b, lp)| item(*i, b, *lp)).collect();
                    v
                })
                .collect();
            json!({"content": content, "refusal": null})
        }
        Api::Completion => {
            let lead = first.map(|_| Value::Null);
            let tops: Vec<Value> = lead
                .clone()
                .into_iter()
                .chain(entries.iter().map(|e| {
                    let mut m = serde_json::Map::new();
                    for (_, b, lp) in &e.top {
                        // Two alternatives with the same text keep the likelier.
                        m.entry(token_text(b)).or_insert(json!(lp));
                    }
                    Value::Object(m)
                }))
                .collect();
            let tokens: Vec<String> = first
                .into_iter()
                .chain(entries.iter().map(|e| &e.bytes[..]))
                .map(token_text)
                .collect();
            let values: Vec<Value> = lead
                .into_iter()
                .chain(entries.iter().map(|e| json!(e.logprob)))
                .collect();
            json!({"tokens": tokens, "token_logprobs": values, "top_logprobs": tops})
        }
    }
}

fn usage_of(d: &work::Done) -> Usage {
    Usage {
        prompt_tokens: d.prompt_tokens,
        cached_tokens: d.cached_tokens,
        completion_tokens: d.completion_tokens,
        prompt_seconds: d.prompt_seconds,
        decode_seconds: d.decode_seconds,
    }
}

fn usage_json(d: &work::Done) -> Value {
    json!({
        "prompt_tokens": d.prompt_tokens,
        "completion_tokens": d.completion_tokens,
        "total_tokens": d.prompt_tokens + d.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": d.cached_tokens},
    })
}

/// The server-sent events of a generation: one chunk per piece of text, a last chunk
/// with the finish reason (and one with the usage when asked), then `[DONE]`. When the
/// client goes away the forwarding task ends, the worker's channel closes and the
/// generation stops.
fn stream_response(
    s: Shared,
    mut rx: mpsc::Receiver<Event>,
    api: Api,
    id: String,
    created: u64,
    (model, label): (String, String),
    [include_usage, with_logprobs]: [bool; 2],
) -> Response {
    let (out, out_rx) = mpsc::channel::<std::result::Result<SseEvent, Infallible>>(64);
    let chunk = {
        let (id, model) = (id.clone(), model.clone());
        move |text: Option<&str>,
              logprobs: Option<(&[work::TokenLogprob], Option<&[u8]>)>,
              finish: Option<&str>,
              first: bool|
              -> Value {
            let logprobs = match logprobs {
                Some((entries, lead)) if with_logprobs => logprobs_json(api, entries, lead),
                _ => Value::Null,
            };
            match api {
                Api::Chat => {
                    let mut delta = json!({});
                    if first {
                        delta["role"] = json!("assistant");
                    }
                    if let Some(t) = text {
                        delta["content"] = json!(t);
                    }
                    json!({
                        "id": id, "object": "chat.completion.chunk", "created": created,
                        "model": model,
                        "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
                    })
                }
                Api::Completion => json!({
                    "id": id, "object": "text_completion", "created": created, "model": model,
                    "choices": [{"index": 0, "text": text.unwrap_or(""), "logprobs": logprobs, "finish_reason": finish}],
                }),
            }
        }
    };
    tokio::spawn(async move {
        let endpoint = api.endpoint();
        let send = |v: String| {
            let out = out.clone();
            async move { out.send(Ok(SseEvent::default().data(v))).await.is_ok() }
        };
        if api == Api::Chat && !send(chunk(Some(""), None, None, true).to_string()).await {
            return;
        }
        loop {
            // A client that goes away is noticed even while no text comes.
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                _ = out.closed() => return,
            };
            match ev {
                Some(Event::Piece(p)) => {
                    let c = chunk(Some(&p.text), Some((&p.logprobs, None)), None, false);
                    if !send(c.to_string()).await {
                        return;
                    }
                }
                Some(Event::Echo(e)) => {
                    let lp = Some((&e.logprobs[..], Some(&e.first[..])));
                    if !send(chunk(Some(&e.text), lp, None, false).to_string()).await {
                        return;
                    }
                }
                Some(Event::Started) => {}
                Some(Event::Done(d)) => {
                    s.metrics.finished(&label, usage_of(&d));
                    s.metrics.response(endpoint, 200);
                    let mut last = chunk(None, None, Some(d.finish), false);
                    if let Some(t) = &d.tokens {
                        last["choices"][0]["tokens"] = json!(t);
                    }
                    let _ = send(last.to_string()).await;
                    if include_usage {
                        let u = json!({
                            "id": id, "object": if api == Api::Chat { "chat.completion.chunk" } else { "text_completion" },
                            "created": created, "model": model, "choices": [],
                            "usage": usage_json(&d),
                        });
                        let _ = send(u.to_string()).await;
                    }
                    let _ = send("[DONE]".to_string()).await;
                    return;
                }
                Some(Event::Failed(e)) => {
                    s.metrics.error(e.code);
                    let _ = send(e.body().to_string()).await;
                    return;
                }
                None => return,
            }
        }
    });
    Sse::new(ReceiverStream::new(out_rx)).into_response()
}

async fn embeddings(State(s): State<Shared>, req: Request) -> Response {
    let endpoint = "embeddings";
    let body = match s.body(req).await {
        Ok(b) => b,
        Err(e) => return s.fail(endpoint, e),
    };
    let parsed = (|| {
        let model = api::string(&body, "model")?;
        let adapter = s.resolve(&model)?;
        if !matches!(s.kind, Kind::Encoder(_)) {
            return Err(ApiError::invalid(
                "unsupported_model",
                Some("model"),
                format!(
                    "`{}` is not a text encoder: it has no embeddings",
                    s.base_id
                ),
            ));
        }
        let base64 = match body.get("encoding_format") {
            None | Some(Value::Null) => false,
            Some(Value::String(f)) if f == "float" => false,
            Some(Value::String(f)) if f == "base64" => true,
            Some(_) => {
                return Err(ApiError::invalid(
                    "invalid_value",
                    Some("encoding_format"),
                    "`encoding_format` must be `float` or `base64`",
                ))
            }
        };
        let texts = api::inputs(&body)?;
        if texts.len() > MAX_EMBED_INPUTS {
            return Err(ApiError::invalid(
                "invalid_value",
                Some("input"),
                format!("at most {MAX_EMBED_INPUTS} inputs per request"),
            ));
        }
        let label = s.label(adapter.as_deref());
        Ok((model, label, adapter, texts, base64))
    })();
    let (model, label, adapter, texts, base64) = match parsed {
        Ok(p) => p,
        Err(e) => return s.fail(endpoint, e),
    };
    let permit = match s.admit().await {
        Ok(p) => p,
        Err(e) => return s.fail(endpoint, e),
    };
    let worker = s.clone();
    s.metrics.running.fetch_add(1, Ordering::Relaxed);
    let result = tokio::task::spawn_blocking(move || {
        let _running = Gauge(&worker.metrics.running);
        let _permit = permit;
        let Kind::Encoder(enc) = &worker.kind else {
            return Err(ApiError::invalid(
                "unsupported_model",
                Some("model"),
                "not an encoder",
            ));
        };
        let t0 = std::time::Instant::now();
        let r = match &adapter {
            Some(e) => e.with(|p| work::embed(worker.model, enc, Some(p), &texts)),
            None => work::embed(worker.model, enc, None, &texts),
        };
        r.map(|(v, n)| (v, n, t0.elapsed().as_secs_f64()))
    })
    .await;
    let (vectors, tokens, secs) = match result {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return s.fail(endpoint, e),
        Err(_) => return s.fail(endpoint, ApiError::internal("the embedding failed")),
    };
    s.metrics.finished(
        &label,
        Usage {
            prompt_tokens: tokens,
            prompt_seconds: secs,
            ..Usage::default()
        },
    );
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let e = if base64 {
                json!(base64_f32(v))
            } else {
                crate::show::nums(v)
            };
            json!({"object": "embedding", "index": i, "embedding": e})
        })
        .collect();
    s.ok(
        endpoint,
        Json(json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })),
    )
}

/// Little-endian `f32` bytes in standard base64 (OpenAI's `encoding_format: "base64"`).
fn base64_f32(v: &[f32]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(char::from(ABC[(n >> (18 - 6 * k)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_of_floats() {
        // 1.0f32 = 00 00 80 3F; 1.0, 2.0 = 00 00 80 3F 00 00 00 40.
        assert_eq!(super::base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(super::base64_f32(&[1.0, 2.0]), "AACAPwAAAEA=");
        assert_eq!(super::base64_f32(&[]), "");
    }
}
