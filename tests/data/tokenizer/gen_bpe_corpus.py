#!/usr/bin/env python3
"""Generate tests/data/tokenizer/bpe-corpus.jsonl: strings and llama.cpp's token ids for them.

The reference is llama.cpp's own tokenizer, `llama-tokenize`, run on SmolLM2-135M-Instruct's
GGUF file (tokenizer.ggml.model = gpt2, pre = smollm) with its defaults: special tokens in
the text are parsed, a BOS token is added only if the file asks for one (it does not).
Every string is written to a file and tokenized with `-f FILE --no-escape`, so the bytes
reach the tokenizer unchanged.

Each output line: {"kind": ..., "text": ..., "ids": [...]}.

The strings are deterministic: hand-picked cases (hard Unicode, emoji, CJK, combining
marks, digit runs, whitespace runs with tabs and newlines, code, ChatML markup with
<|im_start|>, contractions, invalid-looking input) plus seeded random mixes of the same
ingredients.

Usage: gen_bpe_corpus.py [--llama-tokenize BIN] [--model GGUF] [--out FILE]
Defaults: `$(scripts/llama-cpp)/llama-tokenize`, ~/.cache/riffle/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf,
tests/data/tokenizer/bpe-corpus.jsonl.
"""
import argparse
import json
import os
import random
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
DEFAULT_MODEL = os.path.expanduser("~/.cache/riffle/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")

