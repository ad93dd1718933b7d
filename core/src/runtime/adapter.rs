//! Orthogonal adapters: parsing, validation against a base, and preparation.
//!
//! Three phases, as in TFLM: [`Adapter::from_bytes`] checks the container, the keys and
//! the CRC-32; [`Adapter::workspace_len`] / [`Adapter::prepare`] check it against a base
//! (base id, every name and shape, divisibility by `b`, no NaN or infinite parameter, no
//! zero scale) **before** writing anything, then compute every Cayley block into a
//! caller-provided workspace. A [`Prepared`] adapter can never fail at run time, and
//! switching between prepared adapters is O(1).
//!
//! The workspace also holds the adapter's slot table (which slots it rotates or scales,
//! and where their blocks lie), [`SLOT_RECORD`] `f32`s for every slot of the base: its
//! capacity follows the model, not a constant.

use heapless::Vec;

use super::slots::{push_indexed, Base, BaseFacts, NameBuf, MAX_SLOTS};
use super::weights::TensorRef;
use crate::gguf::{self, Gguf, StringArray, TensorInfo, TensorType};
use crate::math::{
    prepare_chain, reflectors::ReflectorChain, Chain, ChainSpec, LayerTransform, Permutation,
    Scalars, MAX_FACTORS,
};
use crate::{Error, Result};

/// Slots one adapter may adapt on a model of [`crate::runtime::Model::from_bytes`]: every
/// one of its slots (on a model in caller storage, every one of that model's).
pub const MAX_ADAPTED_SLOTS: usize = MAX_SLOTS;
/// `f32`s of workspace per slot of the base for the adapter's slot table: the offsets of
/// the slot's input chain, output chain and scales, its rows and its columns, and the
/// offset of the input chain's reflector form (the unmerged decoder's, see
/// `Prepared::reflectors_in`; unused outside x86-64 builds, but the same on every target,
/// so that a host computes a target's workspace, as the firmware's build script does),
/// each a `u32` stored as the bits of one `f32`.
pub const SLOT_RECORD: usize = 6;
/// Whether this build keeps reflector forms at all (the only kernel that reads them is
/// x86-64's): elsewhere, firmware included, none of their code or workspace is compiled in.
pub(crate) const REFLECTOR_BUILD: bool = cfg!(all(target_arch = "x86_64", feature = "f16"));
/// Most tensors one adapter may replace (task heads).
pub const MAX_HEAD_TENSORS: usize = 4;

/// The adapter methods of `adapter.orthogonal.method` (informative: the tensors define
/// the transform).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GSOFT: two GS factors on the input side.
    Gsoft,
    /// Double GSOFT: GS chains on both sides.
    DoubleGsoft,
    /// OFT: one block-diagonal factor.
    Oft,
    /// BOFT: butterfly factors.
    Boft,
}

impl Method {
    /// The name stored in the file.
    pub const fn name(self) -> &'static str {
        match self {
            Method::Gsoft => "gsoft",
            Method::DoubleGsoft => "double_gsoft",
            Method::Oft => "oft",
            Method::Boft => "boft",
        }
    }
    fn from_name(s: &str) -> Option<Self> {
        match s {
            "gsoft" => Some(Method::Gsoft),
            "double_gsoft" => Some(Method::DoubleGsoft),
            "oft" => Some(Method::Oft),
            "boft" => Some(Method::Boft),
            _ => None,
        }
    }
}

/// What an adapter tensor is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    OftIn(usize),
    OftOut(usize),
    Scale,
}

/// Splits `T.oft_in.{f}` / `T.oft_out.{f}` / `T.oft_scale` into `(T, role)`. In a name
/// that contains `.oft_in.` (else `.oft_out.`), its last occurrence must be followed by
/// one or two digits that end the name, or the name has no role. Byte comparisons only:
/// no substring search or number parsing from `core` (small on a microcontroller).
fn role_of(name: &str) -> Option<(&str, Role)> {
    if let Some(t) = name.strip_suffix(gguf::TENSOR_OFT_SCALE) {
        return Some((t, Role::Scale));
    }
    let bytes = name.as_bytes();
    for (tag, is_in) in [(gguf::TENSOR_OFT_IN, true), (gguf::TENSOR_OFT_OUT, false)] {
        let tag = tag.as_bytes();
        if !bytes.windows(tag.len()).any(|w| w == tag) {
            continue;
        }
        // The tag ends with '.', so the digits that end the name follow its last
        // occurrence exactly when the tag sits right before them (no later occurrence
        // fits in two digits).
        let digits = bytes
            .iter()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if !(1..=2).contains(&digits) {
            return None;
        }
        let end = bytes.len() - digits;
        let t_end = end.checked_sub(tag.len())?;
        if bytes.get(t_end..end) != Some(tag) {
            return None;
        }
        let f = bytes
            .get(end..)?
            .iter()
            .fold(0usize, |f, &c| f * 10 + usize::from(c - b'0'));
        let t = name.get(..t_end)?;
        return Some((
            t,
            if is_in {
                Role::OftIn(f)
            } else {
                Role::OftOut(f)
            },
        ));
    }
    None
}

