"""The Python package against the CLI, bit for bit (run by tests/integration/python.rs).

    python3 tests/python/parity.py CLI CLIP WORK INPUT...

Fits a detector with ``mvfa-studio train`` and with ``mvfa_studio.fit`` (same arguments:
the checkpoints must be the same bytes), scores INPUT with ``mvfa-studio score --raw`` and
with ``Detector.score_files(all_maps=True)``, and compares ``scores.csv``, ``series.csv``
and every raw map. With ``--checkpoint CKPT`` it skips the fit and scores with CKPT.
Exits non-zero, saying what differs, on any difference.
"""

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

import mvfa_studio as mvfa


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode not in (0, 1):
        fail(f"{' '.join(map(str, cmd))} exited with {p.returncode}:\n{p.stderr}")
    return p


def read_safetensors(path: Path) -> dict:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        start, end = v["data_offsets"]
        out[name] = np.frombuffer(body[start:end], dtype=np.float32).reshape(v["shape"])
    return out


def main() -> None:
    args = sys.argv[1:]
    checkpoint = None
    if args[0] == "--checkpoint":
        checkpoint, args = Path(args[1]), args[2:]
    cli, clip, work, inputs = args[0], args[1], Path(args[2]), args[3:]
    work.mkdir(parents=True, exist_ok=True)

    if checkpoint is None:
        data = inputs[0]
        cli_ckpt, py_ckpt = work / "cli.safetensors", work / "py.safetensors"
        common = ["--organ", "Brain", "--schedule", "quick", "--epochs", "1", "--seed", "7"]
        p = run([cli, "train", "--clip", clip, "--cpu", "--data", data, *common, "--out", cli_ckpt])
        if p.returncode != 0:
            fail(f"train failed:\n{p.stderr}")
        events = []
        report = mvfa.fit(
            clip, py_ckpt, data=data, organ="Brain", schedule="quick", epochs=1, seed=7,
            cpu=True, progress=events.append,
        )
        if cli_ckpt.read_bytes() != py_ckpt.read_bytes():
            fail("the checkpoints of `train` and mvfa_studio.fit differ")
        if not events or events[0]["step"] != "shots":
            fail(f"progress events: {events[:3]}")
        print(f"fit: same checkpoint bytes ({py_ckpt.stat().st_size} B), mode {report['mode']}, "
              f"threshold {report.get('threshold')}")
        checkpoint = cli_ckpt

    out = work / "cli-out"
    p = run([cli, "score", "--clip", clip, "--cpu", "--checkpoint", checkpoint, *inputs,
             "--out", out, "--raw"])
    det = mvfa.Detector(clip, checkpoint, cpu=True)
    frames = det.score_files(inputs, all_maps=True, errors="report")
    scored = [f for f in frames if f.error is None]
    failed = [f for f in frames if f.error is not None]

    with open(out / "scores.csv", newline="") as fh:
        cli_rows = list(csv.reader(fh))[1:]
    ours = [f.csv_fields() for f in scored]
    if cli_rows != ours:
        diffs = [(a, b) for a, b in zip(cli_rows, ours) if a != b][:3]
        fail(f"scores.csv: {len(cli_rows)} CLI rows, {len(ours)} Python rows; first differences {diffs}")

    with open(out / "series.csv", newline="") as fh:
        cli_series = fh.read()
    py_series = mvfa.series_csv(frames, det.threshold)
    if cli_series != py_series:
        fail(f"series.csv differs:\nCLI:\n{cli_series}\nPython:\n{py_series}")

    # Every raw map, found by the frame name its metadata records.
    raw_files = list(out.glob("*.raw.safetensors"))
    by_source = {}
    for path in raw_files:
        text = path.read_bytes()
        (n,) = struct.unpack("<Q", text[:8])
        meta = json.loads(text[8 : 8 + n]).get("__metadata__", {})
        by_source[meta["source"]] = path
    compared = 0
    for f in scored:
        cli_maps = read_safetensors(by_source[f.path])
        if set(cli_maps) != set(f.maps):
            fail(f"{f.path}: CLI maps {sorted(cli_maps)}, Python maps {sorted(f.maps)}")
        for name, values in cli_maps.items():
            if not np.array_equal(values.view(np.uint32), np.asarray(f.maps[name]).view(np.uint32)):
                fail(f"{f.path}: {name} differs (max {np.abs(values - f.maps[name]).max()})")
        compared += 1
    if p.returncode == 1 and not failed:
        fail(f"the CLI reported failures and Python none:\n{p.stderr}")
    for f in failed:
        if f.error not in p.stderr:
            fail(f"{f.error!r} is not among the CLI's messages:\n{p.stderr}")
    print(f"scored {len(scored)} frame(s), {compared} with every raw map equal bit for bit; "
          f"{len(failed)} unreadable input(s) with the CLI's messages; "
          f"{len(raw_files)} CLI raw files")


if __name__ == "__main__":
    main()