HAND = {
    "english": [
        "Hello world! 123",
        "The quick brown fox jumps over the lazy dog.",
        "Hello",
        " Hello",
        "  Hello",
        "Hello ",
        "Hello  ",
        "a",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\t",
        "I can't believe it's not butter!",
        "She'll say they're right, we've seen what I'm doing, he'd agree.",
        "SHE'LL SAY THEY'RE RIGHT",
        "it's 'quoted' and 's 't 're 've 'm 'll 'd",
        "''s'''t",
        "rock 'n' roll",
        "don't-stop",
        "e-mail: someone@example.com, web: https://example.org/path?q=1&x=y#frag",
        "Mr. Smith paid $3.50 for 2 apples (and 1/2 a pear).",
        "What?! No... really??? Yes!!!",
        "UPPER lower MiXeD CamelCase snake_case kebab-case",
    ],
    "digits": [
        "0",
        "12",
        "123",
        "1234567890",
        "3.14159265358979",
        "1,000,000",
        "-42",
        "+1 (555) 010-9999",
        "2026-12-04T13:16:34Z",
        "0x1F600 0b1010 1e-9",
        "version 1.2.3-rc4",
        "a1b2c3",
        "abc123def",
        " 1 2 3 ",
        "١٢٣ ٤٥٦",
        "一二三 ⅠⅡⅢ ½ ¾ ² ³ ① ②",
        "१२३४ ๑๒๓",
        "１２３ full-width",
    ],
    "whitespace": [
        "a  b",
        "a   b",
        "a\tb",
        "a\t\tb",
        "a\nb",
        "a\n\nb",
        "a\r\nb",
        "a \n b",
        "a\n \nb",
        "line one\nline two\n",
        "   leading spaces",
        "trailing spaces   ",
        "\t\tindented\n\t\t\tmore",
        " \t \n \r\n ",
        "a\u00a0b\u2003c\u3000d",
        "x\u2028y\u2029z",
        "x\u0085y",
        "x\u000by\u000cz",
        "end with newline\n",
        "mixed \t\n\t whitespace  \n\n  runs",
    ],
    "unicode": [
        "café naïve résumé",
        "Zürich Straße ÄÖÜ äöü ß",
        "Ελληνικά κείμενα",
        "Русский текст, ёжик",
        "עברית מימין לשמאל",
        "العربية: مرحبا بالعالم",
        "हिन्दी देवनागरी",
        "ภาษาไทย",
        "한국어 텍스트",
        "日本語のテキスト、カタカナとひらがな。",
        "中文文本，标点符号。",
        "繁體中文測試",
        "e\u0301 a\u0300 o\u0308 n\u0303",
        "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030e\u0305\u035b\u0341\u0334\u033b\u0348\u034d\u0354\u0339O\u0342\u030c\u030c\u0358\u0328\u0335\u0339\u033b\u031d\u0333!",
        "ﬁ ﬂ ﬀ ligatures",
        "Ａｂｃ full-width ｶﾀｶﾅ",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 𝒮𝒸𝓇𝒾𝓅𝓉",
        "ℌℑℜ ℕℤℚℝℂ ∀x∃y: x≤y ⇒ ∑∫∂√∞",
        "™ © ® ° ± × ÷ µ ¶ §",
        "€100 £50 ¥1000 ₹500 ₿0.1",
        "«quotes» „German“ “curly” ‘single’ 「CJK」",
        "— – ‒ ― dashes … ellipsis",
        "İstanbul ı I i",
        "ǅ ǈ ǋ titlecase",
        "ᾼ ῌ ῼ",
        "\u200b\u200c\u200d zero widths \ufeff",
        "\u202e reversed \u202c",
        "𐍈𐌰𐌹 gothic 𓀀 hieroglyph",
        "\U0002ebf0\U0002ebf1 ext-I ideographs",
        "\U00031350 ext-H",
        "Ꭰ Cherokee ᏣᎳᎩ",
        "ʻOkina ʼapostrophe ˈstress",
    ],
    "emoji": [
        "😀",
        "😀😃😄",
        "Hi 👋 there 🌍!",
        "👨‍👩‍👧‍👦 family",
        "👍🏽 skin tone",
        "🇩🇪🇫🇷🇯🇵 flags",
        "❤️ ❤ ♥",
        "🏳️‍🌈",
        "1️⃣ #️⃣ keycaps",
        "🧑🏿‍🚀 astronaut",
        "emoji😀glued😀together",
    ],
    "code": [
        "fn main() {\n    println!(\"Hello, world!\");\n}\n",
        "def f(x):\n\treturn x ** 2  # square\n",
        "if (a && b || !c) { x += 1; } else { x -= 1; }",
        "for (int i = 0; i < n; ++i) arr[i] = i * 2;",
        "const re = /^[a-z0-9_-]{3,16}$/i;",
        "<div class=\"box\"><p>Hi</p></div>",
        "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';",
        "x = {'a': [1, 2, 3], \"b\": None}",
        "#include <stdio.h>\nint main(void) { return 0; }",
        "$ cargo test -p riffle-core --lib -- --nocapture",
        "    indented_four\n        indented_eight",
        "a->b, a=>b, a::b, a..=b, a!=b, a<=b, a>>=b",
        "// comment\n/* block */\n-- sql\n# shell",
        "\"\\n\\t\\\\\" escaped",
        "`backticks` ~tilde~ ^caret^ |pipe|",
        "matrix[i][j] = (a[i] * b[j]) % 1_000_000_007;",
    ],
    "chat": [
        "<|im_start|>user\nHello!<|im_end|>\n",
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>assistant\n4<|im_end|>",
        "<|endoftext|>",
        "text<|endoftext|>more text",
        "<|im_start|><|im_end|>",
        "<|im_start|><|im_start|>",
        " <|im_start|> spaced <|im_end|> ",
        "<|im_start",
        "<|im_end|",
        "|im_start|>",
        "<|im_start|x",
        "<<|im_start|>>",
        "<|IM_START|>",
        "<repo_name>riffle<file_sep>src/lib.rs<filename>main.rs",
        "<gh_stars>100<issue_start>bug<issue_comment>fixed<issue_closed>",
        "<jupyter_start><jupyter_text>text<jupyter_code>print(1)<jupyter_output>1<empty_output>",
        "<reponame> vs <repo_name>",
        "<s></s><unk>[INST]",
    ],
    "invalid-looking": [
        "\ufffd",
        "\ufffd\ufffd replacement",
        "\\ud800 \\xff \\u0000",
        "\uffff\ufffe noncharacters",
        "\U0010ffff \U000f0000 private",
        "\ue000\uf8ff private use",
        "\u0378\u0379 unassigned",
        "\U000e0001\U000e0041 tags",
        "\x00",
        "a\x00b",
        "\x01\x02\x03\x7f",
        "\x1b[31mred\x1b[0m",
        "bell\x07 backspace\x08",
        "ÃƒÂ© mojibake â€™",
        "%E2%9C%93 %00 %FF",
        "&amp; &lt; &#x1F600; &#0;",
    ],
}

ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    "          ",
    "\t\n\r",
    ".,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`",
    "'s't're've'm'll'd",
    "éèêëàâäîïôöûüçñßøåæœ",
    "αβγδεζηθικλμνξοπρστυφχψω",
    "абвгдежзийклмнопрстуфхцчшщъыьэюя",
    "日本語中文字漢字測試你好世界",
    "ひらがなカタカナ",
    "한국어텍스트",
    "\u0300\u0301\u0302\u0308\u0327\u0303",
    "😀👍🏽🌍❤️🇩🇪👨‍👩‍👧",
    "١٢٣٤٥٦٧٨٩٠१२३४५",
    "\u00a0\u2003\u3000\u2028\u0085",
    "½¾²³①ⅠⅡ",
    "€£¥₹©®™°±×÷",
]

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<file_sep>", "<issue_start>"]