/// An adapter file, parsed and checked on its own (container, keys, CRC-32).
#[derive(Debug, Clone)]
pub struct Adapter<'a> {
    gguf: Gguf<'a>,
    method: Method,
    block: usize,
    factors: usize,
    permutation: Permutation,
    base_id: &'a str,
    task: &'a str,
    architecture: &'a str,
    labels: Option<StringArray<'a>>,
}

/// Where one slot's data lives in the workspace: the decoded [`SLOT_RECORD`].
#[derive(Debug, Clone, Copy)]
struct SlotLayout {
    q_in: Option<u32>,
    q_out: Option<u32>,
    scale: Option<u32>,
    rows: u32,
    cols: u32,
    reflectors_in: Option<u32>,
}

/// A record's word for an absent part (a quiet NaN: the offsets and widths stored are
/// below [`MAX_WORD`], finite `f32` bit patterns, so no move between registers can
/// change any of them).
const NONE: u32 = u32::MAX;
/// Bound on the offsets and widths a record stores (the largest finite `f32` pattern).
const MAX_WORD: usize = 0x7F7F_FFFF;

/// Word `k` of record `r` (0, 1, 2: the offsets of the input chain, the output chain
/// and the scales; 3, 4: rows and columns; 5: the offset of the input chain's reflectors).
fn word(r: &[f32], k: usize) -> u32 {
    r.get(k).map_or(NONE, |v| v.to_bits())
}

fn set_word(r: &mut [f32], k: usize, v: u32) {
    if let Some(x) = r.get_mut(k) {
        *x = f32::from_bits(v);
    }
}

impl SlotLayout {
    /// The record `r` (of [`SLOT_RECORD`] `f32`s).
    fn read(r: &[f32]) -> Self {
        let part = |k: usize| Some(word(r, k)).filter(|&v| v != NONE);
        SlotLayout {
            q_in: part(0),
            q_out: part(1),
            scale: part(2),
            rows: word(r, 3),
            cols: word(r, 4),
            reflectors_in: part(5),
        }
    }
    /// True when the adapter rotates or scales the slot.
    fn touched(&self) -> bool {
        self.q_in.is_some() || self.q_out.is_some() || self.scale.is_some()
    }
}

/// A task head tensor that replaces a base tensor while the adapter is active.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    /// Slot whose weight (and bias) are replaced.
    pub slot: usize,
    /// The replacement weight `(rows, cols)`.
    pub weight: TensorRef<'a>,
    /// The replacement bias, if the base slot has one.
    pub bias: Option<TensorRef<'a>>,
    /// Output width of the replacement.
    pub rows: usize,
    /// True when the weight is replaced (else only the bias is, on a slot the adapter may
    /// also rotate: a bias trained alongside the rotation).
    pub replaces_weight: bool,
}

/// A classification head an adapter brings to a text model (`cls.weight`, `cls.bias`),
/// applied to the mean-pooled hidden states (docs/models.md).
#[derive(Debug, Clone, Copy)]
pub struct ClsHead<'a> {
    /// `(labels, hidden)`.
    pub weight: TensorRef<'a>,
    /// `(labels)`, if present.
    pub bias: Option<TensorRef<'a>>,
    /// Number of labels.
    pub rows: usize,
}

/// Optional array of further base ids the adapter binds to (docs/models.md).
pub const KEY_COMPATIBLE_MODEL_IDS: &str = "adapter.compatible_model_ids";

/// Name of a text classification head's weight and bias.
const CLS_WEIGHT: &str = "cls.weight";
const CLS_BIAS: &str = "cls.bias";

/// The plan of an adapter against one base: what goes where in the workspace.
#[derive(Debug, Clone)]
struct Plan<'a> {
    heads: Vec<Head<'a>, MAX_HEAD_TENSORS>,
    cls: Option<ClsHead<'a>>,
    /// Workspace `f32`s holding blocks and scales.
    data_len: usize,
}

