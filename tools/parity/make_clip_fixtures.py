#!/usr/bin/env python3
"""Writes the CLIP parity fixtures under tests/fixtures/clip/ (run by hand, not by CI).

    /work/pyref/bin/python tools/parity/make_clip_fixtures.py [--out tests/fixtures/clip]

What it builds: a small CLIP with open_clip on the CPU that keeps the real MVFA geometry
(patch 14, a 336 px "pretrained" model whose 24x24 position grid is resized to 17x17 for a 240 px
input, 290 tokens) but tiny widths, with erf GELU (MVFA's quirk, spec 1.2). Every tensor is
random, LayerNorm weights and all biases included, so a swapped or missing tensor cannot hide.

Files written:
- open_clip/open_clip_model.safetensors + open_clip/open_clip_config.json: open_clip layout
  (fused in_proj, visual.proj [width, embed]), vision tower stored as f32.
- hf/model.safetensors + hf/config.json: Hugging Face CLIPModel layout (separate q/k/v,
  Linear weights [out, in]), vision tower stored as f16.
  All weights are rounded to f16-representable values before anything is computed, so both
  files hold exactly the same numbers and the f16 file loses nothing (it exercises the
  f16 -> f32 path of the loader). The 49408-row token table is f16 in both files to keep the
  fixtures small.
- reference.safetensors: the 240 px input image (u8 levels, input = level / 255), the tapped block outputs at blocks 2, 4, 6, 8
  (all 290 tokens), the final embedding, the same with a hook that halves the stream after
  each tap, token ids + raw text-tower outputs for a few sentences, and the MVFA text features
  (spec 3.4) for two organ words, with the token ids of all their sentences (trailing padding
  columns dropped).

The reference runs in float64 (the Rust side runs f32), so its own rounding is negligible.
The HF file is cross-checked here against transformers' CLIPModel on the same numbers.
"""
import argparse
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import open_clip
from open_clip.model import CLIP

# ---- architecture of the fixture model ---------------------------------------------------------
EMBED_DIM = 16
VISION = dict(image_size=336, layers=8, width=32, patch_size=14, head_width=8)  # 4 heads
# The 49408-row token table dominates the file size: the text width is kept tiny (2 heads of 2).
TEXT = dict(context_length=77, vocab_size=49408, width=4, heads=2, layers=3)
INPUT_SIZE = 240
TAPS = [2, 4, 6, 8]
HOOK_SCALE = 0.5

# ---- MVFA prompt ensemble (spec 3.2, 3.3) ------------------------------------------------------
NORMAL_STATES = ["{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw",
                 "{} without defect", "{} without damage"]
ABNORMAL_STATES = ["damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage"]
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
ORGANS = ["Brain", "Chest X-ray film"]


def sentences(organ, states):
    return [t.format(s.format(organ)) for s in states for t in TEMPLATES]


def f16_round(t):
    return t.to(torch.float16).to(torch.float32)


def randomise(model, gen):
    """Every parameter random; scales keep activations O(1) through 8 blocks."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("bias"):
                v = 0.2 * n
            elif p.ndim == 1 and ("ln" in name):  # LayerNorm weights
                v = 1.0 + 0.25 * n
            elif name in ("visual.class_embedding",):
                v = 0.5 * n
            elif "positional_embedding" in name or name == "token_embedding.weight":
                v = 0.5 * n
            elif name == "logit_scale":
                v = torch.full_like(p, float(np.log(1 / 0.07)))
            elif name == "visual.conv1.weight":
                v = n / np.sqrt(p.shape[1] * p.shape[2] * p.shape[3])
            elif name in ("visual.proj", "text_projection"):
                v = n / np.sqrt(p.shape[0])
            elif p.ndim == 2:  # Linear [out, in]
                v = n / np.sqrt(p.shape[1])
            else:
                raise SystemExit(f"unhandled parameter {name} {tuple(p.shape)}")
            p.copy_(f16_round(v))


def resize_pos(table, grid_out):
    """Spec 1.1: keep the CLS row, resize the grid with torch's antialiased bicubic."""
    cls, grid = table[:1], table[1:]
    g = int(round(grid.shape[0] ** 0.5))
    w = grid.shape[1]
    img = grid.reshape(1, g, g, w).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=(grid_out, grid_out), mode="bicubic", antialias=True,
                        align_corners=False)
    img = img.permute(0, 2, 3, 1).reshape(grid_out * grid_out, w)
    return torch.cat([cls, img], dim=0)


def vision_forward(visual, image, hook_scale=None):
    """open_clip's vision forward unrolled so the block outputs can be tapped (and hooked)."""
    x = visual.conv1(image)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1],
                                                           dtype=x.dtype)
    x = torch.cat([cls, x], dim=1)
    x = x + visual.positional_embedding.to(x.dtype)
    x = visual.ln_pre(x)
    taps = []
    for i, blk in enumerate(visual.transformer.resblocks):
        x = blk(x)
        if (i + 1) in TAPS:
            taps.append(x.clone())
            if hook_scale is not None:
                x = hook_scale * x
    emb = visual.ln_post(x[:, 0]) @ visual.proj
    return taps, emb


