//! The tokenizer: special-token splitting, normalization, pre-tokenization, greedy
//! longest-match-first WordPiece, `[CLS] ... [SEP]` and truncation.

use super::index::{hash_start, hash_step, WordPieceIndex};
use super::unicode::{is_punctuation, is_whitespace, normalize_char};
use super::vocab::VocabSource;
use crate::{Error, Result};

/// Longest word (in characters, after normalization) that WordPiece splits into pieces;
/// a longer word becomes one `[UNK]` (HF's `max_input_chars_per_word`, 100 for BERT).
pub const MAX_INPUT_CHARS_PER_WORD: usize = 100;

/// The ids of the special tokens (GGUF: `tokenizer.ggml.bos_token_id` is `[CLS]`,
/// `seperator_token_id` `[SEP]`, `unknown_token_id`, `padding_token_id`,
/// `mask_token_id`).
///
/// Their texts (taken from the vocabulary) are recognised in the input before any
/// normalization, exactly where they occur, like HF's added tokens: `"a [MASK] b"`
/// gives the mask id, `"[mask]"` does not. They are never matched as word pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `[CLS]`, written first.
    pub cls: u32,
    /// `[SEP]`, written last.
    pub sep: u32,
    /// `[UNK]`, for words that have no segmentation into pieces.
    pub unk: u32,
    /// `[PAD]`, if the vocabulary has one (the tokenizer never pads).
    pub pad: Option<u32>,
    /// `[MASK]`, if the vocabulary has one.
    pub mask: Option<u32>,
}

impl SpecialTokens {
    /// The ids of BERT's uncased vocabulary (all-MiniLM-L6-v2, bert-base-uncased):
    /// `[CLS]` 101, `[SEP]` 102, `[UNK]` 100, `[PAD]` 0, `[MASK]` 103.
    pub const BERT_UNCASED: SpecialTokens = SpecialTokens {
        cls: 101,
        sep: 102,
        unk: 100,
        pad: Some(0),
        mask: Some(103),
    };

    fn ids(&self) -> [Option<u32>; 5] {
        [
            Some(self.cls),
            Some(self.sep),
            Some(self.unk),
            self.pad,
            self.mask,
        ]
    }
}

/// What one [`Tokenizer::encode_with_stats`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EncodeStats {
    /// Ids written, `[CLS]` and `[SEP]` included.
    pub len: usize,
    /// Words (pre-tokens and special tokens) read before encoding stopped.
    pub words: usize,
    /// Words among them that became `[UNK]`.
    pub unknown_words: usize,
    /// True when the text had more tokens than fit in `max_len` (the rest was cut).
    pub truncated: bool,
}

/// A BERT WordPiece tokenizer over a borrowed vocabulary and a caller-provided index;
/// see the [module docs](super) for the exact behaviour.
///
/// Building it is O(vocabulary); encoding is O(text) with O(1) lookups, allocates
/// nothing and uses about 1.3 KiB of stack. Immutable after [`Tokenizer::new`]: share
/// it between threads freely.
#[derive(Debug, Clone, Copy)]
pub struct Tokenizer<'i, S> {
    source: S,
    index: WordPieceIndex<'i>,
    special: SpecialTokens,
    special_locators: [Option<u32>; 5],
}

impl<'i, S: VocabSource> Tokenizer<'i, S> {
    /// Indexes `source` into `index_buf` (at least [`super::index_len`]`(source.len())`
    /// elements) and checks that every special id is a token of it.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] when `index_buf` is too short;
    /// [`Error::BadVocabulary`] when a special id is not in the vocabulary or the source
    /// is inconsistent (see [`WordPieceIndex::build`]). Never panics.
    pub fn new(source: S, index_buf: &'i mut [u32], special: SpecialTokens) -> Result<Self> {
        let ids = special.ids();
        let mut skip = [u32::MAX; 5];
        for (s, id) in skip.iter_mut().zip(ids) {
            if let Some(id) = id {
                *s = id;
            }
        }
        let mut special_locators = [None; 5];
        let index = WordPieceIndex::build_with(&source, index_buf, &skip, |id, locator| {
            for (slot, want) in special_locators.iter_mut().zip(ids) {
                if want == Some(id) {
                    *slot = Some(locator);
                }
            }
        })?;
        for (locator, id) in special_locators.iter().zip(ids) {
            if let (None, Some(id)) = (locator, id) {
                return Err(Error::BadVocabulary { id });
            }
        }
        Ok(Tokenizer {
            source,
            index,
            special,
            special_locators,
        })
    }

