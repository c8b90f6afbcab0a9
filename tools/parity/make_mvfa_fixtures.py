#!/usr/bin/env python3
"""Writes tests/fixtures/mvfa/: PyTorch reference values for the MVFA adapters, scoring,
losses and one Adam step (read by tests/mvfa_parity.rs and tests/mvfa_checkpoints.rs).

Run by hand from the repository root:  /work/pyref/bin/python tools/parity/make_mvfa_fixtures.py

The reference side below follows docs/mvfa-spec.md sections 2, 4, 5.1, 5.2, 5.5 formula by
formula (adapter module with Sequential(Linear, LeakyReLU) so that the state-dict keys are
`{i}.fc1.0.weight`; the reference's focal / dice / BCE-with-logits-on-a-probability losses;
`F.interpolate(..., mode='bilinear', align_corners=True)`; the eps-clamped cosine of the
memory bank; two Adam optimisers with betas (0.5, 0.999)).

Phase A (no CLIP backbone needed): a small stand-in backbone of 8 residual "blocks"
`x <- x + tanh(x @ A_b)` on random tokens [1, 290, W], tapped after blocks 2, 4, 6, 8, so the
hook chaining (taps before mixing, mixing feeding the next block, gradients of later levels
reaching earlier adapters through the stream) is exercised exactly as with the real tower.
Sizes: W = 64, E = 32, grid 17 (290 tokens), maps at 240 x 240. To keep the fixture small,
token tensors are stored at every 7th token (TOKEN_ROWS), per-level maps at every 7th
row/column plus the last (MAP_IDX), fused maps at every 3rd plus the last (FUSED_IDX); scores
and losses cover the full maps.

Outputs:
- phase_a.safetensors      inputs, intermediate tensors, scores, maps, losses, gradients of
                           the total loss, weights after one Adam step (metadata: sizes,
                           torch version)
- phase_b.safetensors      the same through the CLIP fixture tower (float64 reference)
- phase_b_adapters.pth     its random adapters (width 32, bottleneck 16)
- phase_a_adapters.pth     the random adapters in the reference checkpoint layout
- tiny_*.pth               W = 4, E = 2 checkpoints for the importer's tests (valid, f16,
                           missing key, wrong shape, five levels, a bare bank state dict,
                           another model's state dict) and tiny_valid_reference.safetensors
                           (the valid one's tensors, flat, for checking the import)
"""

import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "mvfa")

W, E, GRID, SIZE = 64, 32, 17, 240
TOKENS = 1 + GRID * GRID
TOY_BLOCKS = 8
TAPS = [2, 4, 6, 8]
LEVELS = len(TAPS)
N_SUPPORT = 2
MIX = (0.8, 0.1, 0.1)
LOGIT_SCALE = 100.0
# Token rows / map rows+cols stored for the per-level tensors that are large (see the Rust
# test for the same lists).
TOKEN_ROWS = list(range(0, TOKENS, 7))
MAP_IDX = list(range(0, SIZE, 7)) + [SIZE - 1]
FUSED_IDX = list(range(0, SIZE, 3)) + [SIZE - 1]
# The stand-in blocks alternate between two random matrices (keeps the fixture small).
N_MATRICES = 2


class Adapter(nn.Module):
    """Two bias-free Linear layers each followed by LeakyReLU(0.01); returns (h, y)."""

    def __init__(self, width, bottleneck):
        super().__init__()
        self.fc1 = nn.Sequential(nn.Linear(width, bottleneck, bias=False), nn.LeakyReLU())
        self.fc2 = nn.Sequential(nn.Linear(bottleneck, width, bias=False), nn.LeakyReLU())

    def forward(self, x):
        h = self.fc1(x)
        return h, self.fc2(h)


def make_banks(width, bottleneck, levels):
    seg = nn.ModuleList([Adapter(width, bottleneck) for _ in range(levels)])
    det = nn.ModuleList([Adapter(width, bottleneck) for _ in range(levels)])
    return seg, det