impl<'a> Adapter<'a> {
    /// Parses an adapter file and checks its CRC-32 (`riffle.data_crc32`).
    ///
    /// # Errors
    /// Any container error; [`Error::UnsupportedModel`] if `general.type` is not
    /// `adapter` or `adapter.type` not `orthogonal` or the method or permutation is
    /// unknown; [`Error::MissingKey`] / [`Error::WrongValueType`] for the keys of
    /// `docs/format.md`; [`Error::CrcMismatch`]; [`Error::InvalidBlockSize`],
    /// [`Error::InvalidFactorCount`]. Never panics.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self> {
        let g = Gguf::parse(bytes)?;
        if g.get_str(gguf::KEY_TYPE)? != gguf::TYPE_ADAPTER
            || g.get_str(gguf::KEY_ADAPTER_TYPE)? != gguf::ADAPTER_TYPE_ORTHOGONAL
        {
            return Err(Error::UnsupportedModel);
        }
        g.verify_crc()?;
        let method = Method::from_name(g.get_str(gguf::KEY_ORTHOGONAL_METHOD)?)
            .ok_or(Error::UnsupportedModel)?;
        let permutation = Permutation::from_name(g.get_str(gguf::KEY_ORTHOGONAL_PERMUTATION)?)
            .ok_or(Error::UnsupportedModel)?;
        let block = g.get_u32(gguf::KEY_ORTHOGONAL_BLOCK_SIZE)? as usize;
        let factors = g.get_u32(gguf::KEY_ORTHOGONAL_FACTOR_COUNT)? as usize;
        if !(2..=crate::math::MAX_BLOCK_SIZE).contains(&block) {
            return Err(Error::InvalidBlockSize {
                block: block as u32,
            });
        }
        if !(1..=MAX_FACTORS).contains(&factors) {
            return Err(Error::InvalidFactorCount {
                factors: factors as u32,
            });
        }
        let labels = match g.get_strings(gguf::KEY_ADAPTER_LABELS) {
            Err(Error::MissingKey { .. }) => None,
            labels => Some(labels?),
        };
        Ok(Adapter {
            method,
            block,
            factors,
            permutation,
            base_id: g.get_str(gguf::KEY_BASE_MODEL_ID)?,
            task: g.get_str(gguf::KEY_TASK_NAME)?,
            architecture: g.get_str(gguf::KEY_ARCHITECTURE)?,
            labels,
            gguf: g,
        })
    }

    /// The parsed container.
    pub fn gguf(&self) -> &Gguf<'a> {
        &self.gguf
    }
    /// The method named in the file.
    pub fn method(&self) -> Method {
        self.method
    }
    /// Block size `b`.
    pub fn block_size(&self) -> usize {
        self.block
    }
    /// Factors per side `m`.
    pub fn factors(&self) -> usize {
        self.factors
    }
    /// Permutation rule.
    pub fn permutation(&self) -> Permutation {
        self.permutation
    }
    /// `adapter.base_model_id`.
    pub fn base_model_id(&self) -> &'a str {
        self.base_id
    }
    /// `adapter.task_name`.
    pub fn task_name(&self) -> &'a str {
        self.task
    }
    /// True if the adapter may be applied to the base with id `model_id`: its
    /// `adapter.base_model_id`, or one of `adapter.compatible_model_ids` (the same
    /// weights stored as F16 or Q8_0, whose data spans, and so ids, differ).
    pub fn binds_to(&self, model_id: &str) -> bool {
        self.base_id == model_id
            || self
                .gguf
                .get_strings(KEY_COMPATIBLE_MODEL_IDS)
                .is_ok_and(|ids| ids.iter().any(|(_, id)| id == model_id))
    }
    /// Labels of the adapter's own head, if it brings one.
    pub fn labels(&self) -> Option<StringArray<'a>> {
        self.labels
    }
    /// Number of trainable values stored (skew parameters, scales and head tensors).
    pub fn parameter_count(&self) -> usize {
        self.gguf.tensors().map(|t| t.element_count()).sum()
    }

    /// Validates the adapter against `model` and returns the workspace length (`f32`s)
    /// that [`Adapter::prepare`] needs. Ask it on the machine that runs the adapter: on
    /// x86-64 with AVX-512 or AVX2 + F16C, input chains over block-quantized weights also
    /// keep their reflector form (docs/runtime.md, "In a decoder"), so the length depends
    /// on the CPU for such bases (not for `F32` / `F16` ones, which a firmware's build
    /// sizes).
    ///
    /// # Errors
    /// As [`Adapter::prepare`], without touching any buffer.
    pub fn workspace_len(&self, model: &impl Base<'a>) -> Result<usize> {
        let base = model.facts();
        let plan = self.plan(&base)?;
        Ok(table_len(base.slots.len())?
            .saturating_add(plan.data_len)
            .saturating_add(2 * self.block * self.block))
    }

    #[inline(never)] // one copy for its callers (smaller firmware)
    fn spec(&self, n: usize) -> Result<ChainSpec> {
        ChainSpec::new(n, self.block, self.factors, self.permutation)
    }

    /// Checks every tensor against the base and lays out the workspace.
    fn plan(&self, base: &BaseFacts<'_, 'a>) -> Result<Plan<'a>> {
        if self.architecture != base.architecture {
            return Err(Error::UnsupportedModel);
        }
        if !self.binds_to(base.model_id) {
            return Err(Error::BaseMismatch);
        }
        let slots = base.slots;
        // Every name must match the base, every tensor its slot, every side all its
        // factors (reported after the other checks); the length of the blocks and scales.
        let mut data_len = 0usize;
        let mut missing = false;
        let mut heads: Vec<Head<'a>, MAX_HEAD_TENSORS> = Vec::new();
        let mut cls_w: Option<TensorInfo<'a>> = None;
        let mut cls_b: Option<TensorInfo<'a>> = None;
        let hidden = base.pooled_width;
        let np = self.block * (self.block - 1) / 2;
        for t in self.gguf.tensors() {
            let idx = t.index();
            match role_of(t.name()) {
                Some((base_name, role)) => {
                    let slot = slots
                        .index_of(base.gguf, base_name)
                        .ok_or(Error::UnknownTensor { tensor: idx })?;
                    let s = slots.get(slot).ok_or(Error::MissingTensor)?;
                    if !matches!(t.ggml_type(), TensorType::F32 | TensorType::F16) {
                        return Err(Error::UnknownTensorType {
                            tensor: idx,
                            ggml_type: t.ggml_type().ggml_code(),
                        });
                    }
                    let (k, tag, f) = match role {
                        Role::OftIn(f) | Role::OftOut(f) if f >= self.factors => {
                            return Err(Error::ShapeMismatch { tensor: idx })
                        }
                        Role::OftIn(f) => (0, gguf::TENSOR_OFT_IN, f),
                        Role::OftOut(_) if !cfg!(feature = "double-sided") => {
                            return Err(Error::Unsupported { tensor: idx })
                        }
                        Role::OftOut(f) => (1, gguf::TENSOR_OFT_OUT, f),
                        Role::Scale => (2, gguf::TENSOR_OFT_SCALE, 0),
                    };
                    if k == 2 {
                        if t.shape() != [s.rows as u64] {
                            return Err(Error::ShapeMismatch { tensor: idx });
                        }
                        check_values(&t, true)?;
                    } else {
                        let n = if k == 0 { s.cols } else { s.rows };
                        if n % self.block != 0 {
                            return Err(Error::NotDivisible {
                                dim: n as u32,
                                block: self.block as u32,
                            });
                        }
                        self.spec(n)?;
                        if t.shape() != [(n / self.block) as u64, np as u64] {
                            return Err(Error::ShapeMismatch { tensor: idx });
                        }
                        check_values(&t, false)?;
                        // A side counts once (at its factor 0), with all its factors.
                        if f != 0 {
                            missing |= self.factor_tensor(base_name, tag, 0).is_err();
                            continue;
                        }
                        for g in 1..self.factors {
                            missing |= self.factor_tensor(base_name, tag, g).is_err();
                        }
                    }
                    let reflectors = if k == 0 {
                        input_reflector_words(s.weight.ggml_type(), self.spec(s.cols)?)
                    } else {
                        0
                    };
                    data_len = data_len
                        .checked_add(self.part_len(k, s.rows, s.cols)?)
                        .and_then(|n| n.checked_add(reflectors))
                        .filter(|&n| n <= MAX_WORD)
                        .ok_or(Error::CapacityExceeded)?;
                }
                None if hidden.is_some() && (t.name() == CLS_WEIGHT || t.name() == CLS_BIAS) => {
                    // A text classification head (docs/models.md): needs declared labels.
                    let rows = self.labels.map_or(0, |l| l.len()) as u64;
                    let want_w = [rows, hidden.unwrap_or(0) as u64];
                    let ok = rows > 0
                        && t.ggml_type().is_float()
                        && if t.name() == CLS_WEIGHT {
                            t.shape() == want_w
                        } else {
                            t.shape() == [rows]
                        };
                    if !ok {
                        return Err(Error::ShapeMismatch { tensor: idx });
                    }
                    check_values(&t, false)?;
                    if t.name() == CLS_WEIGHT {
                        cls_w = Some(t);
                    } else {
                        cls_b = Some(t);
                    }
                }
                None => {
                    // A replacement of a base tensor (a task head).
                    let (slot, is_bias) = find_head_slot(base, t.name())
                        .ok_or(Error::UnknownTensor { tensor: idx })?;
                    if !cfg!(feature = "heads") {
                        return Err(Error::Unsupported { tensor: idx });
                    }
                    let s = slots.get(slot).ok_or(Error::MissingTensor)?;
                    let is_last = slot + 1 == slots.len();
                    let rows = t.shape().first().copied().unwrap_or(0) as usize;
                    let resized = rows != s.rows;
                    let shape_ok = if is_bias {
                        t.shape().len() == 1
                    } else {
                        t.shape().len() == 2 && t.shape()[1] as usize == s.cols
                    };
                    if !shape_ok || rows == 0 || (resized && !(is_last && self.labels.is_some())) {
                        return Err(Error::ShapeMismatch { tensor: idx });
                    }
                    check_values(&t, false)?;
                    if t.ggml_type() == TensorType::I32 {
                        return Err(Error::UnknownTensorType {
                            tensor: idx,
                            ggml_type: TensorType::I32.ggml_code(),
                        });
                    }
                    let entry = match heads.iter_mut().find(|h| h.slot == slot) {
                        Some(h) => h,
                        None => {
                            heads
                                .push(Head {
                                    slot,
                                    weight: s.weight,
                                    bias: s.bias,
                                    rows: s.rows,
                                    replaces_weight: false,
                                })
                                .map_err(|_| Error::CapacityExceeded)?;
                            heads.last_mut().ok_or(Error::CapacityExceeded)?
                        }
                    };
                    if is_bias {
                        entry.bias = Some(TensorRef::new(&t));
                    } else {
                        entry.weight = TensorRef::new(&t);
                        entry.rows = rows;
                        entry.replaces_weight = true;
                    }
                }
            }
        }
        // Heads: weight and bias must agree; a slot whose weight is replaced is not also
        // rotated (its bias alone may be replaced: a bias trained with the rotation).
        for h in &heads {
            if h.replaces_weight && self.touches(slots.name_of(base.gguf, h.slot))? {
                return Err(Error::RotatedReplacement {
                    tensor: h.weight.index(),
                });
            }
            let cols = slots.get(h.slot).map_or(1, |s| s.cols.max(1));
            let wrows = h.weight.element_count() / cols;
            let brows = h.bias.map_or(wrows, |b| b.element_count());
            if wrows != h.rows || brows != h.rows {
                return Err(Error::ShapeMismatch {
                    tensor: h.weight.index(),
                });
            }
        }
        let cls = match (cls_w, cls_b) {
            (Some(w), b) => Some(ClsHead {
                weight: TensorRef::new(&w),
                bias: b.map(|b| TensorRef::new(&b)),
                rows: w.shape().first().copied().unwrap_or(0) as usize,
            }),
            (None, Some(b)) => return Err(Error::ShapeMismatch { tensor: b.index() }),
            (None, None) => None,
        };
        if hidden.is_some() && self.labels.is_some() && cls.is_none() {
            return Err(Error::MissingTensor);
        }
        if let (Some(l), None) = (&self.labels, &cls) {
            let last = slots.len().saturating_sub(1);
            let rows = heads
                .iter()
                .find(|h| h.slot == last)
                .map_or(base.output_len, |h| h.rows);
            if l.len() != rows {
                return Err(Error::ShapeMismatch { tensor: 0 });
            }
        }
        if missing {
            return Err(Error::MissingTensor);
        }
        Ok(Plan {
            heads,
            cls,
            data_len,
        })
    }

    /// True when the adapter has a chain factor or scales for the base slot `name`.
    fn touches(&self, name: &str) -> Result<bool> {
        let mut tname = NameBuf::new();
        tname.push_str(name).map_err(|_| Error::CapacityExceeded)?;
        tname
            .push_str(gguf::TENSOR_OFT_SCALE)
            .map_err(|_| Error::CapacityExceeded)?;
        if self.gguf.find_tensor(&tname).is_some() {
            return Ok(true);
        }
        for tag in [gguf::TENSOR_OFT_IN, gguf::TENSOR_OFT_OUT] {
            for f in 0..self.factors {
                if self.factor_tensor(name, tag, f).is_ok() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// `f32`s of part `k` (input chain, output chain, scales) of a `rows × cols` slot.
    fn part_len(&self, k: usize, rows: usize, cols: usize) -> Result<usize> {
        Ok(match k {
            0 => self.spec(cols)?.blocks_len(),
            1 => self.spec(rows)?.blocks_len(),
            _ => rows,
        })
    }

    /// Validates the adapter against `model` and computes every Cayley block (and copies
    /// the scales) into `workspace`, whose length [`Adapter::workspace_len`] gives.
    ///
    /// Everything is checked before the workspace is written.
    ///
    /// # Errors
    /// [`Error::UnsupportedModel`] for another architecture; [`Error::BaseMismatch`] when
    /// `adapter.base_model_id` is not the base's id; [`Error::UnknownTensor`] for a name
    /// that matches nothing in the base; [`Error::ShapeMismatch`]; [`Error::NotDivisible`]
    /// when `b` does not divide a side; [`Error::NonFiniteParameter`], [`Error::ZeroScale`];
    /// [`Error::MissingTensor`] for a missing factor; [`Error::BufferTooSmall`] for a short
    /// workspace; [`Error::CapacityExceeded`]; [`Error::Unsupported`] for a task head or an
    /// output-side chain in a build without the `heads` or `double-sided` feature. Never
    /// panics.
    pub fn prepare<'w>(
        &self,
        model: &impl Base<'a>,
        workspace: &'w mut [f32],
    ) -> Result<Prepared<'a, 'w>> {
        let base = model.facts();
        let plan = self.plan(&base)?;
        let table_len = table_len(base.slots.len())?;
        let need = table_len
            .saturating_add(plan.data_len)
            .saturating_add(2 * self.block * self.block);
        if workspace.len() < need {
            return Err(Error::BufferTooSmall {
                needed: need,
                got: workspace.len(),
            });
        }
        let (table, rest) = workspace.split_at_mut(table_len);
        let (data, scratch) = rest.split_at_mut(plan.data_len);
        // Slot by slot, in order: each part present (a chain by its factor 0, which
        // `plan` checked comes with all the others) placed after the last, computed, and
        // recorded in the slot's record.
        let mut off = 0usize;
        for (i, (s, r)) in base
            .slots
            .as_slice()
            .iter()
            .zip(table.chunks_exact_mut(SLOT_RECORD))
            .enumerate()
        {
            if s.rows.max(s.cols) > MAX_WORD {
                return Err(Error::CapacityExceeded);
            }
            let name = base.slots.name_of(base.gguf, i);
            let mut words = [NONE, NONE, NONE, s.rows as u32, s.cols as u32, NONE];
            for (k, (n, tag)) in [
                (s.cols, gguf::TENSOR_OFT_IN),
                (s.rows, gguf::TENSOR_OFT_OUT),
            ]
            .into_iter()
            .enumerate()
            {
                if self.factor_tensor(name, tag, 0).is_err() {
                    continue;
                }
                let spec = self.spec(n)?;
                let mut params: Vec<Scalars<'a>, MAX_FACTORS> = Vec::new();
                for f in 0..self.factors {
                    let t = self.factor_tensor(name, tag, f)?;
                    params
                        .push(scalars_of(&t))
                        .map_err(|_| Error::CapacityExceeded)?;
                }
                let out = data
                    .get_mut(off..off + spec.blocks_len())
                    .ok_or(Error::MissingTensor)?;
                prepare_chain(spec, &params, out, scratch)?;
                words[k] = off as u32;
                off += spec.blocks_len();
                let rw = if k == 0 {
                    input_reflector_words(s.weight.ggml_type(), spec)
                } else {
                    0
                };
                if rw > 0 {
                    let (done, rest) = data.split_at_mut(off);
                    let chain = Chain::new(spec, &done[off - spec.blocks_len()..])?;
                    let words_out = rest.get_mut(..rw).ok_or(Error::MissingTensor)?;
                    // A block that does not factorise keeps the slot on its f32 blocks.
                    if build_reflectors(&chain, words_out) {
                        words[5] = off as u32;
                    }
                    off += rw;
                }
            }
            let mut tname = NameBuf::new();
            tname.push_str(name).map_err(|_| Error::CapacityExceeded)?;
            tname
                .push_str(gguf::TENSOR_OFT_SCALE)
                .map_err(|_| Error::CapacityExceeded)?;
            if let Some(t) = self.gguf.find_tensor(&tname) {
                let out = data
                    .get_mut(off..off + s.rows)
                    .ok_or(Error::MissingTensor)?;
                t.decode_f32(0, out)?;
                words[2] = off as u32;
                off += s.rows;
            }
            for (k, w) in words.into_iter().enumerate() {
                set_word(r, k, w);
            }
        }
        if off != plan.data_len {
            return Err(Error::MissingTensor);
        }
        let data: &'w [f32] = data;
        let table: &'w [f32] = table;
        Ok(Prepared {
            model_id: heapless::String::try_from(base.model_id)
                .map_err(|_| Error::CapacityExceeded)?,
            task: self.task,
            labels: self.labels,
            method: self.method,
            block: self.block,
            factors: self.factors,
            permutation: self.permutation,
            table,
            heads: plan.heads,
            cls: plan.cls,
            data,
            bytes: self.gguf.as_bytes().len(),
            parameters: self.parameter_count(),
            #[cfg(feature = "llama")]
            key: self.state_key(),
        })
    }

    /// FNV-1a over the data CRC-32, the file length and the task name.
    #[cfg(feature = "llama")]
    fn state_key(&self) -> u64 {
        let crc = self.gguf.get_u32(gguf::KEY_DATA_CRC32).unwrap_or(0);
        let len = self.gguf.as_bytes().len() as u64;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let bytes = crc
            .to_le_bytes()
            .into_iter()
            .chain(len.to_le_bytes())
            .chain(self.task.bytes());
        for b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    fn factor_tensor(&self, slot_name: &str, tag: &str, f: usize) -> Result<TensorInfo<'a>> {
        let mut name = NameBuf::new();
        name.push_str(slot_name)
            .map_err(|_| Error::CapacityExceeded)?;
        name.push_str(tag).map_err(|_| Error::CapacityExceeded)?;
        push_indexed(&mut name, "", f, "")?;
        self.gguf.require_tensor(&name)
    }
}

fn scalars_of<'a>(t: &TensorInfo<'a>) -> Scalars<'a> {
    match t.ggml_type() {
        #[cfg(feature = "f16")]
        TensorType::F16 => Scalars::F16Le(t.data()),
        _ => Scalars::F32Le(t.data()),
    }
}

