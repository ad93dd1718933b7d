//! A `no_std`, allocation-free byte-level BPE tokenizer (GPT-2 style, `tokenizer.ggml.model
//! = gpt2`) that gives the ids of llama.cpp's tokenizer for the `smollm` and `gpt-2`
//! pre-tokenizers.
//!
//! ```
//! use riffle_core::gguf::Gguf;
//! use riffle_core::text::bpe::{BpeTokenizer, StreamDecoder};
//!
//! // A tiny GPT-2 style vocabulary: "Ġ" is the byte-level spelling of a space.
//! // tests/data/gguf/make_bpe_mini.py: ids 0-2 control tokens, 3.. the 256 byte
//! // characters in byte order, then the merge results 259 "Ġh", 260 "Ġhi", 261 "hi", ...
//! let gguf = Gguf::parse(include_bytes!("../../../tests/data/gguf/bpe_mini.gguf"))?;
//! let mut index = vec![0u32; BpeTokenizer::index_len(&gguf)?];
//! let tok = BpeTokenizer::from_gguf(&gguf, &mut index)?;
//!
//! let mut ids = [0u32; 32];
//! let n = tok.encode("<|im_start|>hi hi 42", &mut ids)?;
//! // <|im_start|> "hi" " hi" " " "4" "2" (smollm: every digit on its own)
//! assert_eq!(&ids[..n], &[0, 261, 260, 3 + 0x20, 3 + 0x34, 3 + 0x32]);
//!
//! // Streaming decode: pieces as they complete; control tokens only when asked for.
//! let mut text = String::new();
//! let mut dec = StreamDecoder::new();
//! for &id in &ids[..n] {
//!     dec.push(&tok, id, true, |s| text.push_str(s))?;
//! }
//! dec.finish(|s| text.push_str(s));
//! assert_eq!(text, "<|im_start|>hi hi 42");
//! # Ok::<(), riffle_core::Error>(())
//! ```
//!
//! ## What it does (llama.cpp's `llm_tokenizer_bpe` with `parse_special`)
//!
//! 1. **Special tokens.** Every token whose `tokenizer.ggml.token_type` is control (3),
//!    user-defined (4) or unknown (2) is matched in the raw text, longest token text
//!    first: the text is cut at each occurrence of the longest one, the pieces between
//!    at the next longest, and so on. [`EncodeOptions::parse_special`] `false` matches
//!    only the user-defined ones (llama.cpp's `parse_special = false`).
//! 2. **Pre-tokenizer** (`tokenizer.ggml.pre`), hand-written, no regex engine:
//!    `gpt-2` is GPT-2's pattern `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
//!    ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`; `smollm` first isolates every `\p{N}` code point
//!    and then applies the GPT-2 pattern to each piece (so `" 123"` is `" "`, `"1"`, `"2"`,
//!    `"3"`). Letters and numbers are the general categories L* and N* of Unicode 15.1
//!    (llama.cpp's tables), whitespace the 25 White_Space code points.
//! 3. **Byte-level mapping and merges.** Each word's bytes are spelled with GPT-2's
//!    byte-to-character map (`Ġ` for a space) and merged pair by pair, lowest
//!    `tokenizer.ggml.merges` rank first (leftmost among equals); each resulting
//!    piece is a token; a piece that is not (only in a vocabulary without some merge
//!    result) falls back to one token per byte, as llama.cpp does.
//! 4. A beginning-of-sequence token first only if the file asks for one
//!    (`tokenizer.ggml.add_bos_token`), an end-of-sequence token last only if it asks
//!    (`add_eos_token`); [`EncodeOptions::add_special`] `false` adds neither.
//!
//! Not reproduced: llama.cpp's per-model token attributes set by name (`lstrip` on a
//! `<mask>` of some models, control promotion of FIM tokens), and its `[EMPTY_n]`
//! stand-in for empty token texts (riffle never matches an empty token).
//!
//! ## Memory
//!
//! The vocabulary and merges stay in the GGUF file. The caller provides one `u32`
//! index, [`BpeTokenizer::index_len`] elements (id -> token, two hash tables, the
//! special-token list: 245,149 elements, 958 KiB, for SmolLM2's 49,152 tokens and
//! 48,900 merges). Encoding uses the free tail of the output slice as its merge
//! workspace (see [`BpeTokenizer::encode_with`]) and about 1 KiB of stack; the class
//! table is 6 KiB of read-only data.

use super::bpe_tables::{BPE_CLASSES_VERSION, CLASS_RANGES};
use super::index::{hash_start, hash_step, mix};
use crate::gguf::{
    ArrayView, Gguf, StringArray, KEY_TOKENIZER_ADD_BOS, KEY_TOKENIZER_ADD_EOS,
    KEY_TOKENIZER_BOS_ID, KEY_TOKENIZER_EOS_ID, KEY_TOKENIZER_MODEL, KEY_TOKENIZER_TOKENS,
    KEY_TOKENIZER_TOKEN_TYPE,
};
use crate::{Error, Result};

/// `tokenizer.ggml.model` of a byte-level BPE vocabulary.
pub const TOKENIZER_MODEL_GPT2: &str = "gpt2";
/// Metadata key of the pre-tokenizer name.
pub const KEY_TOKENIZER_PRE: &str = "tokenizer.ggml.pre";
/// Metadata key of the merges (`"left right"` strings, rank = position).
pub const KEY_TOKENIZER_MERGES: &str = "tokenizer.ggml.merges";

/// Unicode version of the letter and number classes (llama.cpp's).
pub const UNICODE_VERSION_BPE: &str = BPE_CLASSES_VERSION;

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
mod token_type {
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const BYTE: i32 = 6;
}

/// The pre-tokenizers this tokenizer implements (`tokenizer.ggml.pre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `gpt-2` (also `phi-2`, `jina-es`, `jina-de`, `gigachat`, `jina-v2-es`,
    /// `jina-v2-de`, `a.x-4.0`, `mellum`, `modern-bert`, `mpt`, `olmo`, `jais`,
    /// `trillion`, `granite-docling`: llama.cpp gives them all GPT-2's pattern).
    Gpt2,
    /// `smollm` (also `starcoder`, `refact`, `command-r`, `codeshell`, `exaone`,
    /// `minerva`, `mellum2`): every `\p{N}` on its own, then GPT-2's pattern.
    Smollm,
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp uses for a `tokenizer.ggml.pre` name, or `None` for
    /// a name this tokenizer does not implement.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais"
            | "trillion" | "granite-docling" => Some(PreTokenizer::Gpt2),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva" | "mellum2" => Some(PreTokenizer::Smollm),
            _ => None,
        }
    }
}