def adapted_forward(x, blocks, seg, det):
    """Stand-in backbone with the MVFA hook after each tapped block (spec 2)."""
    taps, mixed, seg_tok, det_tok = [], [], [], []
    for b in range(TOY_BLOCKS):
        x = x + torch.tanh(x @ blocks[b % N_MATRICES])
        if b + 1 in TAPS:
            level = TAPS.index(b + 1)
            h_seg, y_seg = seg[level](x)
            h_det, y_det = det[level](x)
            taps.append(x)
            seg_tok.append(h_seg)
            det_tok.append(h_det)
            x = MIX[0] * x + MIX[1] * y_seg + MIX[2] * y_det
            mixed.append(x)
    return taps, mixed, seg_tok, det_tok


def text_logits(tokens, text):
    """[B, 290, E] -> [B, 289, 2]: CLS dropped, per-token L2 norm, x100, @ T (spec 4)."""
    p = tokens[:, 1:, :]
    p = p / p.norm(dim=-1, keepdim=True)
    return LOGIT_SCALE * p @ text


def level_score(tokens, text):
    """s_l = mean over patches of softmax(logits)[..., 1], [B]."""
    return torch.softmax(text_logits(tokens, text), dim=-1)[:, :, 1].mean(dim=-1)


def pixel_probs(tokens, text):
    """Logits -> [B, 2, g, g] -> bilinear (align_corners=True) to SIZE -> softmax(dim=1)."""
    logits = text_logits(tokens, text)
    b, n, c = logits.shape
    g = int(math.sqrt(n))
    planes = logits.permute(0, 2, 1).reshape(b, c, g, g)
    up = F.interpolate(planes, size=SIZE, mode="bilinear", align_corners=True)
    return torch.softmax(up, dim=1)


def cos_sim(a, b, eps=1e-8):
    a_n = a.norm(dim=1)[:, None]
    b_n = b.norm(dim=1)[:, None]
    a = a / torch.max(a_n, eps * torch.ones_like(a_n))
    b = b / torch.max(b_n, eps * torch.ones_like(b_n))
    return a @ b.t()


def few_shot_map(tokens, memory):
    """Batch element 0: min over memory rows of (1 - cos), upsampled to SIZE, [1, S, S]."""
    d = (1 - cos_sim(memory, tokens[0, 1:, :])).min(dim=0)[0]
    g = int(math.sqrt(d.shape[0]))
    up = F.interpolate(d.reshape(1, 1, g, g), size=SIZE, mode="bilinear", align_corners=True)
    return up[0]


def focal_loss(probs, target, gamma=2, smooth=1e-5):
    """The reference focal loss (alpha 1): one-hot clamped to [smooth, 1 - smooth],
    pt = sum onehot * P + smooth, -(1 - pt)^gamma log pt, mean over pixels."""
    c = probs.shape[1]
    p = probs.reshape(probs.shape[0], c, -1).permute(0, 2, 1).reshape(-1, c)
    idx = target.reshape(-1, 1).long()
    onehot = torch.zeros(idx.shape[0], c).scatter_(1, idx, 1)
    onehot = torch.clamp(onehot, smooth / (c - 1), 1.0 - smooth)
    pt = (onehot * p).sum(1) + smooth
    return (-1 * torch.pow(1.0 - pt, gamma) * pt.log()).mean()


