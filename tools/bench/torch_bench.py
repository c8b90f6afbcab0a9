#!/usr/bin/env python3
"""PyTorch side of `mvfa-dev bench --compare`: the same measurements as our `bench`, with
random weights, on the CPU, printed as one JSON object on stdout (progress on stderr).

    python3 tools/bench/torch_bench.py                     # ViT-L/14 at 240 px, as `bench`
    python3 tools/bench/torch_bench.py --layers 4 --width 64 --embed-dim 32 \\
        --text-layers 2 --text-width 32 --repeat 1         # a quick run on a small tower

Needs torch and open_clip (pip install torch open_clip_torch). The model is the reference code
of the parity fixtures, not a new one: open_clip's CLIP built at 240 px (17 x 17 grid, 290
tokens; the same cost as the 336 px table resized per spec 1.1), erf GELU, and the MVFA hook,
adapters, scoring and losses of tools/parity/make_mvfa_fixtures.py (its `clip_adapted_forward`
with the taps of the real tower, 6/12/18/24 for 24 blocks, spec 2).

Rows (keys of "rows"; each {"median_ms", "min_ms"}, per image where the key says so):
- forward_b{N}: adapted forward pass under no_grad, batch N, ms per image
- text: text features of one organ word: the 245 normal and 175 abnormal sentences in chunks of
  at most 64, each chunk cut after its longest sentence's end-of-text token (spec 3.4 porting
  tip), random token ids; `--text-chunks` gives n:columns per chunk, which `bench --compare`
  takes from our tokenizer (the default is what it gives for "Brain")
- few_shot: few-shot search k shots (11 k support images), 4 levels, one head, one query; the
  bank is normalised once outside the timing
- train_step: forward with autograd, focal + dice + BCE at every level, backward, two Adam steps
  (seg, det), batch 1
Each row: one untimed warm-up run, then --repeat timed runs. "peak_rss_bytes" is ru_maxrss.
"""
import argparse
import json
import math
import os
import resource
import sys
import time
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "parity"))
try:
    import safetensors.torch  # noqa: F401  (the fixture script imports it; nothing is saved)
except ImportError:
    _st = types.ModuleType("safetensors.torch")
    _st.save_file = None
    sys.modules["safetensors"] = types.ModuleType("safetensors")
    sys.modules["safetensors.torch"] = _st
import make_mvfa_fixtures as ref  # noqa: E402

