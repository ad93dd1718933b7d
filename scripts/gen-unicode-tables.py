#!/usr/bin/env python3
"""Generate core/src/text/tables.rs: the Unicode data riffle's WordPiece tokenizer needs.

HF `tokenizers` (the reference for riffle's BERT tokenizer) does not use the Unicode
data of the Rust standard library for its BERT normalizer and pre-tokenizer; it uses
two crates whose tables are frozen at old Unicode versions:

* `unicode_categories` 0.1.1 (tables from UnicodeData.txt of **Unicode 8.0.0**):
  `is_other` (Cc, Cf, Co: dropped by `clean_text`), `is_mark_nonspacing` (Mn: dropped
  after NFD by `strip_accents`) and `is_punctuation` (Pc Pd Pe Pf Pi Po Ps: split off by
  `BertPreTokenizer`).
* `unicode-normalization-alignments` 0.1.12 (**Unicode 9.0.0**): the NFD used by
  `strip_accents` (full canonical decompositions, Hangul syllables algorithmically,
  then canonical reordering).

So this script reads the tables *of those two crates* (fetched by cargo, the ordinary
way, at the exact versions `tokenizers` resolves to) rather than a UnicodeData.txt of
some version: the output then matches what HF runs, quirks included (for instance
U+08E2, Cf since Unicode 9.0, is *not* dropped by HF, and U+1E944, Mn since 9.0, is
*not* stripped).

Output (all sorted, searched by binary search):
* CONTROL, NONSPACING_MARK, PUNCTUATION: ranges packed in one u32 each,
  `start << 11 | (len - 1)` (ranges longer than 2048 are split).
* DECOMP_KEYS / DECOMP_VALUES / DECOMP_EXTRA: for every code point with a canonical
  decomposition, that decomposition *with the Unicode 8.0 Mn characters already
  removed* (the only form the tokenizer needs). A value below 0x110000 is the single
  resulting char; otherwise `0x8000_0000 | len << 16 | offset` into DECOMP_EXTRA
  (len may be 0: everything was a mark).
* REORDERABLE (test only): characters with a non-zero canonical combining class
  (Unicode 9.0) that are not Mn in Unicode 8.0, i.e. the only characters whose order
  NFD's canonical reordering could change in the tokenizer's output. riffle skips
  that reordering; a unit test checks that no vocabulary token contains one of them.

Usage: scripts/gen-unicode-tables.py [--categories DIR] [--normalization DIR] [--out FILE]
Without the DIR arguments the script runs `cargo metadata` on a throw-away manifest
pinning `unicode_categories = "=0.1.1"` and `unicode-normalization-alignments =
"=0.1.12"` to find (and, if needed, download) the two crates' sources.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

CATEGORIES = ("unicode_categories", "0.1.1")
NORMALIZATION = ("unicode-normalization-alignments", "0.1.12")
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "core", "src", "text", "tables.rs")


def locate_crates():
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "Cargo.toml"), "w") as f:
            f.write(
                '[package]\nname = "unicode-table-sources"\nversion = "0.0.0"\nedition = "2021"\n'
                "[dependencies]\n"
                f'{CATEGORIES[0]} = "={CATEGORIES[1]}"\n'
                f'{NORMALIZATION[0]} = "={NORMALIZATION[1]}"\n'
            )
        os.makedirs(os.path.join(tmp, "src"))
        open(os.path.join(tmp, "src", "lib.rs"), "w").close()
        meta = json.loads(
            subprocess.check_output(
                ["cargo", "metadata", "--format-version", "1"], cwd=tmp
            )
        )
    dirs = {}
    for p in meta["packages"]:
        for name, version in (CATEGORIES, NORMALIZATION):
            if p["name"] == name and p["version"] == version:
                dirs[name] = os.path.dirname(p["manifest_path"])
    return dirs[CATEGORIES[0]], dirs[NORMALIZATION[0]]


def char_table(src, name):
    m = re.search(r"pub static " + name + r" : &'static \[char\] = &\[(.*?)\];", src, re.S)
    if m is None:
        sys.exit(f"table {name} not found")
    return [int(x, 16) for x in re.findall(r"\\u\{([0-9A-Fa-f]+)\}", m.group(1))]


def ranges(cps):
    out = []
    for c in sorted(set(cps)):
        if out and out[-1][1] + 1 == c:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def pack_ranges(cps):
    packed = []
    for lo, hi in ranges(cps):
        while lo <= hi:
            n = min(hi - lo + 1, 2048)
            packed.append(lo << 11 | (n - 1))
            lo += n
    return packed


def fmt_u32s(name, values, doc, cfg_test=False):
    lines = [f"/// {d}" for d in doc]
    if cfg_test:
        lines.append("#[cfg(test)]")
    lines.append(f"pub(super) static {name}: [u32; {len(values)}] = [")
    for i in range(0, len(values), 8):
        lines.append("    " + " ".join(f"0x{v:08x}," for v in values[i : i + 8]))
    lines.append("];")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--categories", help="source dir of unicode_categories 0.1.1")
    ap.add_argument("--normalization", help="source dir of unicode-normalization-alignments 0.1.12")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    if args.categories and args.normalization:
        cat_dir, norm_dir = args.categories, args.normalization
    else:
        cat_dir, norm_dir = locate_crates()
    cat = open(os.path.join(cat_dir, "src", "tables.rs"), encoding="utf-8").read()
    norm = open(os.path.join(norm_dir, "src", "tables.rs"), encoding="utf-8").read()

    # --- unicode_categories 0.1.1 ---
    # `is_other` = Cc | Cf | Co; Co = three hard-coded private-use planes/blocks plus the table.
    control = char_table(cat, "OTHER_CONTROL") + char_table(cat, "OTHER_FORMAT")
    control += char_table(cat, "OTHER_PRIVATE_USE")
    control += list(range(0xE000, 0xF900))
    # Planes 15 and 16 (U+F0000..=U+FFFFD, U+100000..=U+10FFFD) are private use too; the
    # tokenizer tests them in code (`c >= 0xF0000`, noncharacters aside) to keep the table small.
    assert all(c < 0xF0000 or c in (0xF0000, 0xFFFFD, 0x100000, 0x10FFFD) for c in control)
    control = [c for c in control if c < 0xF0000]
    mn = set(char_table(cat, "MARK_NONSPACING"))
    punct = []
    for t in ("CONNECTOR", "DASH", "CLOSE", "FINAL_QUOTE", "INITIAL_QUOTE", "OTHER", "OPEN"):
        punct += char_table(cat, "PUNCTUATION_" + t)
    # Sanity checks that pin the Unicode version: present in 8.0, absent from 9.0 data.
    assert 0x1DA00 in mn and 0x1E944 not in mn, "unicode_categories is not the Unicode 8.0 table"
    assert 0x08E2 not in control and 0x061C in control

    # --- unicode-normalization-alignments 0.1.12 ---
    ver = re.search(r"UNICODE_VERSION: \(u64, u64, u64\) = \((\d+), (\d+), (\d+)\)", norm)
    norm_version = ".".join(ver.groups())
    assert norm_version == "9.0.0", norm_version
    m = re.search(r"CANONICAL_DECOMPOSED_KV: &\[\(u32, &'static \[char\]\)\] = &\[(.*?)\n\];", norm, re.S)
    decomp = {}
    for key, chars in re.findall(r"\((0x[0-9a-fA-F]+), &\[(.*?)\]\)", m.group(1)):
        decomp[int(key, 16)] = [int(x, 16) for x in re.findall(r"\\u\{([0-9A-Fa-f]+)\}", chars)]
    m = re.search(r"CANONICAL_COMBINING_CLASS_KV: &\[u32\] = &\[(.*?)\];", norm, re.S)
    ccc = {v >> 8: v & 0xFF for v in (int(x, 16) for x in re.findall(r"0x[0-9A-Fa-f]+", m.group(1)))}
    # The crate stores *full* decompositions: nothing in a value decomposes further.
    assert all(d not in decomp for v in decomp.values() for d in v)
    assert not any(0xAC00 <= k < 0xAC00 + 11172 for k in decomp), "Hangul is algorithmic"

    keys, values, extra = [], [], []
    for k in sorted(decomp):
        stripped = [c for c in decomp[k] if c not in mn]
        keys.append(k)
        if len(stripped) == 1:
            values.append(stripped[0])
        else:
            values.append(0x8000_0000 | len(stripped) << 16 | len(extra))
            extra += stripped
    assert len(extra) < 0x10000

    reorderable = sorted(c for c, k in ccc.items() if k != 0 and c not in mn)

    out = [
        "//! Unicode tables for the BERT normalizer and pre-tokenizer.",
        "//!",
        "//! Generated by `scripts/gen-unicode-tables.py`; do not edit. Categories are from",
        f"//! Unicode 8.0.0 (crate `{CATEGORIES[0]}` {CATEGORIES[1]}), canonical decompositions",
        f"//! from Unicode {norm_version} (crate `{NORMALIZATION[0]}` {NORMALIZATION[1]}): the",
        "//! exact tables HF `tokenizers` links for `BertNormalizer` and `BertPreTokenizer`.",
        "",
        "/// Unicode version of [`CONTROL`], [`NONSPACING_MARK`] and [`PUNCTUATION`].",
        'pub(super) const CATEGORIES_VERSION: &str = "8.0.0";',
        "/// Unicode version of the decomposition tables.",
        f'pub(super) const DECOMPOSITION_VERSION: &str = "{norm_version}";',
        "",
        fmt_u32s("CONTROL", pack_ranges(control),
                 ["Cc, Cf and Co below U+F0000 (packed ranges `start << 11 | (len - 1)`)."]),
        "",
        fmt_u32s("NONSPACING_MARK", pack_ranges(mn), ["Mn (packed ranges)."]),
        "",
        fmt_u32s("PUNCTUATION", pack_ranges(punct), ["Pc, Pd, Pe, Pf, Pi, Po and Ps (packed ranges)."]),
        "",
        fmt_u32s("DECOMP_KEYS", keys, ["Code points that have a canonical decomposition, ascending."]),
        "",
        fmt_u32s("DECOMP_VALUES", values, [
            "The decomposition of `DECOMP_KEYS[i]` without Mn: one char (`< 0x110000`), or",
            "`0x8000_0000 | len << 16 | offset` into [`DECOMP_EXTRA`].",
        ]),
        "",
        fmt_u32s("DECOMP_EXTRA", extra, ["Multi-char (or empty) decompositions."]),
        "",
        fmt_u32s("REORDERABLE", pack_ranges(reorderable), [
            "Non-Mn characters with a non-zero combining class: the only ones whose order",
            "canonical reordering could change (packed ranges).",
        ], cfg_test=True),
        "",
    ]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    subprocess.check_call(["rustfmt", "--edition", "2021", args.out])
    sizes = {
        "CONTROL": len(pack_ranges(control)),
        "NONSPACING_MARK": len(pack_ranges(mn)),
        "PUNCTUATION": len(pack_ranges(punct)),
        "DECOMP_KEYS": len(keys),
        "DECOMP_VALUES": len(values),
        "DECOMP_EXTRA": len(extra),
    }
    total = sum(sizes.values()) * 4
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in sizes.items()) + f"; {total} bytes",
          file=sys.stderr)


if __name__ == "__main__":
    main()