def dice_loss(p_abn, target, smooth=1):
    n = target.shape[0]
    p = p_abn.reshape(n, -1)
    t = target.reshape(n, -1)
    dice = (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return 1 - dice.sum() / n


def state_dicts(seg, det):
    return {"seg_adapters": seg.state_dict(), "det_adapters": det.state_dict()}


def make_mask_u8():
    """A soft elliptic blob (u8 levels), binarised at 0.5 by the loss like the training loop."""
    yy, xx = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    blob = torch.exp(-(((yy - 130) / 40) ** 2 + ((xx - 95) / 55) ** 2))
    return (blob * 255).round().to(torch.uint8)[None]  # [1, S, S]


def reference_outputs(out, forward, query, support, seg, det, text, mask_u8, label):
    """Everything the Rust side checks, from an adapted forward `forward(images, seg, det)`
    returning (taps, mixed, seg_tokens, det_tokens) per level. Returns a summary line."""
    bottleneck = seg[0].fc1[0].weight.shape[0]
    initial = seg[0].fc1[0].weight.detach().clone()
    # Forward with autograd for the loss and the Adam step.
    taps, mixed, seg_tok, det_tok = forward(query, seg, det)
    with torch.no_grad():
        _, _, sup_seg, sup_det = forward(support, seg, det)
    # All 290 tokens (CLS included) of every support image form the memory bank.
    mem_seg = [t.reshape(-1, bottleneck) for t in sup_seg]
    mem_det = [t.reshape(-1, bottleneck) for t in sup_det]

    rows = torch.tensor(TOKEN_ROWS)
    mi = torch.tensor(MAP_IDX)
    fi = torch.tensor(FUSED_IDX)
    with torch.no_grad():
        for l in range(LEVELS):
            out[f"taps.{l}"] = taps[l][:, rows, :]
            out[f"mixed.{l}"] = mixed[l][:, rows, :]
            out[f"seg.{l}"] = seg_tok[l][:, rows, :]
            out[f"det.{l}"] = det_tok[l][:, rows, :]
            out[f"logits_seg.{l}"] = text_logits(seg_tok[l], text)
        for head, toks, mem in (("seg", seg_tok, mem_seg), ("det", det_tok, mem_det)):
            scores = [level_score(t, text) for t in toks]
            zmaps = [pixel_probs(t, text)[:, 1] for t in toks]
            fmaps = [few_shot_map(t, m) for t, m in zip(toks, mem)]
            for l in range(LEVELS):
                out[f"zero_score_{head}.{l}"] = scores[l]
                out[f"zero_map_{head}.{l}"] = zmaps[l][:, mi][:, :, mi]
                out[f"few_map_{head}.{l}"] = fmaps[l][:, mi][:, :, mi]
                out[f"few_score_{head}.{l}"] = fmaps[l].mean().reshape(1)
            out[f"zero_score_{head}"] = sum(scores)
            zf, ff = sum(zmaps), sum(fmaps)
            out[f"few_score_{head}"] = ff.mean().reshape(1)
            out[f"zero_map_{head}"] = zf[:, fi][:, :, fi]
            out[f"few_map_{head}"] = ff[:, fi][:, :, fi]

    # Losses (spec 5.1), mask binarised at 0.5 like the training loop.
    mask = mask_u8.to(text.dtype) / 255.0
    mask = (mask > 0.5).to(text.dtype)
    focal, dice, bce = [], [], []
    for l in range(LEVELS):
        probs = pixel_probs(seg_tok[l], text)
        focal.append(focal_loss(probs, mask))
        dice.append(dice_loss(probs[:, 1], mask))
        bce.append(nn.BCEWithLogitsLoss()(level_score(det_tok[l], text), label))
    total = sum(f + d for f, d in zip(focal, dice)) + sum(bce)
    for l in range(LEVELS):
        out[f"loss.focal.{l}"] = focal[l].detach().reshape(1)
        out[f"loss.dice.{l}"] = dice[l].detach().reshape(1)
        out[f"loss.bce.{l}"] = bce[l].detach().reshape(1)
    out["loss.total"] = total.detach().reshape(1)
    out["loss_cls.total"] = sum(bce).detach().reshape(1)

    # One step of each of the two Adam optimisers (spec 5.2).
    opt_seg = torch.optim.Adam(seg.parameters(), lr=1e-3, betas=(0.5, 0.999), eps=1e-8)
    opt_det = torch.optim.Adam(det.parameters(), lr=1e-3, betas=(0.5, 0.999), eps=1e-8)
    opt_seg.zero_grad()
    opt_det.zero_grad()
    total.backward()
    no_grad = [
        f"{h}.{i}.{fc}"
        for h, bank in (("seg", seg), ("det", det))
        for i, a in enumerate(bank)
        for fc, lin in (("fc1", a.fc1[0]), ("fc2", a.fc2[0]))
        if lin.weight.grad is None
    ]
    for h, bank in (("seg", seg), ("det", det)):
        for i, a in enumerate(bank):
            for fc, lin in (("fc1", a.fc1[0]), ("fc2", a.fc2[0])):
                if lin.weight.grad is not None:
                    out[f"grad.{h}.{i}.{fc}"] = lin.weight.grad.detach().clone()
    opt_seg.step()
    opt_det.step()
    for h, bank in (("seg", seg), ("det", det)):
        for i, a in enumerate(bank):
            out[f"step.{h}.{i}.fc1"] = a.fc1[0].weight.detach().clone()
            out[f"step.{h}.{i}.fc2"] = a.fc2[0].weight.detach().clone()
    moved = (seg[0].fc1[0].weight.detach() - initial).abs().max().item()
    return (f"total loss {total.item():.6f}, seg.0.fc1 moved by {moved:.2e}, "
            f"params without grad: {no_grad}")


def save_outputs(out, name, meta):
    out = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in out.items()}
    meta = dict(meta, torch=torch.__version__, grid=str(GRID), image_size=str(SIZE),
                taps=",".join(map(str, TAPS)))
    save_file(out, os.path.join(OUT, name), metadata=meta)


