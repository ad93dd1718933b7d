//! [`WordPieceIndex`]: an open-addressing hash table from word pieces to token ids,
//! built into a caller-provided `&mut [u32]`.

use super::vocab::{Spelling, VocabSource};
use crate::{Error, Result};

/// Number of `u32` elements [`WordPieceIndex::build`] needs for a vocabulary of
/// `vocab_len` tokens: two per slot, `vocab_len + vocab_len / 2 + 1` slots (a load
/// factor of at most 2/3).
///
/// all-MiniLM-L6-v2 (30,522 tokens): 91,568 elements, 366,272 bytes.
///
/// ```
/// assert_eq!(riffle_core::text::index_len(30_522), 91_568);
/// ```
pub const fn index_len(vocab_len: usize) -> usize {
    slots(vocab_len).saturating_mul(2)
}

const fn slots(vocab_len: usize) -> usize {
    vocab_len.saturating_add(vocab_len / 2).saturating_add(1)
}

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// Start of the running hash of a piece; the continuation flag is part of the key.
#[inline]
pub(super) fn hash_start(continuation: bool) -> u32 {
    if continuation {
        FNV_OFFSET ^ 0x5bd1_e995
    } else {
        FNV_OFFSET
    }
}

/// Feeds one byte into the running hash (FNV-1a).
#[inline]
pub(super) fn hash_step(h: u32, b: u8) -> u32 {
    (h ^ u32::from(b)).wrapping_mul(FNV_PRIME)
}

fn hash_piece(continuation: bool, piece: &[u8]) -> u32 {
    piece
        .iter()
        .fold(hash_start(continuation), |h, &b| hash_step(h, b))
}

/// Murmur3's finaliser: spreads the FNV state over all 32 bits.
#[inline]
pub(super) fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// A read-only hash index over a [`VocabSource`]: `(is_continuation, piece)` to token
/// id in O(1) (FNV-1a, linear probing).
///
/// Each slot is two `u32`: `tag << id_bits | (id + 1)` (0 = empty; the tag is hash bits
/// that rule out most mismatches without touching the vocabulary) and the token's
/// locator. A hit is confirmed by comparing the piece with the token text from
/// [`VocabSource::token_at`], so answers never depend on the hash being collision-free.
///
/// The index stores no reference to the source: pass the same source to
/// [`WordPieceIndex::lookup`] as to [`WordPieceIndex::build`] (another one gives
/// wrong answers, never a panic).
#[derive(Debug, Clone, Copy)]
pub struct WordPieceIndex<'i> {
    table: &'i [u32],
    slots: usize,
    id_bits: u32,
    max_piece_bytes: usize,
    spelling: Spelling,
}

impl<'i> WordPieceIndex<'i> {
    /// Indexes every token of `source` except the ids in `skip` (the tokenizer skips
    /// its special tokens, which it matches in the raw text instead). Tokens whose piece
    /// is empty are not indexed; when two tokens have the same key, the first one wins.
    ///
    /// O(vocabulary) time; writes `index_len(source.len())` elements of `buf`.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] when `buf` is shorter than [`index_len`]`(source.len())`;
    /// [`Error::BadVocabulary`] when the source has 2^32 - 1 tokens or more, yields an
    /// id outside `0..len`, more tokens than `len`, or a locator that
    /// [`VocabSource::token_at`] does not resolve to the same token. Never panics.
    pub fn build<S: VocabSource>(source: &S, buf: &'i mut [u32], skip: &[u32]) -> Result<Self> {
        Self::build_with(source, buf, skip, |_, _| {})
    }

    /// [`WordPieceIndex::build`] that also calls `seen(id, locator)` for every token.
    pub(super) fn build_with<S: VocabSource>(
        source: &S,
        buf: &'i mut [u32],
        skip: &[u32],
        mut seen: impl FnMut(u32, u32),
    ) -> Result<Self> {
        let len = source.len();
        let len32 = u32::try_from(len)
            .ok()
            .filter(|&l| l < u32::MAX)
            .ok_or(Error::BadVocabulary { id: u32::MAX })?;
        let needed = index_len(len);
        let got = buf.len();
        let table = buf
            .get_mut(..needed)
            .ok_or(Error::BufferTooSmall { needed, got })?;
        table.fill(0);
        let slots = slots(len);
        let id_bits = 32 - len32.leading_zeros();
        let spelling = source.spelling();
        let mut max_piece_bytes = 0usize;
        let mut count = 0usize;
        let mut error = None;
        source.for_each(|id, locator, token| {
            if error.is_some() {
                return;
            }
            count += 1;
            if id >= len32 || count > len || source.token_at(locator) != Some(token) {
                error = Some(Error::BadVocabulary { id });
                return;
            }
            seen(id, locator);
            if skip.contains(&id) {
                return;
            }
            let (continuation, piece) = spelling.split(token);
            if piece.is_empty() {
                return;
            }
            let m = mix(hash_piece(continuation, piece.as_bytes()));
            let tagged = (tag(m, id_bits) << id_bits) | (id + 1);
            let mut slot = home(m, slots);
            for _ in 0..slots {
                let Some(&word) = table.get(2 * slot) else {
                    break;
                };
                if word == 0 {
                    if let Some(pair) = table.get_mut(2 * slot..2 * slot + 2) {
                        pair.copy_from_slice(&[tagged, locator]);
                    }
                    max_piece_bytes = max_piece_bytes.max(piece.len());
                    return;
                }
                if same_key(
                    source,
                    spelling,
                    table,
                    slot,
                    word,
                    m,
                    id_bits,
                    continuation,
                    piece,
                ) {
                    return; // duplicate key: keep the first token
                }
                slot = next(slot, slots);
            }
        });
        if let Some(e) = error {
            return Err(e);
        }
        Ok(WordPieceIndex {
            table,
            slots,
            id_bits,
            max_piece_bytes,
            spelling,
        })
    }