/// What [`BpeTokenizer::encode_with`] does besides the BPE itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Match control and unknown tokens in the text (user-defined tokens are always
    /// matched), as `llama-tokenize` does by default.
    pub parse_special: bool,
    /// Add the beginning- and end-of-sequence tokens the file asks for.
    pub add_special: bool,
}

impl Default for EncodeOptions {
    /// `llama-tokenize`'s defaults: both `true`.
    fn default() -> Self {
        EncodeOptions {
            parse_special: true,
            add_special: true,
        }
    }
}

// ---- character classes --------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

/// White_Space (PropList.txt), llama.cpp's `\s`.
fn is_space(c: char) -> bool {
    matches!(
        c as u32,
        0x09..=0x0D
            | 0x20
            | 0x85
            | 0xA0
            | 0x1680
            | 0x2000..=0x200A
            | 0x2028
            | 0x2029
            | 0x202F
            | 0x205F
            | 0x3000
    )
}

fn class(c: char) -> Class {
    if c.is_ascii() {
        return if c.is_ascii_alphabetic() {
            Class::Letter
        } else if c.is_ascii_digit() {
            Class::Number
        } else if is_space(c) {
            Class::Space
        } else {
            Class::Other
        };
    }
    if is_space(c) {
        return Class::Space;
    }
    let cp = c as u32;
    let i = CLASS_RANGES.partition_point(|&e| (e >> 2) <= cp);
    match i.checked_sub(1).and_then(|j| CLASS_RANGES.get(j)) {
        Some(e) if e & 3 == 1 => Class::Letter,
        Some(e) if e & 3 == 2 => Class::Number,
        _ => Class::Other,
    }
}

// ---- pre-tokenizers -----------------------------------------------------------------

/// The first char of `s` and its class; `None` at the end (llama.cpp's out-of-range
/// position, whose flags are all clear).
fn peek(s: &str) -> Option<(char, Class)> {
    s.chars().next().map(|c| (c, class(c)))
}

/// Byte length of the run of chars of class `k` at the start of `s`.
fn run_len(s: &str, pred: impl Fn(Class) -> bool) -> usize {
    s.char_indices()
        .find(|&(_, c)| !pred(class(c)))
        .map_or(s.len(), |(i, _)| i)
}

/// GPT-2's pattern over `seg` (lookahead never leaves `seg`): calls `word` for every
/// match, in order; the matches cover `seg`.
fn gpt2_words(seg: &str, word: &mut impl FnMut(&str) -> Result<()>) -> Result<()> {
    let mut pos = 0usize;
    while let Some(rest) = seg.get(pos..).filter(|r| !r.is_empty()) {
        let Some((c, k)) = peek(rest) else { break };
        let len = if let Some(n) = contraction(rest) {
            n
        } else {
            let (skip, next) = if c == ' ' {
                (1, rest.get(1..).and_then(peek).map(|(_, k)| k))
            } else {
                (0, Some(k))
            };
            let tail = rest.get(skip..).unwrap_or("");
            match next {
                Some(Class::Letter) => skip + run_len(tail, |k| k == Class::Letter),
                Some(Class::Number) => skip + run_len(tail, |k| k == Class::Number),
                Some(Class::Other) => skip + run_len(tail, |k| k == Class::Other),
                _ => {
                    let n = run_len(rest, |k| k == Class::Space);
                    if n == 0 {
                        c.len_utf8() // unreachable: every char has a class
                    } else if n < rest.len() {
                        // \s+(?!\S): leave the last whitespace char to the next word.
                        let last = rest
                            .get(..n)
                            .and_then(|r| r.chars().next_back())
                            .map_or(1, char::len_utf8);
                        if n > last {
                            n - last
                        } else {
                            n
                        }
                    } else {
                        n
                    }
                }
            }
        };
        let end = (pos + len).min(seg.len());
        if let Some(w) = seg.get(pos..end) {
            word(w)?;
        }
        pos = end;
    }
    Ok(())
}

/// `'s|'t|'re|'ve|'m|'ll|'d` at the start of `s`: its byte length.
fn contraction(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() != Some(&b'\'') {
        return None;
    }
    match (b.get(1), b.get(2)) {
        (Some(b's' | b't' | b'm' | b'd'), _) => Some(2),
        (Some(b'r'), Some(b'e')) | (Some(b'v'), Some(b'e')) | (Some(b'l'), Some(b'l')) => Some(3),
        _ => None,
    }
}

/// Runs the pre-tokenizer over `text` (no special tokens in it).
fn pre_tokenize(
    pre: PreTokenizer,
    text: &str,
    word: &mut impl FnMut(&str) -> Result<()>,
) -> Result<()> {
    match pre {
        PreTokenizer::Gpt2 => gpt2_words(text, word),
        PreTokenizer::Smollm => {
            let mut start = 0usize;
            for (i, c) in text.char_indices() {
                if class(c) == Class::Number {
                    if let Some(seg) = text.get(start..i).filter(|s| !s.is_empty()) {
                        gpt2_words(seg, word)?;
                    }
                    let end = i + c.len_utf8();
                    if let Some(digit) = text.get(i..end) {
                        word(digit)?;
                    }
                    start = end;
                }
            }
            match text.get(start..).filter(|s| !s.is_empty()) {
                Some(seg) => gpt2_words(seg, word),
                None => Ok(()),
            }
        }
    }
}

// ---- GPT-2's byte <-> character map --------------------------------------------------