def phase_a():
    torch.manual_seed(20240308)
    seg, det = make_banks(W, E, LEVELS)
    torch.save(state_dicts(seg, det), os.path.join(OUT, "phase_a_adapters.pth"))

    blocks = [torch.randn(W, W) / math.sqrt(W) for _ in range(N_MATRICES)]
    x0 = torch.randn(1, TOKENS, W)
    support = torch.randn(N_SUPPORT, TOKENS, W)
    text = torch.randn(E, 2)
    text = text / text.norm(dim=0, keepdim=True)
    mask_u8 = make_mask_u8()
    label = torch.tensor([1.0])

    out = {"x0": x0, "support": support, "text": text, "mask_u8": mask_u8, "label": label}
    for b, a in enumerate(blocks):
        out[f"blocks.{b}"] = a
    summary = reference_outputs(
        out, lambda x, s, d: adapted_forward(x, blocks, s, d), x0, support, seg, det, text,
        mask_u8, label)
    save_outputs(out, "phase_a.safetensors", {"width": str(W), "bottleneck": str(E)})
    print(f"phase A: {summary}")


CLIP_FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "clip")


def clip_adapted_forward(visual, images, seg, det):
    """open_clip's vision forward, unrolled, with the MVFA hook after each tapped block
    (same unrolling as make_clip_fixtures.vision_forward; spec 2)."""
    x = visual.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1],
                                                           dtype=x.dtype)
    x = torch.cat([cls, x], dim=1)
    x = x + visual.positional_embedding.to(x.dtype)
    x = visual.ln_pre(x)
    taps, mixed, seg_tok, det_tok = [], [], [], []
    for i, blk in enumerate(visual.transformer.resblocks):
        x = blk(x)
        if i + 1 in TAPS:
            level = TAPS.index(i + 1)
            h_seg, y_seg = seg[level](x)
            h_det, y_det = det[level](x)
            taps.append(x)
            seg_tok.append(h_seg)
            det_tok.append(h_det)
            x = MIX[0] * x + MIX[1] * y_seg + MIX[2] * y_det
            mixed.append(x)
    return taps, mixed, seg_tok, det_tok