    /// The id of the token whose key is `(continuation, piece)`, or `None`.
    ///
    /// ```
    /// use riffle_core::text::{index_len, LineVocab, Spelling, WordPieceIndex};
    /// let vocab = LineVocab::new("[UNK]\nplay\n##ing\n", Spelling::Hf)?;
    /// let mut buf = [0u32; index_len(3)];
    /// let index = WordPieceIndex::build(&vocab, &mut buf, &[])?;
    /// assert_eq!(index.lookup(&vocab, true, "ing"), Some(2));
    /// assert_eq!(index.lookup(&vocab, false, "ing"), None);
    /// # Ok::<(), riffle_core::Error>(())
    /// ```
    pub fn lookup<S: VocabSource>(
        &self,
        source: &S,
        continuation: bool,
        piece: &str,
    ) -> Option<u32> {
        self.find(
            source,
            hash_piece(continuation, piece.as_bytes()),
            continuation,
            piece.as_bytes(),
        )
    }

    /// Length in bytes of the longest indexed piece: no longer piece can match.
    pub fn max_piece_bytes(&self) -> usize {
        self.max_piece_bytes
    }

    /// Lookup with the piece's running hash (`hash_start`/`hash_step`) already known.
    #[inline]
    pub(super) fn find<S: VocabSource>(
        &self,
        source: &S,
        h: u32,
        continuation: bool,
        piece: &[u8],
    ) -> Option<u32> {
        let m = mix(h);
        let tag = tag(m, self.id_bits);
        let id_mask = id_mask(self.id_bits);
        let mut slot = home(m, self.slots);
        for _ in 0..self.slots {
            let word = *self.table.get(2 * slot)?;
            if word == 0 {
                return None;
            }
            if word_tag(word, self.id_bits) == tag {
                let locator = *self.table.get(2 * slot + 1)?;
                if let Some(token) = source.token_at(locator) {
                    let (c, p) = self.spelling.split(token);
                    if c == continuation && p.as_bytes() == piece {
                        return (word & id_mask).checked_sub(1);
                    }
                }
            }
            slot = next(slot, self.slots);
        }
        None
    }
}

#[inline]
fn id_mask(id_bits: u32) -> u32 {
    if id_bits >= 32 {
        u32::MAX
    } else {
        (1u32 << id_bits) - 1
    }
}

/// The tag: low bits of the mixed hash (the slot comes from the high bits).
#[inline]
fn tag(m: u32, id_bits: u32) -> u32 {
    if id_bits >= 32 {
        0
    } else {
        m & (u32::MAX >> id_bits)
    }
}

/// The tag stored in a slot's first word.
#[inline]
fn word_tag(word: u32, id_bits: u32) -> u32 {
    if id_bits >= 32 {
        0
    } else {
        word >> id_bits
    }
}

/// The home slot: `m * slots / 2^32`, uniform over `0..slots` for any slot count.
#[inline]
fn home(m: u32, slots: usize) -> usize {
    // u128: `slots` may exceed 2^32 for (absurdly) large vocabularies.
    ((u128::from(m) * slots as u128) >> 32) as usize
}

#[inline]
fn next(slot: usize, slots: usize) -> usize {
    if slot + 1 >= slots {
        0
    } else {
        slot + 1
    }
}

#[allow(clippy::too_many_arguments)]
fn same_key<S: VocabSource>(
    source: &S,
    spelling: Spelling,
    table: &[u32],
    slot: usize,
    word: u32,
    m: u32,
    id_bits: u32,
    continuation: bool,
    piece: &str,
) -> bool {
    if word_tag(word, id_bits) != tag(m, id_bits) {
        return false;
    }
    let Some(&locator) = table.get(2 * slot + 1) else {
        return false;
    };
    source
        .token_at(locator)
        .map(|t| spelling.split(t) == (continuation, piece))
        .unwrap_or(false)
}