WORDS = (
    "the of and to in is that for it as was with be by on not he I this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no will can more my out up about who them some could into than then only its time "
    "tokenizer adapter orthogonal riffle llama merge rank byte pair encoding"
).split()


def random_strings(count, rng):
    out = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            # random characters from a few alphabets
            alphabets = rng.sample(ALPHABETS, rng.randint(1, 4))
            n = rng.randint(1, 40)
            out.append("".join(rng.choice(rng.choice(alphabets)) for _ in range(n)))
        elif kind == 1:
            # words with random separators
            n = rng.randint(1, 12)
            seps = [" ", " ", " ", "  ", "\n", "\t", ", ", ". ", "'s ", "-", "_", "1", " 42 "]
            out.append("".join(rng.choice(WORDS) + rng.choice(seps) for _ in range(n)))
        elif kind == 2:
            # chat markup around random text
            n = rng.randint(1, 4)
            parts = []
            for _ in range(n):
                parts.append(rng.choice(SPECIALS))
                parts.append(rng.choice(["user\n", "assistant\n", "", " ", "\n"]))
                parts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 6))))
            out.append("".join(parts))
        else:
            # random code points from the BMP and beyond (surrogates excluded)
            n = rng.randint(1, 12)
            s = []
            for _ in range(n):
                while True:
                    cp = rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0x2FFF),
                                     rng.randint(0x3000, 0xD7FF), rng.randint(0xE000, 0xFFFF),
                                     rng.randint(0x10000, 0x10FFFF)])
                    if not 0xD800 <= cp <= 0xDFFF:
                        break
                s.append(chr(cp))
            out.append("".join(s))
    return out


def tokenize(binary, model, text, tmp):
    path = os.path.join(tmp, "text")
    with open(path, "wb") as f:
        f.write(text.encode("utf-8"))
    res = subprocess.run(
        [binary, "-m", model, "-f", path, "--no-escape", "--ids", "--log-disable"],
        check=True, capture_output=True,
    )
    line = res.stdout.decode().strip().splitlines()[-1]
    return json.loads(line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-tokenize")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=os.path.join(HERE, "bpe-corpus.jsonl"))
    ap.add_argument("--random", type=int, default=860)
    args = ap.parse_args()
    binary = args.llama_tokenize
    if not binary:
        bindir = subprocess.run([os.path.join(ROOT, "scripts", "llama-cpp")], check=True,
                                capture_output=True).stdout.decode().strip().splitlines()[-1]
        binary = os.path.join(bindir, "llama-tokenize")
    rng = random.Random(18)
    cases = [(kind, s) for kind, strings in HAND.items() for s in strings]
    cases += [("random", s) for s in random_strings(args.random, rng)]
    seen = set()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, text in cases:
            if text in seen:
                continue
            seen.add(text)
            rows.append({"kind": kind, "text": text, "ids": tokenize(binary, args.model, text, tmp)})
    with open(args.out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} strings -> {args.out}")


if __name__ == "__main__":
    main()