/// Rejects NaN and infinite values (and, for scales, zeros and magnitudes outside
/// [`crate::math::MIN_SCALE`]`..=`[`crate::math::MAX_SCALE`]).
fn check_values(t: &TensorInfo<'_>, is_scale: bool) -> Result<()> {
    for i in 0..t.element_count() {
        let v = t
            .get_f32(i)
            .ok_or(Error::TensorOutOfRange { tensor: t.index() })?;
        if !v.is_finite() {
            return Err(Error::NonFiniteParameter { index: i as u32 });
        }
        if is_scale && v == 0.0 {
            return Err(Error::ZeroScale { index: i as u32 });
        }
        if is_scale && !(crate::math::MIN_SCALE..=crate::math::MAX_SCALE).contains(&v.abs()) {
            return Err(Error::ScaleOutOfRange { index: i as u32 });
        }
    }
    Ok(())
}

/// The slot whose weight or bias is called `name`, and whether it is the bias.
fn find_head_slot(base: &BaseFacts<'_, '_>, name: &str) -> Option<(usize, bool)> {
    base.slots
        .index_of(base.gguf, name)
        .map(|i| (i, false))
        .or_else(|| base.slots.bias_index_of(base.gguf, name).map(|i| (i, true)))
}

/// An adapter validated against one base, with every Cayley block computed: ready to be
/// activated in O(1) (unmerged) or swapped into merged weights.
#[derive(Debug, Clone)]
pub struct Prepared<'a, 'w> {
    model_id: heapless::String<64>,
    task: &'a str,
    labels: Option<StringArray<'a>>,
    method: Method,
    block: usize,
    factors: usize,
    permutation: Permutation,
    /// The slot table ([`SLOT_RECORD`] `f32`s a base slot), in the workspace.
    table: &'w [f32],
    heads: Vec<Head<'a>, MAX_HEAD_TENSORS>,
    cls: Option<ClsHead<'a>>,
    data: &'w [f32],
    bytes: usize,
    parameters: usize,
    #[cfg(feature = "llama")]
    key: u64,
}