/// The character GPT-2's byte-level BPE spells byte `b` with: printable Latin-1 bytes
/// (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) as themselves, the other 68 as U+0100.. in order.
const fn byte_char(b: u8) -> u32 {
    let b32 = b as u32;
    if (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE {
        return b32;
    }
    // Count the non-printable bytes below b.
    let mut n = 0u32;
    let mut i = 0u32;
    while i < b32 {
        let p = (i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || i >= 0xAE;
        if !p {
            n += 1;
        }
        i += 1;
    }
    256 + n
}

/// UTF-8 of [`byte_char`] for every byte: `(len, [b0, b1])`.
static BYTE_UTF8: [(u8, [u8; 2]); 256] = {
    let mut t = [(0u8, [0u8; 2]); 256];
    let mut b = 0usize;
    while b < 256 {
        let c = byte_char(b as u8);
        t[b] = if c < 0x80 {
            (1, [c as u8, 0])
        } else {
            (2, [0xC0 | (c >> 6) as u8, 0x80 | (c & 0x3F) as u8])
        };
        b += 1;
    }
    t
};

/// The inverse of [`byte_char`]: `Some(byte)` for one of the 256 characters.
fn char_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 0x100 {
        let b = cp as u8;
        return (byte_char(b) == cp).then_some(b);
    }
    let n = cp.checked_sub(256)?;
    let mut seen = 0u32;
    for b in 0..=255u8 {
        if byte_char(b) >= 256 {
            if seen == n {
                return Some(b);
            }
            seen += 1;
        }
    }
    None
}

/// Feeds the byte-level spelling of `raw` into a running hash.
fn hash_spelled(mut h: u32, raw: &[u8]) -> u32 {
    for &b in raw {
        if let Some(&(len, enc)) = BYTE_UTF8.get(usize::from(b)) {
            for &e in enc.iter().take(usize::from(len)) {
                h = hash_step(h, e);
            }
        }
    }
    h
}

/// Does `stored` start with the byte-level spelling of `raw`? Returns the rest.
fn strip_spelled<'s>(stored: &'s [u8], raw: &[u8]) -> Option<&'s [u8]> {
    let mut at = 0usize;
    for &b in raw {
        let &(len, enc) = BYTE_UTF8.get(usize::from(b))?;
        let len = usize::from(len);
        if stored.get(at..at + len)? != enc.get(..len)? {
            return None;
        }
        at += len;
    }
    stored.get(at..)
}

// ---- the index ----------------------------------------------------------------------

/// Slots of a hash table for `n` keys (load factor at most 2/3).
const fn slots(n: usize) -> usize {
    n.saturating_add(n / 2).saturating_add(1)
}

#[derive(Debug, Clone, Copy)]
struct Table<'i> {
    words: &'i [u32],
    bits: u32,
}

impl Table<'_> {
    fn tag(&self, m: u32) -> u32 {
        if self.bits >= 32 {
            0
        } else {
            m & (u32::MAX >> self.bits)
        }
    }
    fn value_mask(&self) -> u32 {
        if self.bits >= 32 {
            u32::MAX
        } else {
            (1u32 << self.bits) - 1
        }
    }
    fn home(&self, m: u32) -> usize {
        ((u128::from(m) * self.words.len() as u128) >> 32) as usize
    }
    /// Candidate values (0-based) for hash `h`, in probe order, until `f` accepts one.
    fn find(&self, h: u32, mut accept: impl FnMut(u32) -> bool) -> Option<u32> {
        let m = mix(h);
        let tag = self.tag(m);
        let n = self.words.len();
        let mut slot = self.home(m);
        for _ in 0..n {
            let w = *self.words.get(slot)?;
            if w == 0 {
                return None;
            }
            let wtag = if self.bits >= 32 { 0 } else { w >> self.bits };
            if wtag == tag {
                if let Some(v) = (w & self.value_mask()).checked_sub(1) {
                    if accept(v) {
                        return Some(v);
                    }
                }
            }
            slot = if slot + 1 >= n { 0 } else { slot + 1 };
        }
        None
    }
}

/// Inserts value `v` under hash `h` into `words` unless `same(existing)` says a value
/// with the same key is there (first one wins). Returns false when the table is full.
fn insert(words: &mut [u32], bits: u32, h: u32, v: u32, mut same: impl FnMut(u32) -> bool) -> bool {
    let t = Table { words: &[], bits };
    let m = mix(h);
    let tag = t.tag(m);
    let n = words.len();
    let mut slot = ((u128::from(m) * n as u128) >> 32) as usize;
    for _ in 0..n {
        let Some(&w) = words.get(slot) else {
            return false;
        };
        if w == 0 {
            if let Some(x) = words.get_mut(slot) {
                *x = tag.checked_shl(bits).unwrap_or(0) | (v + 1);
            }
            return true;
        }
        let wtag = if bits >= 32 { 0 } else { w >> bits };
        if wtag == tag {
            if let Some(old) = (w & t.value_mask()).checked_sub(1) {
                if same(old) {
                    return true;
                }
            }
        }
        slot = if slot + 1 >= n { 0 } else { slot + 1 };
    }
    false
}

fn value_bits(count: usize) -> u32 {
    // Values are stored + 1: room for `count` itself.
    usize::BITS - count.leading_zeros()
}

/// The tokenizer metadata of a GGUF `gpt2` file, read but not indexed.
#[derive(Debug, Clone, Copy)]
struct Meta<'a> {
    tokens: StringArray<'a>,
    merges: StringArray<'a>,
    types: Option<ArrayView<'a>>,
    pre: PreTokenizer,
    n_special: usize,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
}

