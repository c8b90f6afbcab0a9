"""Writes tests/fixtures/eval/auc_cases.json: ROC AUC reference values from scikit-learn.

Run by hand from the repository root with the reference venv:

    /work/pyref/bin/python tools/eval/make_auc_fixtures.py

Every score is a float32 value (written as the exact float64 of that float32), because the
Rust side computes AUC on f32 scores. Expected values come from
`sklearn.metrics.roc_auc_score` (trapezoid over all distinct thresholds, which equals the
Mann-Whitney U statistic with ties counted one half).
"""

import json
import os

import numpy as np
import sklearn
from sklearn.metrics import roc_auc_score

OUT = os.path.join("tests", "fixtures", "eval", "auc_cases.json")


def f32_list(a):
    """Each float32 as the float64 of its shortest decimal form: short in the JSON, and that
    float64 rounds back to the very same float32 (checked here)."""
    a = np.asarray(a, dtype=np.float32)
    out = [float(str(v)) for v in a]
    back = np.asarray(out, dtype=np.float64).astype(np.float32)
    assert np.array_equal(back.view(np.uint32), a.view(np.uint32)), "float32 round trip"
    return out


def case(name, scores, labels):
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    auc = float(roc_auc_score(labels, scores))
    return {
        "name": name,
        "scores": f32_list(scores),
        "labels": [int(v) for v in labels],
        "auc": auc,
    }


def main():
    rng = np.random.default_rng(20240605)
    cases = []

    # Continuous scores, a weak signal, few or no ties.
    n = 2000
    labels = rng.random(n) < 0.3
    scores = rng.normal(size=n) + 0.7 * labels
    cases.append(case("random_continuous", scores, labels))

    # Twenty distinct values: ties everywhere, also across classes.
    labels = rng.random(n) < 0.4
    scores = np.clip(rng.integers(0, 20, size=n) + 4 * labels - 2, 0, 19) / 20.0
    cases.append(case("many_ties", scores, labels))

    # 8-bit quantised scores (a heatmap stored as bytes).
    n = 2500
    labels = rng.random(n) < 0.2
    scores = np.round(np.clip(rng.beta(2, 5, size=n) + 0.15 * labels, 0, 1) * 255) / 255
    cases.append(case("quantised_u8", scores, labels))

    # All scores equal: every pair is a tie, AUC is exactly one half.
    labels = np.array([0, 1] * 50)
    cases.append(case("all_equal", np.full(100, 0.25), labels))

    # Heavily imbalanced: 7 positives among 5000.
    n = 3000
    labels = np.zeros(n, dtype=bool)
    labels[rng.choice(n, 7, replace=False)] = True
    scores = rng.random(n) + 0.3 * labels
    cases.append(case("imbalanced", scores, labels))

    # Perfectly separated, and the reverse.
    cases.append(case("separable", [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0, 0, 0, 1, 1, 1]))
    cases.append(case("reversed", [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [1, 1, 1, 0, 0, 0]))

    # Signed zeros compare equal in numpy, so -0.0 and 0.0 are one tie group.
    cases.append(
        case("signed_zero", [-0.0, 0.0, 0.0, -0.0, 1.0, -1.0, 0.5], [1, 0, 1, 0, 1, 0, 0])
    )

    # Large-magnitude and tiny (subnormal) values keep their order.
    cases.append(
        case(
            "extreme_values",
            [-3.0e38, -1.0e-40, 1.0e-45, 2.0e-45, 3.0e38, 1.0, -1.0, 0.0],
            [0, 0, 1, 0, 1, 1, 0, 1],
        )
    )

    # Pixel-level case: several images, masks pooled (normal images have no mask).
    h, w = 20, 24
    yy, xx = np.mgrid[0:h, 0:w]
    images = []
    all_maps, all_masks = [], []
    for i in range(6):
        if i < 2:
            mask = np.zeros((h, w), dtype=bool)
        else:
            cy, cx, r = rng.integers(4, h - 4), rng.integers(4, w - 4), rng.integers(2, 5)
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        m = rng.random((h, w)) * 0.6 + 0.5 * mask
        # Quantise to 1/64 so that ties span images and classes.
        m = np.round(m * 64) / 64
        m = m.astype(np.float32)
        images.append(
            {
                "height": h,
                "width": w,
                "map": f32_list(m.ravel()),
                "mask": [int(v) for v in mask.ravel()] if i >= 2 else None,
            }
        )
        all_maps.append(m.ravel())
        all_masks.append(mask.ravel())
    pixel_auc = float(roc_auc_score(np.concatenate(all_masks), np.concatenate(all_maps)))

    out = {
        "generator": "tools/eval/make_auc_fixtures.py",
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "cases": cases,
        "pixel": {"images": images, "auc": pixel_auc},
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    for c in cases:
        print(f"{c['name']:20s} n={len(c['scores']):5d} auc={c['auc']!r}")
    print(f"{'pixel':20s} n={len(images) * h * w:5d} auc={pixel_auc!r}")


if __name__ == "__main__":
    main()