impl<'a> Prepared<'a, '_> {
    /// Id of the base it was prepared for.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }
    /// `adapter.task_name`.
    pub fn task_name(&self) -> &'a str {
        self.task
    }
    /// Labels of its head (or `None`: the base's labels apply).
    pub fn labels(&self) -> Option<StringArray<'a>> {
        self.labels
    }
    /// The method named in the file.
    pub fn method(&self) -> Method {
        self.method
    }
    /// Block size `b`.
    pub fn block_size(&self) -> usize {
        self.block
    }
    /// Factors per side `m`.
    pub fn factors(&self) -> usize {
        self.factors
    }
    /// Permutation rule.
    pub fn permutation(&self) -> Permutation {
        self.permutation
    }
    /// Size of the adapter file in bytes.
    pub fn file_bytes(&self) -> usize {
        self.bytes
    }
    /// Stored values (parameters, scales, head tensors).
    pub fn parameter_count(&self) -> usize {
        self.parameters
    }
    /// A key that tells this adapter's decoder states from every other adapter's: a hash
    /// of its file's CRC-32, length and task name ([`crate::runtime::DecoderState`]).
    #[cfg(feature = "llama")]
    pub fn state_key(&self) -> u64 {
        self.key
    }
    /// Number of slots the adapter rotates or scales.
    pub fn adapted_slots(&self) -> usize {
        self.touched_slots().count()
    }
    /// Output width of its head replacement of the last slot, 0 if none.
    pub(crate) fn head_rows(&self) -> usize {
        let cls = self.cls.map_or(0, |c| c.rows);
        self.heads
            .iter()
            .map(|h| h.rows)
            .max()
            .unwrap_or(0)
            .max(cls)
    }
    /// The classification head it brings to a text model, if any.
    pub fn cls_head(&self) -> Option<ClsHead<'a>> {
        self.cls
    }
    /// Its replacement of slot `slot`, if any.
    pub fn head(&self, slot: usize) -> Option<&Head<'a>> {
        if !cfg!(feature = "heads") {
            return None;
        }
        self.heads.iter().find(|h| h.slot == slot)
    }
    /// Slot `slot`'s record in the slot table.
    fn layout(&self, slot: usize) -> Option<SlotLayout> {
        self.table
            .get(slot * SLOT_RECORD..(slot + 1) * SLOT_RECORD)
            .map(SlotLayout::read)
    }
    /// The shape of its chains on a side `n` wide.
    fn chain_spec(&self, n: u32) -> Result<ChainSpec> {
        ChainSpec::new(n as usize, self.block, self.factors, self.permutation)
    }
    /// The transform of slot `slot` (identity for slots it does not touch).
    pub fn transform(&self, slot: usize) -> LayerTransform<'_> {
        let Some(l) = self.layout(slot) else {
            return LayerTransform::IDENTITY;
        };
        let chain = |at: Option<u32>, n: u32| -> Option<Chain<'_>> {
            let at = at? as usize;
            Chain::new(self.chain_spec(n).ok()?, self.data.get(at..)?).ok()
        };
        LayerTransform {
            q_in: chain(l.q_in, l.cols),
            q_out: if cfg!(feature = "double-sided") {
                chain(l.q_out, l.rows)
            } else {
                None
            },
            scale: l
                .scale
                .and_then(|at| self.data.get(at as usize..(at + l.rows) as usize))
                .map(Scalars::F32),
        }
    }
    /// The reflector form of slot `slot`'s input chain (half-precision Householder
    /// reflectors, 3.6x fewer bytes than its `f32` blocks: what a decoder's token step
    /// rotates with, docs/runtime.md), kept for slots on block-quantized weights on
    /// x86-64; `None` otherwise.
    pub(crate) fn reflectors_in(&self, slot: usize) -> Option<ReflectorChain<'_>> {
        if !REFLECTOR_BUILD {
            return None;
        }
        let l = self.layout(slot)?;
        let at = l.reflectors_in? as usize;
        let spec = self.chain_spec(l.cols).ok()?;
        let words = self.data.get(at..at + reflector_words(spec))?;
        ReflectorChain::new(spec, bytemuck::cast_slice(words))
    }
    /// Slots it touches (rotates, scales) in forward order.
    pub(crate) fn touched_slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.table
            .chunks_exact(SLOT_RECORD)
            .enumerate()
            .filter(|(_, r)| SlotLayout::read(r).touched())
            .map(|(i, _)| i)
    }
}