fn optional_u32(gguf: &Gguf<'_>, key: &'static str) -> Result<Option<u32>> {
    match gguf.get_u32(key) {
        Ok(v) => Ok(Some(v)),
        Err(Error::MissingKey { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn optional_bool(gguf: &Gguf<'_>, key: &'static str) -> Result<Option<bool>> {
    match gguf.get_bool(key) {
        Ok(v) => Ok(Some(v)),
        Err(Error::MissingKey { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_special_type(t: i32) -> bool {
    matches!(
        t,
        token_type::CONTROL | token_type::USER_DEFINED | token_type::UNKNOWN
    )
}

impl<'a> Meta<'a> {
    fn read(gguf: &Gguf<'a>) -> Result<Self> {
        if gguf.get_str(KEY_TOKENIZER_MODEL)? != TOKENIZER_MODEL_GPT2 {
            return Err(Error::UnsupportedModel);
        }
        let pre = PreTokenizer::from_name(gguf.get_str(KEY_TOKENIZER_PRE)?)
            .ok_or(Error::UnsupportedPreTokenizer)?;
        let tokens = gguf.get_strings(KEY_TOKENIZER_TOKENS)?;
        let merges = gguf.get_strings(KEY_TOKENIZER_MERGES)?;
        let n = tokens.len();
        // Ids and ranks are u32, stored + 1 in the tables.
        if n == 0 || u32::try_from(n).map_or(true, |n| n == u32::MAX) {
            return Err(Error::BadVocabulary { id: u32::MAX });
        }
        if u32::try_from(merges.len()).map_or(true, |m| m == u32::MAX) {
            return Err(Error::BadMerge { rank: u32::MAX });
        }
        let types = match gguf.get_array(KEY_TOKENIZER_TOKEN_TYPE) {
            Ok(a) => Some(a),
            Err(Error::MissingKey { .. }) => None,
            Err(e) => return Err(e),
        };
        let mut n_special = 0usize;
        if let Some(types) = types {
            if types.len() != n {
                return Err(Error::BadVocabulary { id: u32::MAX });
            }
            for v in types.iter() {
                let t = v.as_i32().ok_or(Error::WrongValueType)?;
                if is_special_type(t) {
                    n_special += 1;
                }
            }
        }
        let bos = optional_u32(gguf, KEY_TOKENIZER_BOS_ID)?;
        let eos = optional_u32(gguf, KEY_TOKENIZER_EOS_ID)?;
        let add_bos = optional_bool(gguf, KEY_TOKENIZER_ADD_BOS)?.unwrap_or(false);
        let add_eos = optional_bool(gguf, KEY_TOKENIZER_ADD_EOS)?.unwrap_or(false);
        for (wanted, id, key) in [
            (add_bos, bos, KEY_TOKENIZER_BOS_ID),
            (add_eos, eos, KEY_TOKENIZER_EOS_ID),
        ] {
            match id {
                Some(id) if (id as usize) >= n => return Err(Error::BadVocabulary { id }),
                None if wanted => return Err(Error::missing_key(key)),
                _ => {}
            }
        }
        Ok(Meta {
            tokens,
            merges,
            types,
            pre,
            n_special,
            bos,
            eos,
            add_bos,
            add_eos,
        })
    }

    /// Elements of the caller's index: id -> locator, token table, rank -> locator,
    /// merge table, special ids.
    fn index_len(&self) -> usize {
        let n = self.tokens.len();
        let m = self.merges.len();
        n.saturating_add(slots(n))
            .saturating_add(m)
            .saturating_add(slots(m))
            .saturating_add(self.n_special)
    }
}

/// A byte-level BPE tokenizer over a GGUF file's `tokenizer.ggml.*` arrays, with its
/// index in a caller-provided `&mut [u32]` (see the [module docs](self)).
#[derive(Debug, Clone, Copy)]
pub struct BpeTokenizer<'a, 'i> {
    meta: Meta<'a>,
    locs: &'i [u32],
    token_table: Table<'i>,
    merge_locs: &'i [u32],
    merge_table: Table<'i>,
    special: &'i [u32],
}

fn token_hash(text: &[u8]) -> u32 {
    text.iter().fold(hash_start(false), |h, &b| hash_step(h, b))
}

impl<'a, 'i> BpeTokenizer<'a, 'i> {
    /// The number of `u32` the index of `gguf`'s tokenizer needs, answered before
    /// anything is built (O(vocabulary) to count the special tokens).
    ///
    /// # Errors
    /// As [`BpeTokenizer::from_gguf`], for the metadata checks that need no index.
    pub fn index_len(gguf: &Gguf<'a>) -> Result<usize> {
        Meta::read(gguf).map(|m| m.index_len())
    }

    /// Builds the tokenizer of a GGUF file whose `tokenizer.ggml.model` is `gpt2`,
    /// its index in `index` (at least [`BpeTokenizer::index_len`] elements).
    ///
    /// # Errors
    /// [`Error::UnsupportedModel`] for another tokenizer model;
    /// [`Error::UnsupportedPreTokenizer`] for a `tokenizer.ggml.pre` this tokenizer does
    /// not implement; [`Error::MissingKey`] or [`Error::WrongValueType`] for missing
    /// or mistyped keys (`tokens`, `merges` and `pre` are required, `token_type`
    /// optional); [`Error::BadVocabulary`] for an empty vocabulary, a `token_type`
    /// array of another length, two tokens with the same text (llama.cpp refuses
    /// those too), a bos/eos id outside the vocabulary, or a string array that cannot
    /// be read; [`Error::BadMerge`] for a merge that is not two tokens separated by a
    /// space; [`Error::BufferTooSmall`] for a short `index`. Never panics.
    pub fn from_gguf(gguf: &Gguf<'a>, index: &'i mut [u32]) -> Result<Self> {
        let meta = Meta::read(gguf)?;
        let needed = meta.index_len();
        let got = index.len();
        let index = index
            .get_mut(..needed)
            .ok_or(Error::BufferTooSmall { needed, got })?;
        index.fill(0);
        let n = meta.tokens.len();
        let m = meta.merges.len();
        let (locs, rest) = index.split_at_mut(n);
        let (token_words, rest) = rest.split_at_mut(slots(n));
        let (merge_locs, rest) = rest.split_at_mut(m);
        let (merge_words, special) = rest.split_at_mut(slots(m));
        let token_bits = value_bits(n);
        let merge_bits = value_bits(m);
        let tokens = meta.tokens;

        // id -> locator and token text -> id.
        let mut count = 0usize;
        for (id, (loc, text)) in tokens.iter().enumerate() {
            let bad = Error::BadVocabulary { id: id as u32 };
            *locs.get_mut(id).ok_or(bad)? = loc;
            count += 1;
            if text.is_empty() {
                continue;
            }
            let locs_ro: &[u32] = locs;
            let mut duplicate = false;
            let ok = insert(
                token_words,
                token_bits,
                token_hash(text.as_bytes()),
                id as u32,
                |old| {
                    let same =
                        locs_ro.get(old as usize).and_then(|&l| tokens.str_at(l)) == Some(text);
                    duplicate |= same;
                    same
                },
            );
            if !ok || duplicate {
                return Err(bad);
            }
        }
        if count != n {
            return Err(Error::BadVocabulary { id: count as u32 });
        }
        let token_table = Table {
            words: token_words,
            bits: token_bits,
        };

        // Merges: "left right", both halves tokens; rank = position, first one wins.
        let lookup = |piece: &[u8]| -> Option<u32> {
            token_table.find(token_hash(piece), |id| {
                locs.get(id as usize)
                    .and_then(|&l| tokens.str_at(l))
                    .is_some_and(|t| t.as_bytes() == piece)
            })
        };
        let mut count = 0usize;
        for (rank, (loc, text)) in meta.merges.iter().enumerate() {
            let bad = Error::BadMerge { rank: rank as u32 };
            *merge_locs.get_mut(rank).ok_or(bad)? = loc;
            count += 1;
            let b = text.as_bytes();
            let split = b
                .iter()
                .skip(1)
                .position(|&c| c == b' ')
                .map(|p| p + 1)
                .ok_or(bad)?;
            let (left, right) = (b.get(..split).ok_or(bad)?, b.get(split + 1..).ok_or(bad)?);
            if lookup(left).is_none() || lookup(right).is_none() {
                return Err(bad);
            }
            let merges = meta.merges;
            let ml: &[u32] = merge_locs;
            let ok = insert(merge_words, merge_bits, token_hash(b), rank as u32, |old| {
                ml.get(old as usize).and_then(|&l| merges.str_at(l)) == Some(text)
            });
            if !ok {
                return Err(bad);
            }
        }
        if count != m {
            return Err(Error::BadMerge { rank: count as u32 });
        }

        // Special tokens, longest text first (ties by id).
        if let Some(types) = meta.types {
            let mut k = 0usize;
            for (id, v) in types.iter().enumerate() {
                if v.as_i32().is_some_and(is_special_type) {
                    if let Some(s) = special.get_mut(k) {
                        *s = id as u32;
                    }
                    k += 1;
                }
            }
            if k != special.len() {
                return Err(Error::BadVocabulary { id: u32::MAX });
            }
            let len_of = |id: u32| {
                locs.get(id as usize)
                    .and_then(|&l| tokens.str_at(l))
                    .map_or(0, str::len)
            };
            special.sort_unstable_by(|&a, &b| len_of(b).cmp(&len_of(a)).then(a.cmp(&b)));
        }

        Ok(BpeTokenizer {
            meta,
            locs,
            token_table,
            merge_locs,
            merge_table: Table {
                words: merge_words,
                bits: merge_bits,
            },
            special,
        })
    }

    /// Number of tokens.
    pub fn vocab_len(&self) -> usize {
        self.meta.tokens.len()
    }

    /// The pre-tokenizer of the file.
    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.meta.pre
    }

    /// The beginning-of-sequence id and whether the file asks for it to be added.
    pub fn bos(&self) -> (Option<u32>, bool) {
        (self.meta.bos, self.meta.add_bos)
    }

    /// The end-of-sequence id and whether the file asks for it to be added.
    pub fn eos(&self) -> (Option<u32>, bool) {
        (self.meta.eos, self.meta.add_eos)
    }

    /// The stored text of token `id` (byte-level spelling, `Ġ` for a space), or `None`
    /// outside the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<&'a str> {
        self.locs
            .get(id as usize)
            .and_then(|&l| self.meta.tokens.str_at(l))
    }

    /// The `tokenizer.ggml.token_type` of token `id` (1, normal, without that array).
    pub fn token_type(&self, id: u32) -> i32 {
        match self.meta.types {
            Some(t) => t.get_i32(id as usize).unwrap_or(0),
            None => 1,
        }
    }

    /// The id of the token whose stored text is `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_table.find(token_hash(text.as_bytes()), |id| {
            self.token_text(id) == Some(text)
        })
    }

    /// The id of the token whose text is the byte-level spelling of `raw`.
    fn spelled_id(&self, raw: &[u8]) -> Option<u32> {
        self.token_table
            .find(hash_spelled(hash_start(false), raw), |id| {
                self.token_text(id)
                    .and_then(|t| strip_spelled(t.as_bytes(), raw))
                    .is_some_and(<[u8]>::is_empty)
            })
    }

    /// The rank of the merge of the spellings of `left` and `right`.
    fn rank(&self, left: &[u8], right: &[u8]) -> Option<u32> {
        let h = hash_spelled(
            hash_step(hash_spelled(hash_start(false), left), b' '),
            right,
        );
        self.merge_table.find(h, |rank| {
            self.merge_locs
                .get(rank as usize)
                .and_then(|&l| self.meta.merges.str_at(l))
                .and_then(|t| strip_spelled(t.as_bytes(), left))
                .and_then(|t| t.strip_prefix(b" "))
                .and_then(|t| strip_spelled(t, right))
                .is_some_and(<[u8]>::is_empty)
        })
    }

    /// [`BpeTokenizer::encode_with`] with `llama-tokenize`'s defaults
    /// ([`EncodeOptions::default`]).
    ///
    /// # Errors
    /// As [`BpeTokenizer::encode_with`].
    pub fn encode(&self, text: &str, out: &mut [u32]) -> Result<usize> {
        self.encode_with(text, out, EncodeOptions::default())
    }

    /// Tokenizes `text` into `out`; returns the number of ids written.
    ///
    /// The free tail of `out` is the workspace of the merges: `text.len() + 2` elements
    /// always suffice. With room for two elements per byte of a word (`2 * text.len() +
    /// 2` always), the word's pair ranks are cached there and merging takes one hash
    /// lookup per new pair (a 5,000-byte word: 7.5 ms); without, one per pair and step
    /// (0.44 s).
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] when `out` is too short for the ids or the workspace
    /// (`needed` is then `text.len() + 2`); [`Error::BadInput`] for a text of 4 GiB
    /// or more. Never panics.
    pub fn encode_with(&self, text: &str, out: &mut [u32], opts: EncodeOptions) -> Result<usize> {
        if u32::try_from(text.len()).is_err() {
            return Err(Error::BadInput);
        }
        let too_small = Error::BufferTooSmall {
            needed: text.len().saturating_add(2),
            got: out.len(),
        };
        let mut n = 0usize;
        let push = |out: &mut [u32], n: &mut usize, id: u32| -> Result<()> {
            *out.get_mut(*n).ok_or(too_small)? = id;
            *n += 1;
            Ok(())
        };
        if opts.add_special && self.meta.add_bos {
            if let Some(bos) = self.meta.bos {
                push(out, &mut n, bos)?;
            }
        }
        let mut pos = 0usize;
        // The first occurrence at or after `pos` of each of the first NEXT_CACHE special
        // tokens (relative to the whole text; NONE: none left), so that a text with many
        // special tokens is scanned once per token, not once per match.
        const NEXT_CACHE: usize = 64;
        const UNKNOWN: usize = usize::MAX;
        const NONE: usize = usize::MAX - 1;
        let mut next = [UNKNOWN; NEXT_CACHE];
        loop {
            let rest = text.get(pos..).unwrap_or("");
            let mut bound = rest.len();
            let mut found: Option<(u32, usize)> = None;
            for (k, &id) in self.special.iter().enumerate() {
                if !opts.parse_special && self.token_type(id) != token_type::USER_DEFINED {
                    continue;
                }
                let Some(t) = self.token_text(id).filter(|t| !t.is_empty()) else {
                    continue;
                };
                if t.len() > bound {
                    continue;
                }
                let at = match next.get_mut(k) {
                    Some(cached) => {
                        if *cached == UNKNOWN || (*cached != NONE && *cached < pos) {
                            *cached = rest.find(t).map_or(NONE, |a| pos + a);
                        }
                        (*cached != NONE && *cached - pos + t.len() <= bound).then(|| *cached - pos)
                    }
                    None => rest.get(..bound).and_then(|r| r.find(t)),
                };
                if let Some(at) = at {
                    bound = at;
                    found = Some((id, t.len()));
                }
            }
            let plain = rest.get(..bound).unwrap_or("");
            pre_tokenize(self.meta.pre, plain, &mut |word| {
                self.bpe_word(word, out, &mut n).map_err(|_| too_small)
            })?;
            match found {
                Some((id, len)) => {
                    push(out, &mut n, id)?;
                    pos += bound + len;
                }
                None => break,
            }
        }
        if opts.add_special && self.meta.add_eos {
            if let Some(eos) = self.meta.eos {
                push(out, &mut n, eos)?;
            }
        }
        Ok(n)
    }

    /// Merges one pre-tokenized word (a sub-slice of `text`) and appends its ids.
    fn bpe_word(&self, word: &str, out: &mut [u32], n: &mut usize) -> Result<()> {
        let raw = word.as_bytes();
        let len = raw.len();
        if len == 0 {
            return Ok(());
        }
        // Workspace: the start offsets of the current symbols in out[n..n + k] and, when
        // the free tail has room for it, the rank of each adjacent pair right after them
        // (u32::MAX: no merge; ranks are below u32::MAX - 1, see `Meta::read`): one hash
        // lookup per new pair instead of one per pair and step.
        let free = out.get_mut(*n..).ok_or(Error::BadInput)?;
        if free.len() < len {
            return Err(Error::BadInput);
        }
        let (starts, rest) = free.split_at_mut(len);
        let mut ranks = rest.get_mut(..len);
        for (i, s) in starts.iter_mut().enumerate() {
            *s = i as u32;
        }
        let mut k = len;
        let pair_rank = |starts: &[u32], k: usize, i: usize| -> u32 {
            let at = |j: usize| {
                if j < k {
                    starts.get(j).map_or(len, |&e| e as usize)
                } else {
                    len
                }
            };
            let (a, b, c) = (at(i), at(i + 1), at(i + 2));
            match (raw.get(a..b), raw.get(b..c)) {
                (Some(l), Some(r)) => self.rank(l, r).unwrap_or(u32::MAX),
                _ => u32::MAX,
            }
        };
        if let Some(r) = ranks.as_deref_mut() {
            for (i, slot) in r.iter_mut().enumerate().take(k - 1) {
                *slot = pair_rank(starts, k, i);
            }
        }
        loop {
            let mut best: Option<(u32, usize)> = None;
            for i in 0..k.saturating_sub(1) {
                let rank = match ranks.as_deref() {
                    Some(r) => r.get(i).copied().unwrap_or(u32::MAX),
                    None => pair_rank(starts, k, i),
                };
                if rank != u32::MAX && best.is_none_or(|(br, _)| rank < br) {
                    best = Some((rank, i));
                }
            }
            let Some((_, i)) = best else { break };
            // Drop the boundary between symbols i and i + 1.
            if let Some(tail) = starts.get_mut(i + 1..k).filter(|t| !t.is_empty()) {
                tail.rotate_left(1);
            }
            k -= 1;
            if let Some(r) = ranks.as_deref_mut() {
                // Pair i + 1 is gone; pairs i - 1 and i changed.
                if let Some(tail) = r.get_mut(i + 1..k).filter(|t| !t.is_empty()) {
                    tail.rotate_left(1);
                }
                for j in [i.checked_sub(1), (i + 1 < k).then_some(i)]
                    .into_iter()
                    .flatten()
                {
                    let v = pair_rank(starts, k, j);
                    if let Some(slot) = r.get_mut(j) {
                        *slot = v;
                    }
                }
            }
        }
        // Ids in place; a piece that is not a token becomes one token per byte whose
        // spelling is a single (ASCII) character, as llama.cpp looks up each byte of
        // the spelled piece. When those outnumber the piece's one slot, the starts not
        // yet read move right to make room (`base`); ids never overtake them.
        let byte_id = |byte: u8| -> Option<u32> {
            let &(l, enc) = BYTE_UTF8.get(usize::from(byte))?;
            if l != 1 {
                return None;
            }
            core::str::from_utf8(enc.get(..1)?)
                .ok()
                .and_then(|s| self.token_id(s))
        };
        let mut base = *n;
        let mut w = *n;
        for i in 0..k {
            let a = ws_get(out, base + i);
            let b = if i + 1 < k {
                ws_get(out, base + i + 1)
            } else {
                len
            };
            let piece = raw.get(a..b).unwrap_or(&[]);
            if let Some(id) = self.spelled_id(piece) {
                *out.get_mut(w).ok_or(Error::BadInput)? = id;
                w += 1;
                continue;
            }
            let f = piece.iter().filter(|&&b| byte_id(b).is_some()).count();
            if f > 1 {
                let shift = f - 1;
                let (from, to) = (base + i + 1, base + k);
                if to + shift > out.len() {
                    return Err(Error::BadInput);
                }
                if from < to {
                    out.copy_within(from..to, from + shift);
                }
                base += shift;
            }
            for &byte in piece {
                if let Some(id) = byte_id(byte) {
                    *out.get_mut(w).ok_or(Error::BadInput)? = id;
                    w += 1;
                }
            }
        }
        *n = w;
        Ok(())
    }
}

fn ws_get(out: &[u32], at: usize) -> usize {
    out.get(at).map_or(0, |&s| s as usize)
}

impl BpeTokenizer<'_, '_> {
    /// The bytes of token `id` as llama.cpp's `token_to_piece` renders them, each passed
    /// to `f`: a normal token's characters mapped back to bytes (a character outside
    /// GPT-2's byte map as llama.cpp writes it, `[UNK_BYTE_0x..]`), user-defined tokens
    /// verbatim, control and unknown tokens verbatim only when `special` (else
    /// nothing), a `<0xXX>` byte token as its byte, unused tokens as nothing.
    ///
    /// # Errors
    /// [`Error::BadVocabulary`] for an id outside the vocabulary.
    pub fn piece_bytes(&self, id: u32, special: bool, mut f: impl FnMut(u8)) -> Result<()> {
        let text = self.token_text(id).ok_or(Error::BadVocabulary { id })?;
        match self.token_type(id) {
            token_type::CONTROL | token_type::UNKNOWN if special => text.bytes().for_each(f),
            token_type::CONTROL | token_type::UNKNOWN => {}
            token_type::USER_DEFINED => text.bytes().for_each(f),
            token_type::BYTE => {
                let hex = text.get(3..5).and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = hex {
                    f(b);
                }
            }
            1 => {
                for c in text.chars() {
                    match char_byte(c) {
                        Some(b) => f(b),
                        None => {
                            const HEX: &[u8; 16] = b"0123456789abcdef";
                            b"[UNK_BYTE_0x".iter().for_each(|&b| f(b));
                            let mut buf = [0u8; 4];
                            for &b in c.encode_utf8(&mut buf).as_bytes() {
                                f(HEX[usize::from(b >> 4)]);
                                f(HEX[usize::from(b & 15)]);
                            }
                            text.bytes().for_each(&mut f);
                            f(b']');
                        }
                    }
                }
            }
            _ => {} // unused (5), undefined
        }
        Ok(())
    }
}

/// Streaming detokenizer: takes one id at a time and emits only complete UTF-8
/// characters, holding back the bytes of a character split across tokens (at most
/// three). Bytes that cannot form a character come out as U+FFFD, so every emitted
/// `&str` is valid and, for ids whose bytes are valid UTF-8 overall, the emitted text
/// is exactly those bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamDecoder {
    pending: [u8; 4],
    len: u8,
}

/// Output chunk of [`StreamDecoder`]: characters are collected here and emitted in
/// runs.
struct Chunk<'f, F: FnMut(&str)> {
    buf: [u8; 64],
    len: usize,
    emit: &'f mut F,
}