    /// Tokenizes `text` into `out`: `[CLS]`, the word pieces, `[SEP]`, keeping only the
    /// first `max_len - 2` pieces when there are more (HF's truncation to `max_len`
    /// with the special tokens kept). Returns the number of ids written, `n`; `out[n..max_len]`
    /// may have been used as scratch, `out[max_len..]` is untouched.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] when `max_len < 2` (no room for `[CLS]` and `[SEP]`)
    /// or `out.len() < max_len`. Never panics, on any `&str`.
    pub fn encode(&self, text: &str, max_len: usize, out: &mut [u32]) -> Result<usize> {
        self.encode_with_stats(text, max_len, out).map(|s| s.len)
    }

    /// [`Tokenizer::encode`], also reporting words, unknown words and truncation.
    ///
    /// # Errors
    /// As [`Tokenizer::encode`].
    pub fn encode_with_stats(
        &self,
        text: &str,
        max_len: usize,
        out: &mut [u32],
    ) -> Result<EncodeStats> {
        if max_len < 2 {
            return Err(Error::BufferTooSmall {
                needed: 2,
                got: max_len,
            });
        }
        let got = out.len();
        let out = out.get_mut(..max_len).ok_or(Error::BufferTooSmall {
            needed: max_len,
            got,
        })?;
        if let Some(first) = out.first_mut() {
            *first = self.special.cls;
        }
        let mut sink = Sink {
            content: out.get_mut(1..max_len - 1).unwrap_or(&mut []),
            n: 0,
            truncated: false,
            words: 0,
            unknown_words: 0,
        };
        self.run(text, &mut sink);
        let n = sink.n;
        let stats = EncodeStats {
            len: n + 2,
            words: sink.words,
            unknown_words: sink.unknown_words,
            truncated: sink.truncated,
        };
        if let Some(last) = out.get_mut(n + 1) {
            *last = self.special.sep;
        }
        Ok(stats)
    }

    /// The special-token ids this tokenizer was built with.
    pub fn special_tokens(&self) -> SpecialTokens {
        self.special
    }