def to_hf(sd):
    """open_clip state dict -> Hugging Face CLIPModel state dict (same numbers)."""
    out = {}
    def lin(dst, src):
        out[dst + ".weight"] = sd[src + ".weight"]
        out[dst + ".bias"] = sd[src + ".bias"]

    def ln(dst, src):
        out[dst + ".weight"] = sd[src + ".weight"]
        out[dst + ".bias"] = sd[src + ".bias"]

    def blocks(dst, src, n, width):
        for i in range(n):
            s, d = f"{src}.{i}", f"{dst}.{i}"
            w, b = sd[f"{s}.attn.in_proj_weight"], sd[f"{s}.attn.in_proj_bias"]
            for j, name in enumerate(["q_proj", "k_proj", "v_proj"]):
                out[f"{d}.self_attn.{name}.weight"] = w[j * width:(j + 1) * width]
                out[f"{d}.self_attn.{name}.bias"] = b[j * width:(j + 1) * width]
            lin(f"{d}.self_attn.out_proj", f"{s}.attn.out_proj")
            ln(f"{d}.layer_norm1", f"{s}.ln_1")
            ln(f"{d}.layer_norm2", f"{s}.ln_2")
            lin(f"{d}.mlp.fc1", f"{s}.mlp.c_fc")
            lin(f"{d}.mlp.fc2", f"{s}.mlp.c_proj")

    v = "vision_model"
    out[f"{v}.embeddings.patch_embedding.weight"] = sd["visual.conv1.weight"]
    out[f"{v}.embeddings.class_embedding"] = sd["visual.class_embedding"]
    out[f"{v}.embeddings.position_embedding.weight"] = sd["visual.positional_embedding"]
    ln(f"{v}.pre_layrnorm", "visual.ln_pre")
    blocks(f"{v}.encoder.layers", "visual.transformer.resblocks", VISION["layers"],
           VISION["width"])
    ln(f"{v}.post_layernorm", "visual.ln_post")
    out["visual_projection.weight"] = sd["visual.proj"].t().contiguous()
    t = "text_model"
    out[f"{t}.embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    out[f"{t}.embeddings.position_embedding.weight"] = sd["positional_embedding"]
    blocks(f"{t}.encoder.layers", "transformer.resblocks", TEXT["layers"], TEXT["width"])
    ln(f"{t}.final_layer_norm", "ln_final")
    out["text_projection.weight"] = sd["text_projection"].t().contiguous()
    out["logit_scale"] = sd["logit_scale"]
    return out


def hf_config(image_size):
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": EMBED_DIM,
        "logit_scale_init_value": 2.6592,
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": TEXT["vocab_size"],
            "hidden_size": TEXT["width"],
            "intermediate_size": 4 * TEXT["width"],
            "num_hidden_layers": TEXT["layers"],
            "num_attention_heads": TEXT["heads"],
            "max_position_embeddings": TEXT["context_length"],
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": EMBED_DIM,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 1,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": VISION["width"],
            "intermediate_size": 4 * VISION["width"],
            "num_hidden_layers": VISION["layers"],
            "num_attention_heads": VISION["width"] // VISION["head_width"],
            "patch_size": VISION["patch_size"],
            "image_size": image_size,
            "num_channels": 3,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": EMBED_DIM,
        },
    }