impl<F: FnMut(&str)> Chunk<'_, F> {
    fn push_str(&mut self, s: &str) {
        if self.len + s.len() > self.buf.len() {
            self.flush();
        }
        if let Some(dst) = self.buf.get_mut(self.len..self.len + s.len()) {
            dst.copy_from_slice(s.as_bytes());
            self.len += s.len();
        }
    }
    fn flush(&mut self) {
        if let Ok(s) = core::str::from_utf8(self.buf.get(..self.len).unwrap_or(&[])) {
            if !s.is_empty() {
                (self.emit)(s);
            }
        }
        self.len = 0;
    }
}

/// Expected length of a UTF-8 sequence from its first byte; 0 for a byte that cannot
/// start one.
fn utf8_width(b: u8) -> usize {
    match b {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 0,
    }
}

impl StreamDecoder {
    /// A decoder with nothing held back.
    pub const fn new() -> Self {
        StreamDecoder {
            pending: [0; 4],
            len: 0,
        }
    }

    /// Appends the piece of token `id` ([`BpeTokenizer::piece_bytes`]) and passes the
    /// text completed so far to `emit` (possibly nothing, possibly several calls).
    ///
    /// # Errors
    /// [`Error::BadVocabulary`] for an id outside the vocabulary (nothing is emitted
    /// and the state is unchanged).
    pub fn push<F: FnMut(&str)>(
        &mut self,
        tok: &BpeTokenizer<'_, '_>,
        id: u32,
        special: bool,
        mut emit: F,
    ) -> Result<()> {
        tok.token_text(id).ok_or(Error::BadVocabulary { id })?;
        let mut chunk = Chunk {
            buf: [0; 64],
            len: 0,
            emit: &mut emit,
        };
        tok.piece_bytes(id, special, |b| self.feed(b, &mut chunk))?;
        chunk.flush();
        Ok(())
    }