/// Whether an input chain on weights of type `t` also keeps its reflector form
/// ([`ReflectorChain`]): on block-quantized weights (a decoder's token step, whose block
/// kernels quantize the rotated input to 8 bits, far coarser than the reflectors'
/// halves), in x86-64 builds with half support on a CPU with AVX-512 or AVX2 + F16C (the
/// kernels that read them: elsewhere no workspace is spent on them).
fn keeps_reflectors(t: TensorType) -> bool {
    REFLECTOR_BUILD && t.block_len() > 1 && crate::math::gemm::reflectors_available()
}

/// Workspace `f32`s an input chain of `spec` over weights of type `t` adds for its
/// reflector form: what `plan` counts and `prepare` fills, from one rule.
fn input_reflector_words(t: TensorType, spec: ChainSpec) -> usize {
    if keeps_reflectors(t) {
        reflector_words(spec)
    } else {
        0
    }
}

/// `f32` words holding the [`ReflectorChain`] of `spec` (two halves a word; 0 for a
/// shape without one).
fn reflector_words(spec: ChainSpec) -> usize {
    if ReflectorChain::supported(spec) {
        ReflectorChain::len(spec).div_ceil(2)
    } else {
        0
    }
}

/// Factorises `chain` into `words` (two halves each); `false` when a block does not
/// factorise or the build has no halves.
fn build_reflectors(chain: &Chain<'_>, words: &mut [f32]) -> bool {
    #[cfg(feature = "f16")]
    {
        ReflectorChain::build(chain, bytemuck::cast_slice_mut(words))
    }
    #[cfg(not(feature = "f16"))]
    {
        let _ = (chain, words);
        false
    }
}