def hf_crosscheck(hf_sd, image, taps_ref, emb_ref, tokens, text_ref):
    """transformers' CLIPModel (erf GELU, 240 px, resized table) on the HF-layout numbers."""
    from transformers import CLIPConfig, CLIPModel
    cfg = CLIPConfig.from_dict(hf_config(INPUT_SIZE))
    model = CLIPModel(cfg).double().eval()
    sd = dict(hf_sd)
    key = "vision_model.embeddings.position_embedding.weight"
    sd[key] = resize_pos(sd[key].double(), INPUT_SIZE // VISION["patch_size"])
    missing, unexpected = model.load_state_dict({k: v.double() for k, v in sd.items()},
                                                strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    assert not missing and not unexpected, (missing, unexpected)
    with torch.no_grad():
        vo = model.vision_model(pixel_values=image, output_hidden_states=True)
        for b, ref in zip(TAPS, taps_ref):
            err = (vo.hidden_states[b] - ref).abs().max().item()
            assert err < 1e-9, f"HF tap {b} differs by {err}"
        emb = model.visual_projection(vo.pooler_output)
        assert (emb - emb_ref).abs().max().item() < 1e-9
        tf = model.text_projection(model.text_model(input_ids=tokens).pooler_output)
        err = (tf - text_ref).abs().max().item()
        assert err < 1e-9, f"HF text differs by {err}"
    print("transformers CLIPModel agrees with the open_clip reference (HF layout verified)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                  "tests", "fixtures", "clip"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "hf"), exist_ok=True)
    os.makedirs(os.path.join(out, "open_clip"), exist_ok=True)
    gen = torch.Generator().manual_seed(20240308)

    # The "checkpoint": a 336 px model (577-row position table), erf GELU (quick_gelu=False).
    ckpt = CLIP(EMBED_DIM, dict(VISION), dict(TEXT), quick_gelu=False)
    randomise(ckpt, gen)
    sd = {k: v.detach().clone() for k, v in ckpt.state_dict().items()}
    assert sd["visual.positional_embedding"].shape[0] == 577
    assert isinstance(ckpt.visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)

    # The model MVFA runs: same config at 240 px, position table resized per spec 1.1, f64.
    run_cfg = dict(VISION, image_size=INPUT_SIZE)
    model = CLIP(EMBED_DIM, run_cfg, dict(TEXT), quick_gelu=False)
    run_sd = {k: v.double() for k, v in sd.items()}
    run_sd["visual.positional_embedding"] = resize_pos(run_sd["visual.positional_embedding"],
                                                       INPUT_SIZE // VISION["patch_size"])
    # open_clip's own resize must agree with the spec's recipe.
    oc_sd = {k: v.double() for k, v in sd.items()}
    open_clip.model.resize_pos_embed(oc_sd, model)
    assert torch.equal(oc_sd["visual.positional_embedding"], run_sd["visual.positional_embedding"])
    model = model.double().eval()
    model.load_state_dict(run_sd)

    # 8-bit levels / 255, like the app's model input (stored as u8 to keep the fixture small).
    image_u8 = torch.randint(0, 256, (1, 3, INPUT_SIZE, INPUT_SIZE), generator=gen,
                             dtype=torch.uint8)
    image = image_u8.float() / 255.0
    image64 = image.double()
    with torch.no_grad():
        taps, emb = vision_forward(model.visual, image64)
        assert (emb - model.encode_image(image64)).abs().max().item() < 1e-12
        hooked_taps, hooked_emb = vision_forward(model.visual, image64, HOOK_SCALE)

    # Text: a few raw sentences (tower only) and the full MVFA features for two organs.
    tok = open_clip.get_tokenizer("ViT-L-14-336")
    few = ["a bad photo of a brain without flaw.", "this is one damaged chest x-ray film in the scene.",
           "A photo of my Liver!", "x"]
    few_tokens = tok(few)
    refs = {}
    with torch.no_grad():
        few_feats = model.encode_text(few_tokens)
        for oi, organ in enumerate(ORGANS):
            cols, all_tokens = [], []
            for states in (NORMAL_STATES, ABNORMAL_STATES):
                s = sentences(organ, states)
                t = tok(s)
                f = F.normalize(model.encode_text(t), dim=-1).mean(0)
                cols.append(F.normalize(f, dim=-1))
                all_tokens.append(t)
            refs[f"text_features_{oi}"] = torch.stack(cols, dim=1).float()  # [embed, 2]
            t = torch.cat(all_tokens)
            assert t.shape[0] == 245 + 175
            # Stored without the all-zero padding columns; the Rust test pads back to 77.
            width = int((t != 0).sum(1).max())
            refs[f"text_tokens_{oi}"] = t[:, :width].to(torch.int32).contiguous()

    refs["image_u8"] = image_u8.contiguous()
    for b, t in zip(TAPS, taps):
        refs[f"tap_{b}"] = t.float().contiguous()
    refs["embedding"] = emb.float().contiguous()
    refs["hooked_tap_8"] = hooked_taps[-1].float().contiguous()
    refs["hooked_embedding"] = hooked_emb.float().contiguous()
    refs["text_sample_tokens"] = few_tokens.to(torch.int32).contiguous()
    refs["text_sample_features"] = few_feats.float().contiguous()
    meta = {"taps": json.dumps(TAPS), "hook_scale": str(HOOK_SCALE),
            "organs": json.dumps(ORGANS), "sample_sentences": json.dumps(few),
            "torch": torch.__version__, "open_clip": open_clip.__version__}
    save_file(refs, os.path.join(out, "reference.safetensors"), metadata=meta)

    # open_clip layout: vision f32, token table f16.
    oc = {k: v.contiguous() for k, v in sd.items()}
    oc["token_embedding.weight"] = oc["token_embedding.weight"].half()
    save_file(oc, os.path.join(out, "open_clip", "open_clip_model.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(out, "open_clip", "open_clip_config.json"), "w") as f:
        json.dump({"embed_dim": EMBED_DIM, "quick_gelu": False, "vision_cfg": VISION,
                   "text_cfg": TEXT}, f, indent=2)

    # Hugging Face layout: everything f16 except logit_scale.
    hf = to_hf(sd)
    hf_crosscheck(hf, image64, taps, emb, few_tokens, few_feats)
    hf = {k: (v.half() if k != "logit_scale" else v).contiguous() for k, v in hf.items()}
    save_file(hf, os.path.join(out, "hf", "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "hf", "config.json"), "w") as f:
        json.dump(hf_config(VISION["image_size"]), f, indent=2)

    total = 0
    for root, _, files in os.walk(out):
        for name in files:
            p = os.path.join(root, name)
            total += os.path.getsize(p)
            print(f"{os.path.relpath(p, out):45s} {os.path.getsize(p) / 1024:8.1f} KiB")
    print(f"total {total / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