def phase_b():
    """The real (fixture) CLIP vision tower of tests/fixtures/clip, in float64: open_clip CLIP
    at 240 px with the position table resized per spec 1.1, erf GELU, random adapters."""
    from safetensors.torch import load_file
    from open_clip.model import CLIP

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import make_clip_fixtures as mcf

    sd = load_file(os.path.join(CLIP_FIXTURES, "open_clip", "open_clip_model.safetensors"))
    ref = load_file(os.path.join(CLIP_FIXTURES, "reference.safetensors"))
    model = CLIP(mcf.EMBED_DIM, dict(mcf.VISION, image_size=SIZE), dict(mcf.TEXT),
                 quick_gelu=False)
    sd = {k: v.double() for k, v in sd.items()}
    sd["visual.positional_embedding"] = mcf.resize_pos(sd["visual.positional_embedding"], GRID)
    model = model.double().eval()
    model.load_state_dict(sd)
    visual = model.visual
    for p in visual.parameters():
        p.requires_grad_(False)  # frozen backbone, spec 2

    width, bottleneck = mcf.VISION["width"], mcf.EMBED_DIM
    torch.manual_seed(111)
    seg, det = make_banks(width, bottleneck, LEVELS)
    torch.save(state_dicts(seg, det), os.path.join(OUT, "phase_b_adapters.pth"))
    seg, det = seg.double(), det.double()

    image = ref["image_u8"].double() / 255.0  # [1, 3, 240, 240]
    # Support "shots": the image mirrored left-right and top-bottom.
    support = torch.cat([torch.flip(image, dims=[3]), torch.flip(image, dims=[2])])
    text = ref["text_features_0"].double()  # MVFA text features of the fixture model, [E, 2]
    mask_u8 = make_mask_u8()
    label = torch.tensor([1.0], dtype=torch.float64)

    out = {}
    summary = reference_outputs(
        out, lambda x, s, d: clip_adapted_forward(visual, x, s, d), image, support, seg, det,
        text, mask_u8, label)
    save_outputs(out, "phase_b.safetensors",
                 {"width": str(width), "bottleneck": str(bottleneck), "dtype": "float64",
                  "inputs": "tests/fixtures/clip reference.safetensors image_u8 and "
                            "text_features_0; support = hflip, vflip of the image; "
                            "mask = phase_a mask_u8"})
    # Before any hook the first tap is plain CLIP: it must equal the CLIP fixture's tap.
    err = (out["taps.0"] - ref["tap_2"].double()[:, TOKEN_ROWS]).abs().max().item()
    assert err < 1e-5, f"unrolled forward differs from the CLIP fixture by {err}"
    print(f"phase B: {summary}")


def tiny_files():
    """W = 4, E = 2, 4 levels: checkpoints for the importer's error messages."""
    torch.manual_seed(7)
    seg, det = make_banks(4, 2, 4)
    good = state_dicts(seg, det)
    torch.save(good, os.path.join(OUT, "tiny_valid.pth"))
    # The same weights as plain flat safetensors (PyTorch layout), to check the import.
    flat = {f"{k}.{n}": t.contiguous() for k, sd in good.items() for n, t in sd.items()}
    save_file(flat, os.path.join(OUT, "tiny_valid_reference.safetensors"))
    torch.save(
        {k: {n: t.half() for n, t in sd.items()} for k, sd in good.items()},
        os.path.join(OUT, "tiny_valid_f16.pth"),
    )
    missing = state_dicts(seg, det)
    del missing["det_adapters"]["2.fc2.0.weight"]
    torch.save(missing, os.path.join(OUT, "tiny_missing_key.pth"))
    wrong = state_dicts(seg, det)
    wrong["seg_adapters"]["1.fc1.0.weight"] = torch.zeros(2, 5)
    torch.save(wrong, os.path.join(OUT, "tiny_wrong_shape.pth"))
    seg5, det5 = make_banks(4, 2, 5)
    torch.save(state_dicts(seg5, det5), os.path.join(OUT, "tiny_five_levels.pth"))
    # A plain state dict of one bank, without the seg/det top level.
    torch.save(seg.state_dict(), os.path.join(OUT, "tiny_flat_bank.pth"))
    # Some other model's state dict.
    other = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    torch.save(other.state_dict(), os.path.join(OUT, "tiny_other_model.pth"))


def main():
    os.makedirs(OUT, exist_ok=True)
    phase_a()
    if os.path.exists(os.path.join(CLIP_FIXTURES, "reference.safetensors")):
        phase_b()
    else:
        print(f"phase B skipped: no CLIP fixtures under {CLIP_FIXTURES}")
    tiny_files()
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    sys.exit(main())
