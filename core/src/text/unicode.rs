//! Character classes and the per-character normalization of HF's `BertNormalizer`
//! (`clean_text`, `handle_chinese_chars`, `strip_accents`, `lowercase`, in that order).

use super::tables::{
    CONTROL, DECOMP_EXTRA, DECOMP_KEYS, DECOMP_VALUES, NONSPACING_MARK, PUNCTUATION,
};

/// Is `c` inside one of the packed ranges (`start << 11 | (len - 1)`) of `table`?
fn in_ranges(table: &[u32], c: u32) -> bool {
    let i = table.partition_point(|&e| (e >> 11) <= c);
    match i.checked_sub(1).and_then(|j| table.get(j)) {
        Some(&e) => c - (e >> 11) <= (e & 0x7ff),
        None => false,
    }
}

/// HF `is_control`: Cc, Cf or Co (Unicode 8.0), except tab, line feed and carriage
/// return (which count as whitespace).
pub(super) fn is_control(c: char) -> bool {
    let cp = c as u32;
    if cp < 0x80 {
        return (cp < 0x20 && !matches!(c, '\t' | '\n' | '\r')) || cp == 0x7f;
    }
    if cp >= 0xF0000 {
        // Private-use planes 15 and 16, noncharacters excepted.
        return (cp & 0xFFFF) <= 0xFFFD;
    }
    in_ranges(&CONTROL, cp)
}

/// HF `is_whitespace` of the normalizer: Rust's `char::is_whitespace`.
pub(super) fn is_whitespace(c: char) -> bool {
    c.is_whitespace()
}

/// HF `is_chinese_char` (its ranges, which differ slightly from Google BERT's).
pub(super) fn is_chinese(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// HF `is_bert_punc`: ASCII punctuation (which includes the symbols `$+<=>^`|~`) or a
/// Unicode 8.0 P* character.
pub(super) fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_punctuation()
    } else {
        in_ranges(&PUNCTUATION, c as u32)
    }
}

/// General category Mn in Unicode 8.0.
pub(super) fn is_nonspacing_mark(c: char) -> bool {
    !c.is_ascii() && in_ranges(&NONSPACING_MARK, c as u32)
}

const S_BASE: u32 = 0xAC00;
const L_BASE: u32 = 0x1100;
const V_BASE: u32 = 0x1161;
const T_BASE: u32 = 0x11A7;
const V_COUNT: u32 = 21;
const T_COUNT: u32 = 28;
const N_COUNT: u32 = V_COUNT * T_COUNT;
const S_COUNT: u32 = 19 * N_COUNT;

/// NFD of one character with the Mn characters removed (`strip_accents` without the
/// canonical reordering, see the module docs), each result passed to `f`.
fn strip_accents(c: char, f: &mut impl FnMut(char)) {
    let cp = c as u32;
    if cp < 0xC0 {
        // Nothing below U+00C0 decomposes or is a nonspacing mark.
        f(c);
        return;
    }
    let s = cp.wrapping_sub(S_BASE);
    if s < S_COUNT {
        // Hangul syllable: algorithmic decomposition into conjoining jamo.
        for j in [L_BASE + s / N_COUNT, V_BASE + (s % N_COUNT) / T_COUNT] {
            if let Some(j) = char::from_u32(j) {
                f(j);
            }
        }
        if !s.is_multiple_of(T_COUNT) {
            if let Some(t) = char::from_u32(T_BASE + s % T_COUNT) {
                f(t);
            }
        }
        return;
    }
    match DECOMP_KEYS.binary_search(&cp) {
        Ok(i) => match DECOMP_VALUES.get(i) {
            Some(&v) if v & 0x8000_0000 == 0 => {
                if let Some(d) = char::from_u32(v) {
                    f(d);
                }
            }
            Some(&v) => {
                let len = ((v >> 16) & 0x7fff) as usize;
                let at = (v & 0xffff) as usize;
                for &d in DECOMP_EXTRA.get(at..at + len).unwrap_or(&[]) {
                    if let Some(d) = char::from_u32(d) {
                        f(d);
                    }
                }
            }
            None => {}
        },
        Err(_) => {
            if !is_nonspacing_mark(c) {
                f(c);
            }
        }
    }
}

/// Runs one input character through HF's `BertNormalizer` (clean text, CJK spacing,
/// accent stripping, lowercasing) and passes every resulting character to `f`;
/// whitespace comes out as `' '`.
#[inline]
pub(super) fn normalize_char(c: char, f: &mut impl FnMut(char)) {
    if c.is_ascii() {
        let b = c as u8;
        if b < 0x20 || b == 0x7f {
            if matches!(c, '\t' | '\n' | '\r') {
                f(' ');
            }
            // Other ASCII controls (NUL, VT, FF, ...) are dropped: HF filters controls
            // before it maps whitespace.
        } else {
            f(c.to_ascii_lowercase());
        }
        return;
    }
    if c == '\u{FFFD}' || is_control(c) {
        return;
    }
    if is_whitespace(c) {
        f(' ');
        return;
    }
    let chinese = is_chinese(c);
    if chinese {
        f(' ');
    }
    strip_accents(c, &mut |d| {
        for l in d.to_lowercase() {
            f(l);
        }
    });
    if chinese {
        f(' ');
    }
}

#[cfg(test)]
mod tests {
    use super::super::tables::REORDERABLE;
    use super::*;

    extern crate std;
    use std::string::String;

    fn norm(s: &str) -> String {
        let mut out = String::new();
        for c in s.chars() {
            normalize_char(c, &mut |d| out.push(d));
        }
        out
    }

    #[test]
    fn classes() {
        assert!(is_control('\u{200B}') && is_control('\u{E000}') && is_control('\u{F0000}'));
        assert!(!is_control('\u{FFFFE}') && !is_control('\u{10FFFF}') && !is_control('\t'));
        assert!(!is_control('\u{08E2}'), "Cf only since Unicode 9.0");
        assert!(is_punctuation('$') && is_punctuation('¿') && is_punctuation('、'));
        assert!(!is_punctuation('\u{1E95E}'), "Po only since Unicode 9.0");
        assert!(is_nonspacing_mark('\u{0301}') && !is_nonspacing_mark('\u{1E944}'));
        assert!(in_ranges(&REORDERABLE, 0x1D165));
    }

    /// Canonical reordering is skipped (module docs): fine as long as no token of the
    /// vocabulary contains a character it could move.
    #[test]
    fn bert_vocab_has_no_reorderable_characters() {
        let vocab = include_str!("../../../tests/data/tokenizer/vocab.txt");
        assert_eq!(vocab.lines().count(), 30_522);
        for token in vocab.lines() {
            for c in token.chars() {
                assert!(!in_ranges(&REORDERABLE, c as u32), "{token:?} has {c:?}");
            }
        }
        let n: u32 = REORDERABLE.iter().map(|e| (e & 0x7ff) + 1).sum();
        assert_eq!(n, 83);
    }

    #[test]
    fn normalizer() {
        assert_eq!(norm("Héllo\tWÖRLD"), "hello world");
        assert_eq!(norm("İ"), "i");
        assert_eq!(norm("a\u{0}b\u{FFFD}c\u{200B}d\u{0B}e"), "abcde");
        assert_eq!(norm("中文"), " 中  文 ");
        assert_eq!(norm("한"), "\u{1112}\u{1161}\u{11AB}");
        assert_eq!(norm("\u{0344}\u{037E}"), ";");
        assert_eq!(norm("\u{FA10}"), " \u{585A} ");
        assert_eq!(norm("\u{2000}\u{3000}\u{85}"), "  ");
    }
}
