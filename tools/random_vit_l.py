"""Writes random CLIP ViT-L/14-336 weights in the open_clip layout (float16, about 0.86 GB), for
timing the Python package and the Ray example at full size without the real weights.

    python3 tools/random_vit_l.py OUT.safetensors [--seed 0]

Only numpy. The numbers they give mean nothing; the time they take is the real model's.
"""

import argparse
import json
import struct

import numpy as np


def tensors(rng):
    def w(*shape, std=0.02):
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float16)

    def ones(n):
        return np.ones(n, dtype=np.float16)

    def zeros(*shape):
        return np.zeros(shape, dtype=np.float16)

    def blocks(prefix, width, layers):
        for i in range(layers):
            p = f"{prefix}.resblocks.{i}"
            yield f"{p}.attn.in_proj_weight", w(3 * width, width)
            yield f"{p}.attn.in_proj_bias", zeros(3 * width)
            yield f"{p}.attn.out_proj.weight", w(width, width)
            yield f"{p}.attn.out_proj.bias", zeros(width)
            yield f"{p}.ln_1.weight", ones(width)
            yield f"{p}.ln_1.bias", zeros(width)
            yield f"{p}.ln_2.weight", ones(width)
            yield f"{p}.ln_2.bias", zeros(width)
            yield f"{p}.mlp.c_fc.weight", w(4 * width, width)
            yield f"{p}.mlp.c_fc.bias", zeros(4 * width)
            yield f"{p}.mlp.c_proj.weight", w(width, 4 * width)
            yield f"{p}.mlp.c_proj.bias", zeros(width)

    vw, tw, embed = 1024, 768, 768
    yield "visual.class_embedding", w(vw)
    yield "visual.conv1.weight", w(vw, 3, 14, 14)
    yield "visual.positional_embedding", w(577, vw)
    yield "visual.ln_pre.weight", ones(vw)
    yield "visual.ln_pre.bias", zeros(vw)
    yield "visual.ln_post.weight", ones(vw)
    yield "visual.ln_post.bias", zeros(vw)
    yield "visual.proj", w(vw, embed)
    yield from blocks("visual.transformer", vw, 24)
    yield "token_embedding.weight", w(49408, tw)
    yield "positional_embedding", w(77, tw)
    yield "ln_final.weight", ones(tw)
    yield "ln_final.bias", zeros(tw)
    yield "text_projection", w(tw, embed)
    yield "logit_scale", np.array(np.log(100.0), dtype=np.float32)
    yield from blocks("transformer", tw, 12)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    header, chunks, offset = {}, [], 0
    for name, array in tensors(rng):
        data = np.ascontiguousarray(array).tobytes()
        dtype = {np.float16: "F16", np.float32: "F32"}[array.dtype.type]
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(args.out, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for c in chunks:
            fh.write(c)
    print(f"wrote {args.out} ({offset / 1e9:.2f} GB, {len(header)} tensors)")


if __name__ == "__main__":
    main()