/// `f32`s of an adapter's slot table on a base of `slots` slots.
fn table_len(slots: usize) -> Result<usize> {
    slots
        .checked_mul(SLOT_RECORD)
        .ok_or(Error::CapacityExceeded)
}

#[cfg(test)]
mod tests {
    use super::{gguf, role_of, Role};

    /// The substring-search reading of the names that `role_of` replaced.
    fn role_of_by_search(name: &str) -> Option<(&str, Role)> {
        if let Some(t) = name.strip_suffix(gguf::TENSOR_OFT_SCALE) {
            return Some((t, Role::Scale));
        }
        for (tag, is_in) in [(gguf::TENSOR_OFT_IN, true), (gguf::TENSOR_OFT_OUT, false)] {
            if let Some(pos) = name.rfind(tag) {
                let digits = &name[pos + tag.len()..];
                if digits.is_empty()
                    || digits.len() > 2
                    || !digits.bytes().all(|c| c.is_ascii_digit())
                {
                    return None;
                }
                let f: usize = digits.parse().ok()?;
                let t = &name[..pos];
                return Some((
                    t,
                    if is_in {
                        Role::OftIn(f)
                    } else {
                        Role::OftOut(f)
                    },
                ));
            }
        }
        None
    }

    #[test]
    fn role_of_matches_the_substring_search() {
        let names = [
            "layers.0.weight.oft_in.0",
            "layers.0.weight.oft_in.15",
            "layers.0.weight.oft_out.1",
            "layers.0.weight.oft_in.",
            "layers.0.weight.oft_in.123",
            "layers.0.weight.oft_in.x1",
            "layers.0.weight.oft_in.1x",
            "layers.0.weight.oft_in.0.oft_out.1",
            "layers.0.weight.oft_out.0.oft_in.1",
            "a.oft_in.1.oft_in.2",
            ".oft_in.7",
            ".oft_out.07",
            "oft_in.7",
            "layers.0.weight.oft_scale",
            ".oft_scale",
            "layers.0.weight",
            "layers.0.weight.oft_in.٣",
            "é.oft_out.9",
            "",
            "9",
            "12",
        ];
        for n in names {
            assert_eq!(role_of(n), role_of_by_search(n), "{n:?}");
        }
    }
}