    /// Emits a held-back partial character as U+FFFD (call once the ids end).
    pub fn finish<F: FnMut(&str)>(&mut self, mut emit: F) {
        if self.len > 0 {
            self.len = 0;
            emit("\u{FFFD}");
        }
    }

    /// True when bytes of an incomplete character are held back.
    pub fn has_pending(&self) -> bool {
        self.len > 0
    }

    fn feed<F: FnMut(&str)>(&mut self, b: u8, out: &mut Chunk<'_, F>) {
        let held = usize::from(self.len);
        if held > 0 {
            if b & 0xC0 == 0x80 {
                if let Some(slot) = self.pending.get_mut(held) {
                    *slot = b;
                }
                self.len += 1;
                let width = utf8_width(self.pending[0]);
                if usize::from(self.len) == width {
                    let bytes = self.pending.get(..width).unwrap_or(&[]);
                    match core::str::from_utf8(bytes) {
                        Ok(s) => out.push_str(s),
                        Err(_) => out.push_str("\u{FFFD}"),
                    }
                    self.len = 0;
                }
                return;
            }
            // A new start before the character was complete.
            out.push_str("\u{FFFD}");
            self.len = 0;
        }
        match utf8_width(b) {
            1 => {
                let one = [b];
                if let Ok(s) = core::str::from_utf8(&one) {
                    out.push_str(s);
                }
            }
            0 => out.push_str("\u{FFFD}"),
            _ => {
                self.pending[0] = b;
                self.len = 1;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failure is a panic with its location
mod tests {
    use super::*;

    extern crate std;
    use std::string::String;
    use std::vec;
    use std::vec::Vec;

    const MINI: &[u8] = include_bytes!("../../../tests/data/gguf/bpe_mini.gguf");

    fn words(pre: PreTokenizer, s: &str) -> Vec<String> {
        let mut out = Vec::new();
        pre_tokenize(pre, s, &mut |w| {
            out.push(String::from(w));
            Ok(())
        })
        .unwrap();
        out
    }

    fn patched(from: &[u8], to: &[u8]) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let mut b = MINI.to_vec();
        let at = b.windows(from.len()).position(|w| w == from).unwrap();
        b[at..at + to.len()].copy_from_slice(to);
        b
    }

    #[test]
    fn gpt2_pattern() {
        let g = |s| words(PreTokenizer::Gpt2, s);
        assert_eq!(g("Hello world! 123"), ["Hello", " world", "!", " 123"]);
        assert_eq!(
            g("it's  a\t\tb \n"),
            ["it", "'s", " ", " a", "\t", "\t", "b", " \n"]
        );
        assert_eq!(g("x   "), ["x", "   "]);
        assert_eq!(g("'S 're're"), ["'", "S", " '", "re", "'re"]);
        assert_eq!(g("a\u{3000}b"), ["a", "\u{3000}", "b"]);
        assert_eq!(g("ab!?c d"), ["ab", "!?", "c", " d"]);
        assert_eq!(g(""), Vec::<String>::new());
    }

    #[test]
    fn smollm_pattern() {
        let s = |t| words(PreTokenizer::Smollm, t);
        assert_eq!(
            s("Hello world! 123"),
            ["Hello", " world", "!", " ", "1", "2", "3"]
        );
        assert_eq!(s("a1b ٣x"), ["a", "1", "b", " ", "٣", "x"]);
        assert_eq!(s("a  1"), ["a", "  ", "1"]);
    }

    #[test]
    fn classes() {
        assert_eq!(class('é'), Class::Letter);
        assert_eq!(class('中'), Class::Letter);
        assert_eq!(class('\u{2EBF0}'), Class::Letter, "Unicode 15.1");
        assert_eq!(
            class('\u{10D40}'),
            Class::Other,
            "Unicode 16.0: unassigned here"
        );
        assert_eq!(class('½'), Class::Number);
        assert_eq!(class('\u{85}'), Class::Space);
        assert_eq!(class('\u{200B}'), Class::Other);
    }

    #[test]
    fn byte_map_is_a_bijection() {
        let mut seen = [false; 512];
        for b in 0..=255u8 {
            let c = byte_char(b);
            assert!(!seen[c as usize]);
            seen[c as usize] = true;
            assert_eq!(char_byte(char::from_u32(c).unwrap()), Some(b));
        }
        assert_eq!(byte_char(b' '), 0x120); // Ġ
        assert_eq!(char_byte('a'), Some(b'a'));
        assert_eq!(char_byte('\u{20}'), None);
    }

    #[test]
    fn encode_decode_mini() {
        let gguf = Gguf::parse(MINI).unwrap();
        let mut idx = vec![0u32; BpeTokenizer::index_len(&gguf).unwrap()];
        let tok = BpeTokenizer::from_gguf(&gguf, &mut idx).unwrap();
        let mut out = [0u32; 64];
        let n = tok.encode(" world's  hi<|im_end|>", &mut out).unwrap();
        // " world" "'s" " " " hi" <|im_end|>
        assert_eq!(&out[..n], &[266, 267, 35, 260, 1]);
        let mut s = String::new();
        let mut d = StreamDecoder::new();
        for &id in &out[..n] {
            d.push(&tok, id, false, |c| s.push_str(c)).unwrap();
        }
        assert_eq!(s, " world's  hi");
        // A character split across byte tokens is held back until complete.
        let n = tok.encode("é", &mut out).unwrap();
        assert_eq!(n, 2);
        let mut d = StreamDecoder::new();
        let mut s = String::new();
        d.push(&tok, out[0], false, |c| s.push_str(c)).unwrap();
        assert!(s.is_empty() && d.has_pending());
        d.push(&tok, out[1], false, |c| s.push_str(c)).unwrap();
        assert_eq!(s, "é");
        // A lone lead byte comes out as U+FFFD.
        let mut d = StreamDecoder::new();
        let mut s = String::new();
        d.push(&tok, out[0], false, |c| s.push_str(c)).unwrap();
        d.push(&tok, 3 + u32::from(b'a'), false, |c| s.push_str(c))
            .unwrap();
        d.finish(|c| s.push_str(c));
        assert_eq!(s, "\u{FFFD}a");
        assert_eq!(
            d.push(&tok, 100_000, false, |_| {}),
            Err(Error::BadVocabulary { id: 100_000 })
        );
    }

    #[test]
    fn buffers_and_bad_files() {
        let gguf = Gguf::parse(MINI).unwrap();
        let need = BpeTokenizer::index_len(&gguf).unwrap();
        let mut idx = vec![0u32; need - 1];
        assert_eq!(
            BpeTokenizer::from_gguf(&gguf, &mut idx).err(),
            Some(Error::BufferTooSmall {
                needed: need,
                got: need - 1
            })
        );
        let mut idx = vec![0u32; need];
        let tok = BpeTokenizer::from_gguf(&gguf, &mut idx).unwrap();
        let mut out = [0u32; 3];
        assert!(matches!(
            tok.encode("hello world", &mut out),
            Err(Error::BufferTooSmall { .. })
        ));

        let b = patched(b"smollm", b"smollx");
        let g = Gguf::parse(&b).unwrap();
        assert_eq!(
            BpeTokenizer::index_len(&g),
            Err(Error::UnsupportedPreTokenizer)
        );
        let b = patched("Ġwor ld".as_bytes(), "Ġwor lx".as_bytes());
        let g = Gguf::parse(&b).unwrap();
        let mut idx = vec![0u32; BpeTokenizer::index_len(&g).unwrap()];
        assert_eq!(
            BpeTokenizer::from_gguf(&g, &mut idx).err(),
            Some(Error::BadMerge { rank: 7 })
        );
        let b = patched(b"gpt2", b"gpt3");
        let g = Gguf::parse(&b).unwrap();
        assert_eq!(BpeTokenizer::index_len(&g), Err(Error::UnsupportedModel));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// On a vocabulary with every byte: decode(encode(s)) == s without special-token
        /// text, streamed output is always a prefix of s, and the merge workspace with
        /// and without the rank cache gives the same ids.
        #[test]
        fn roundtrip_stream_and_workspaces(s in "[ \t\nhiwordl's0-9é中😀\u{85}\u{3000}]{0,60}|\\PC{0,30}") {
            let gguf = Gguf::parse(MINI).unwrap();
            let mut idx = vec![0u32; BpeTokenizer::index_len(&gguf).unwrap()];
            let tok = BpeTokenizer::from_gguf(&gguf, &mut idx).unwrap();
            let mut small = vec![0u32; s.len() + 2];
            let mut big = vec![0u32; 2 * s.len() + 2];
            let n = tok.encode(&s, &mut small).unwrap();
            let m = tok.encode(&s, &mut big).unwrap();
            proptest::prop_assert_eq!(&small[..n], &big[..m]);
            if !s.contains('<') {
                let mut got = String::new();
                let mut d = StreamDecoder::new();
                for &id in &small[..n] {
                    d.push(&tok, id, true, |c| got.push_str(c)).unwrap();
                    proptest::prop_assert!(s.starts_with(&got));
                }
                d.finish(|c| got.push_str(c));
                proptest::prop_assert_eq!(got, s);
            }
        }
    }
}