    /// The vocabulary.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The piece index (for direct lookups with [`WordPieceIndex::lookup`]).
    pub fn index(&self) -> &WordPieceIndex<'i> {
        &self.index
    }

    /// The id of the word piece `piece` (a continuation piece when `continuation`), or
    /// `None`. Special tokens are not pieces.
    pub fn token_id(&self, continuation: bool, piece: &str) -> Option<u32> {
        self.index.lookup(&self.source, continuation, piece)
    }

    fn run(&self, text: &str, sink: &mut Sink<'_>) {
        // Texts of the special tokens, matched in the raw text (HF's added tokens).
        let mut specials: [(&str, u32); 5] = [("", 0); 5];
        let mut n_specials = 0;
        for (locator, id) in self.special_locators.iter().zip(self.special.ids()) {
            if let (Some(locator), Some(id)) = (locator, id) {
                if let Some(t) = self.source.token_at(*locator).filter(|t| !t.is_empty()) {
                    if let Some(s) = specials.get_mut(n_specials) {
                        *s = (t, id);
                        n_specials += 1;
                    }
                }
            }
        }
        let specials = specials.get(..n_specials).unwrap_or(&[]);

        let mut word = Word::new();
        let mut skip_to = 0;
        for (pos, c) in text.char_indices() {
            if pos < skip_to {
                continue;
            }
            if sink.truncated {
                return;
            }
            if let Some((len, id)) = special_at(specials, text, pos, c) {
                self.flush(&mut word, sink);
                sink.words += 1;
                sink.emit(id);
                skip_to = pos + len;
                continue;
            }
            normalize_char(c, &mut |ch| {
                if ch == ' ' || is_whitespace(ch) {
                    self.flush(&mut word, sink);
                } else if is_punctuation(ch) {
                    self.flush(&mut word, sink);
                    word.push(ch);
                    self.flush(&mut word, sink);
                } else {
                    word.push(ch);
                }
            });
        }
        self.flush(&mut word, sink);
    }

    /// WordPiece on the buffered word: greedy longest match first, `[UNK]` for the
    /// whole word when some position has no piece or the word is too long.
    fn flush(&self, word: &mut Word, sink: &mut Sink<'_>) {
        if word.chars == 0 {
            return;
        }
        sink.words += 1;
        let (chars, len) = (word.chars, word.len);
        word.chars = 0;
        word.len = 0;
        if chars > MAX_INPUT_CHARS_PER_WORD {
            sink.unknown_words += 1;
            sink.emit(self.special.unk);
            return;
        }
        let bytes = word.bytes.get(..len).unwrap_or(&[]);
        let (mark_n, mark_truncated) = (sink.n, sink.truncated);
        let mut start = 0;
        while start < len {
            match bytes
                .get(start..)
                .and_then(|rest| self.longest(rest, start > 0))
            {
                Some((id, piece_len)) => {
                    sink.emit(id);
                    start += piece_len;
                }
                None => {
                    sink.n = mark_n;
                    sink.truncated = mark_truncated;
                    sink.unknown_words += 1;
                    sink.emit(self.special.unk);
                    return;
                }
            }
        }
    }

    /// The longest piece that `rest` starts with: `(id, length in bytes)`.
    #[inline]
    fn longest(&self, rest: &[u8], continuation: bool) -> Option<(u32, usize)> {
        let limit = rest.len().min(self.index.max_piece_bytes());
        // Running hash at each char boundary, so every candidate is hashed once.
        let mut ends = [(0u32, 0u16); MAX_INPUT_CHARS_PER_WORD];
        let mut k = 0;
        let mut h = hash_start(continuation);
        for (i, &b) in rest.iter().take(limit).enumerate() {
            h = hash_step(h, b);
            let end = i + 1;
            let at_boundary = rest.get(end).is_none_or(|&nb| nb & 0xC0 != 0x80);
            if at_boundary {
                if let Some(e) = ends.get_mut(k) {
                    *e = (h, end as u16);
                    k += 1;
                }
            }
        }
        for &(h, end) in ends.get(..k)?.iter().rev() {
            let end = usize::from(end);
            let piece = rest.get(..end)?;
            if let Some(id) = self.index.find(&self.source, h, continuation, piece) {
                return Some((id, end));
            }
        }
        None
    }
}

/// The longest special-token text that starts at byte `pos` of `text`.
#[inline]
fn special_at(specials: &[(&str, u32)], text: &str, pos: usize, c: char) -> Option<(usize, u32)> {
    let mut best: Option<(usize, u32)> = None;
    for &(s, id) in specials {
        if s.starts_with(c)
            && text.get(pos..).is_some_and(|r| r.starts_with(s))
            && best.is_none_or(|(l, _)| s.len() > l)
        {
            best = Some((s.len(), id));
        }
    }
    best
}

/// The current word, normalized, as UTF-8 (only its first
/// [`MAX_INPUT_CHARS_PER_WORD`] characters are kept; a longer word is `[UNK]`).
struct Word {
    bytes: [u8; 4 * MAX_INPUT_CHARS_PER_WORD],
    len: usize,
    chars: usize,
}

impl Word {
    fn new() -> Self {
        Word {
            bytes: [0; 4 * MAX_INPUT_CHARS_PER_WORD],
            len: 0,
            chars: 0,
        }
    }

    #[inline]
    fn push(&mut self, ch: char) {
        self.chars = self.chars.saturating_add(1);
        if self.chars <= MAX_INPUT_CHARS_PER_WORD {
            let mut b = [0u8; 4];
            let s = ch.encode_utf8(&mut b).as_bytes();
            if let Some(dst) = self.bytes.get_mut(self.len..self.len + s.len()) {
                dst.copy_from_slice(s);
                self.len += s.len();
            }
        }
    }
}

/// The ids between `[CLS]` and `[SEP]`.
struct Sink<'o> {
    content: &'o mut [u32],
    n: usize,
    truncated: bool,
    words: usize,
    unknown_words: usize,
}

impl Sink<'_> {
    #[inline]
    fn emit(&mut self, id: u32) {
        match self.content.get_mut(self.n) {
            Some(slot) => {
                *slot = id;
                self.n += 1;
            }
            None => self.truncated = true,
        }
    }
}
