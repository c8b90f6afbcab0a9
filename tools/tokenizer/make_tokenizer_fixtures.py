#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/tokenizer_cases.json, the reference for tests/tokenizer.rs.

The ids come from open_clip's SimpleTokenizer (the tokenizer MVFA uses); the MVFA sentences are
built here independently of src/model/clip/prompts.rs, straight from spec 3.2/3.3, so the Rust
test checks both the sentence list and the ids. The text features use a fake sentence encoder
(a closed-form embedding of the padded token ids, below) that tests/tokenizer.rs re-implements,
so the spec 3.4 reduction (L2-normalise, mean per state, L2-normalise) is checked on its own.

Run by hand with the reference venv:
    /work/pyref/bin/python tools/tokenizer/make_tokenizer_fixtures.py
"""
import json
import pathlib

import numpy as np
import open_clip
import torch
from open_clip.tokenizer import SimpleTokenizer

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "tokenizer" / "tokenizer_cases.json"

NORMAL = ["{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw",
          "{} without defect", "{} without damage"]
ABNORMAL = ["damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage"]
TEMPLATES = [
    "a bad photo of a {}.", "a low resolution photo of the {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a bright photo of a {}.", "a dark photo of the {}.",
    "a photo of my {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.",
    "a photo of one {}.", "a close-up photo of the {}.", "a photo of a {}.",
    "a low resolution photo of a {}.", "a photo of a large {}.", "a blurry photo of a {}.",
    "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a photo of the small {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "a dark photo of a {}.",
    "a photo of a cool {}.", "a photo of a small {}.", "there is a {} in the scene.",
    "there is the {} in the scene.", "this is a {} in the scene.",
    "this is the {} in the scene.", "this is one {} in the scene.",
]
assert len(TEMPLATES) == 35


def sentences(states, organ):
    # MVFA's loop order: state phrase outer, template inner.
    return [t.format(s.format(organ)) for s in states for t in TEMPLATES]


ODD = [
    "",
    "   \t\n  ",
    "\n\n\t",
    "a Photo OF the BRAIN.",
    "MiXeD CaSe WoRdS",
    "&amp; &lt;3 &#39;",
    "&amp;amp; &EACUTE; P&eacute;rez &notit; &nosuch; &copy2024",
    "&#x1F642; &#128; &#0; &#55296; &#99999999999; &#1114112; &#65535; &#x27;",
    "&amp;amp;amp;amp;lt;",
    "a < b &amp;amp; c",
    "x<y\n&amp;amp;amp;",
    "first &amp;amp;amp; line\nsecond <b> line\nthird &amp;amp;amp;",
    "!!!??? ... --- *** ///",
    "a,b;c:d!e?f",
    "12345",
    "3.14",
    "1st 2nd 3rd 10x",
    "it's don't we'll I'M they've you'd she's",
    "'s 't 're 've 'm 'll 'd",
    "café über naïve résumé",
    "中文",
    "Ελληνικά",
    "🙂",
    "emoji 🙂 inside 👍🏽 text 👨‍👩‍👧",
    "नमस्ते दुनिया",
    "مرحبا بالعالم",
    "ΣΑΣ ΟΔΟΣ",
    "İstanbul",
    "Straße",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "supercalifragilisticexpialidocious" * 3,
    "<|startoftext|> hi <|endoftext|>",
    "<start_of_text>hello<end_of_text>",
    "<START_OF_TEXT> shouting <END_OF_TEXT>",
    "ＬＯＵＤ　ＮＯＩＳＥＳ",
    "ﾃｽﾄ ｶﾀｶﾅ",
    "ﬂuﬃeﬆ",
    "\u201chere\u2019s a test\u201d \u2018ok\u2019",
    "cafe\u0301",
    "a\x00b\x01c\x7fd\ufeffe",
    "\x1b[36;44mblue\x1b[0m text",
    "\x93quoted\x94 \x85",
    "line1\r\nline2\u2028line3\u2029line4\x85line5",
    "\u00a0nbsp\u2003em\u3000ideographic",
    "tab\there\x0bvt\x0cff",
    "zero\u200bwidth\u200djoiner",
    "a bad photo of a Brain without flaw.",
    "Chest X-ray film with damage",
    "retinal OCT",
    "histopathological image without defect",
]


def main():
    tok = SimpleTokenizer()
    assert tok.sot_token_id == 49406 and tok.eot_token_id == 49407 and tok.vocab_size == 49408

    prompts = {}
    for organ in ["Brain", "Chest X-ray film"]:
        prompts[organ] = {
            state: [{"text": s, "ids": tok.encode(s)} for s in sentences(states, organ)]
            for state, states in (("normal", NORMAL), ("abnormal", ABNORMAL))
        }

    cases = [{"text": t, "ids": tok.encode(t)} for t in ODD]

    # A sentence whose body is exactly 75 tokens (fills the 77 context with start/end), and the
    # same plus one word (76 + 2 > 77: open_clip truncates silently, the Rust port errors).
    words = "the lesion in this brain scan looks slightly irregular".split()
    body = []
    i = 0
    while len(tok.encode(" ".join(body))) < 75:
        body.append(words[i % len(words)])
        i += 1
    near = " ".join(body)
    assert len(tok.encode(near)) == 75, len(tok.encode(near))
    over = near + " brain"
    assert len(tok.encode(over)) == 76
    near_padded = open_clip.tokenize([near])[0].tolist()

    padded_texts = ["a bad photo of a Brain without flaw.", "", "it's 3.14 &amp; 🙂"]
    padded = open_clip.tokenize(padded_texts).tolist()

    # Fake sentence encoder: emb[n, d] = sum_p (p + 1) / 77 * sin(0.0137 * id[n, p] * (d + 1) + 0.71 * d)
    # over the 77 padded positions, float64. Then spec 3.4.
    embed_dim = 16
    d = np.arange(embed_dim, dtype=np.float64)

    def fake_encode(ids):  # ids: [n, 77] int64
        ids = ids.astype(np.float64)
        w = (np.arange(ids.shape[1], dtype=np.float64) + 1.0) / 77.0
        e = np.sin(0.0137 * ids[:, :, None] * (d[None, None, :] + 1.0) + 0.71 * d[None, None, :])
        return (e * w[None, :, None]).sum(axis=1)

    features = {}
    for organ in ["Brain", "Chest X-ray film"]:
        cols = []
        for states in (NORMAL, ABNORMAL):
            ids = open_clip.tokenize(sentences(states, organ)).numpy().astype(np.int64)
            emb = fake_encode(ids)
            emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
            mean = emb.mean(axis=0)
            cols.append(mean / np.linalg.norm(mean))
        features[organ] = np.stack(cols, axis=1).tolist()  # [embed_dim, 2]

    doc = {
        "source": f"open_clip_torch {open_clip.__version__} SimpleTokenizer, torch {torch.__version__}",
        "prompts": prompts,
        "cases": cases,
        "near_limit": {"text": near, "padded": near_padded},
        "over_limit": over,
        "padded": {"texts": padded_texts, "ids": padded},
        "text_features": {"embed_dim": embed_dim, "features": features},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, ensure_ascii=True, separators=(",", ":")) + "\n")
    print(f"wrote {OUT}: {sum(len(v['normal']) + len(v['abnormal']) for v in prompts.values())} prompt sentences, {len(cases)} odd cases")


if __name__ == "__main__":
    main()