AUGMENT_FACTOR = 11
# `--text-chunks` for the organ word "Brain" (what `bench --compare` passes for it).
BRAIN_CHUNKS = "64:13,64:16,64:15,53:14,64:13,64:14,47:14"
SIZE = 240
PATCH = 14


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def timed(repeat, per, f):
    f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3 / per)
    times.sort()
    n = len(times)
    med = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    return {"median_ms": med, "min_ms": times[0]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--embed-dim", type=int, default=768)
    p.add_argument("--text-layers", type=int, default=12)
    p.add_argument("--text-width", type=int, default=768)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--shots", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--text-chunks", default=BRAIN_CHUNKS,
                   help="n:columns per chunk of sentences, normal chunks then abnormal")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from open_clip.model import CLIP

    heads = a.heads or max(a.width // 64, 1)
    torch.manual_seed(2024)
    model = CLIP(
        a.embed_dim,
        dict(image_size=SIZE, layers=a.layers, width=a.width, patch_size=PATCH,
             head_width=a.width // heads),
        dict(context_length=77, vocab_size=49408, width=a.text_width,
             heads=max(a.text_width // 64, 1), layers=a.text_layers),
        quick_gelu=False,
    ).eval()
    for q in model.parameters():
        q.requires_grad_(False)  # frozen backbone, spec 2
    visual = model.visual
    tokens = 1 + (SIZE // PATCH) ** 2
    ref.TAPS = [a.layers * (i + 1) // 4 for i in range(4)]
    levels = len(ref.TAPS)
    seg, det = ref.make_banks(a.width, a.embed_dim, levels)
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads; vision {a.layers} blocks "
        f"width {a.width} heads {heads}, taps {ref.TAPS}")
    rows = {}

    # 1. Adapted forward pass.
    for batch in [int(b) for b in a.batches.split(",") if b]:
        images = torch.rand(batch, 3, SIZE, SIZE)

        def fwd():
            with torch.no_grad():
                _, _, s, d = ref.clip_adapted_forward(visual, images, seg, det)
                (s[-1].sum() + d[-1].sum()).item()

        rows[f"forward_b{batch}"] = timed(a.repeat, batch, fwd)
        log(f"forward batch {batch}: {rows[f'forward_b{batch}']}")

    # 2. Text features of one organ word (open_clip's encode_text, cut at the EOT column).
    chunks = [tuple(int(v) for v in c.split(":")) for c in a.text_chunks.split(",") if c]

    def encode_cut(ids):
        n, keep = ids.shape
        x = model.token_embedding(ids) + model.positional_embedding[:keep]
        mask = model.attn_mask[:keep, :keep]
        x = model.transformer(x, attn_mask=mask)
        x = model.ln_final(x)
        return x[torch.arange(n), ids.argmax(dim=-1)] @ model.text_projection

    id_sets = []
    for n, keep in chunks:
        ids = torch.randint(1, 49406, (n, keep))
        ids[:, 0] = 49406
        ids[:, -1] = 49407  # the longest sentence ends at the cut; argmax finds EOT
        id_sets.append(ids)

    def text():
        with torch.no_grad():
            total = 0
            for ids in id_sets:
                f = encode_cut(ids)
                f = f / f.norm(dim=-1, keepdim=True)
                total = total + f.sum(dim=0)  # the per-state means are sums of these
            total.sum().item()

    rows["text"] = timed(a.repeat, 1, text)
    log(f"text: {rows['text']}")

    # 3. Few-shot search: one query against the k-shot bank, 4 levels, one head.
    bank_rows = AUGMENT_FACTOR * a.shots * tokens
    banks = [torch.randn(bank_rows, a.embed_dim) for _ in range(levels)]
    banks = [b / torch.clamp(b.norm(dim=1, keepdim=True), min=1e-8) for b in banks]
    query = [torch.randn(1, tokens, a.embed_dim) for _ in range(levels)]

    def few_shot():
        with torch.no_grad():
            total = 0
            for q, b in zip(query, banks):
                t = q[0, 1:, :]
                t = t / torch.clamp(t.norm(dim=1, keepdim=True), min=1e-8)
                d = (1 - b @ t.t()).min(dim=0)[0]
                g = int(math.sqrt(d.shape[0]))
                total = total + torch.nn.functional.interpolate(
                    d.reshape(1, 1, g, g), size=SIZE, mode="bilinear", align_corners=True)
            total.sum().item()

    rows["few_shot"] = timed(a.repeat, 1, few_shot)
    log(f"few-shot: {rows['few_shot']}")

    # 4. One training step, batch 1 (spec 5.1, 5.2; the losses of the parity fixtures).
    text_feats = torch.randn(a.embed_dim, 2)
    text_feats = text_feats / text_feats.norm(dim=0, keepdim=True)
    image = torch.rand(1, 3, SIZE, SIZE)
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, SIZE // 3:SIZE // 2, SIZE // 3:SIZE // 2] = 1.0
    label = torch.tensor([1.0])
    opt_seg = torch.optim.Adam(seg.parameters(), lr=1e-3, betas=(0.5, 0.999), eps=1e-8)
    opt_det = torch.optim.Adam(det.parameters(), lr=1e-3, betas=(0.5, 0.999), eps=1e-8)
    bce = torch.nn.BCEWithLogitsLoss()

    def step():
        _, _, s, d = ref.clip_adapted_forward(visual, image, seg, det)
        loss = 0
        for l in range(levels):
            probs = ref.pixel_probs(s[l], text_feats)
            loss = loss + ref.focal_loss(probs, mask) + ref.dice_loss(probs[:, 1], mask)
            loss = loss + bce(ref.level_score(d[l], text_feats), label)
        opt_seg.zero_grad()
        opt_det.zero_grad()
        loss.backward()
        opt_seg.step()
        opt_det.step()
        loss.item()

    rows["train_step"] = timed(a.repeat, 1, step)
    log(f"training step: {rows['train_step']}")

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    import open_clip
    print(json.dumps({
        "torch": torch.__version__,
        "open_clip": getattr(open_clip, "__version__", "?"),
        "threads": torch.get_num_threads(),
        "rows": rows,
        "peak_rss_bytes": peak,
    }))


if __name__ == "__main__":
    sys.exit(main())
