"""Score an image archive with an MVFA detector on a Ray cluster (Ray Data).

    python examples/ray_score_archive.py --clip ViT-L-14-336.safetensors \\
        --checkpoint brain.safetensors --out results/ /archive/head-ct/ [more folders or files]
    python examples/ray_score_archive.py ... --list files.txt      # one path per line

Ray Data's ``map_batches`` runs an actor pool; each actor holds one detector (the weights are
loaded once per worker, not per batch) and scores batches of files with
``mvfa_studio.Detector.score_files`` (the CLI's scoring path, so every number equals
``mvfa-studio score``'s). With the ``cuda`` build, ``--gpus-per-worker 1`` gives each actor a GPU.

Each finished batch is written at once, atomically, to ``OUT/parts/<batch id>.parquet``; the
batch id is a hash of its files, so a batch retried after a worker died rewrites the same part
and nothing is counted twice. A rerun reads the parts already there and scores only the files
they lack: a partly done archive resumes where it stopped. At the end the parts are merged
into ``scores.parquet`` and ``scores.csv`` (one row per frame, in the order ``mvfa-studio
score`` would list them, in its CSV format), ``series.parquet`` and ``series.csv`` (series
scores, as ``series.csv`` of the CLI), and ``failures.csv`` (inputs that could not be read).

Start Ray yourself (``ray start --head``; then ``--address auto``), or let the script start
a local one (``--num-cpus``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

import mvfa_studio as mvfa

PART_SCHEMA = pa.schema(
    [
        ("order", pa.int64()),
        ("path", pa.string()),
        ("file", pa.string()),
        ("frame", pa.int64()),
        ("frames", pa.int64()),
        ("score", pa.float32()),
        ("zero_shot_score", pa.float32()),
        ("few_shot_score", pa.float32()),
        ("abnormal", pa.bool_()),
        ("error", pa.string()),
    ]
)


def batch_id(files) -> str:
    return hashlib.sha256("\n".join(files).encode()).hexdigest()[:24]


class ScoreActor:
    """One detector per Ray worker; scores a batch of files and writes its part."""

    def __init__(self, clip: str, checkpoint: str, out: str, organ, batch: int, cpu: bool):
        self.detector = mvfa.Detector(clip, checkpoint, organ=organ, batch=batch, cpu=cpu)
        self.parts = Path(out) / "parts"
        self.parts.mkdir(parents=True, exist_ok=True)
        workers = Path(out) / "workers"
        workers.mkdir(parents=True, exist_ok=True)
        # Which processes score (tests kill one of them).
        (workers / str(os.getpid())).touch()

    def __call__(self, batch: dict) -> dict:
        files = [str(f) for f in batch["file"]]
        order = {f: int(i) for f, i in zip(files, batch["order"])}
        frames = self.detector.score_files(files, errors="report")
        rows = {name: [] for name in PART_SCHEMA.names}
        for f in frames:
            rows["order"].append(order.get(f.file, -1))
            rows["path"].append(f.path)
            rows["file"].append(f.file)
            rows["frame"].append(f.frame)
            rows["frames"].append(f.frames)
            rows["score"].append(f.score)
            rows["zero_shot_score"].append(None if f.error else f.zero_shot_score)
            rows["few_shot_score"].append(f.few_shot_score)
            rows["abnormal"].append(f.abnormal)
            rows["error"].append(f.error)
        table = pa.table(rows, schema=PART_SCHEMA)
        part = self.parts / f"{batch_id(files)}.parquet"
        tmp = part.with_suffix(f".{os.getpid()}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, part)
        threshold = self.detector.threshold
        return {
            "files": np.array([len(files)]),
            "frames": np.array([len(frames)]),
            "threshold": np.array([np.nan if threshold is None else threshold], dtype=np.float64),
        }


def done_files(out: Path) -> set:
    """Files some part already holds (scored, or recorded as unreadable)."""
    done = set()
    for part in sorted((out / "parts").glob("*.parquet")):
        done.update(pq.read_table(part, columns=["file"]).column("file").to_pylist())
    return done


def f32(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return np.format_float_positional(np.float32(v), unique=True, trim="-")


def merge(out: Path, files: list, threshold) -> tuple:
    """Merges the parts into the final tables; returns (frames, failures)."""
    parts = sorted((out / "parts").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else PART_SCHEMA.empty_table()
    rows = table.to_pylist()
    position = {f: i for i, f in enumerate(files)}
    unique = {}
    for r in rows:
        unique[(r["file"], r["frame"], r["error"] is not None)] = r
    scored = sorted(
        (r for r in unique.values() if r["error"] is None),
        key=lambda r: (position.get(r["file"], len(files)), r["frame"]),
    )
    failures = [r for r in unique.values() if r["error"] is not None]
    pq.write_table(pa.Table.from_pylist(scored, schema=PART_SCHEMA).drop(["order", "error"]),
                   out / "scores.parquet")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(["path", *mvfa.SCORE_COLUMNS])
    for r in scored:
        abnormal = "" if r["abnormal"] is None else ("1" if r["abnormal"] else "0")
        writer.writerow([r["path"], f32(r["score"]), f32(r["zero_shot_score"]),
                         f32(r["few_shot_score"]), abnormal])
    (out / "scores.csv").write_text(text.getvalue(), newline="")
    # Unreadable files take part in the series grouping, in their place (as in `score`).
    every = sorted(unique.values(), key=lambda r: (position.get(r["file"], len(files)), r["frame"]))
    results = [
        mvfa.FrameResult(path=r["path"], file=r["file"], frame=r["frame"], frames=r["frames"],
                         score=r["score"], zero_shot_score=r["zero_shot_score"],
                         few_shot_score=r["few_shot_score"], abnormal=r["abnormal"],
                         error=r["error"])
        for r in every
    ]
    series = mvfa.series_csv(results, threshold)
    (out / "series.csv").write_text(series, newline="")
    series_rows = list(csv.DictReader(io.StringIO(series)))
    if series_rows:
        pq.write_table(pa.Table.from_pylist(series_rows), out / "series.parquet")
    with open(out / "failures.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(["path", "error"])
        for r in failures:
            w.writerow([r["file"], r["error"]])
    return scored, failures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="*", help="folders and files to score")
    ap.add_argument("--list", help="a text file with one path per line")
    ap.add_argument("--clip", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--organ")
    ap.add_argument("--workers", type=int, default=2, help="actors, one detector each")
    ap.add_argument("--cpus-per-worker", type=float, default=1)
    ap.add_argument("--gpus-per-worker", type=float, default=0)
    ap.add_argument("--files-per-batch", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8, help="frames per forward pass")
    ap.add_argument("--address", help="a running Ray cluster (e.g. auto); default: a local one")
    ap.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    inputs = list(args.inputs)
    if args.list:
        inputs += [line.strip() for line in Path(args.list).read_text().splitlines() if line.strip()]
    if not inputs:
        ap.error("give folders or files, or --list")
    files, unreadable = mvfa.list_files(inputs)
    for path, message in unreadable:
        print(f"error: {message}", file=sys.stderr)
    done = done_files(out)
    todo = [(i, f) for i, f in enumerate(files) if f not in done]
    print(f"{len(files)} file(s); {len(files) - len(todo)} already scored in {out / 'parts'}; "
          f"{len(todo)} to score", flush=True)

    if todo:
        if args.address:
            ray.init(address=args.address)
        else:
            ray.init(num_cpus=args.num_cpus)
        ds = ray.data.from_items([{"order": i, "file": f} for i, f in todo],
                                 override_num_blocks=max(1, len(todo) // args.files_per_batch))
        scored = ds.map_batches(
            ScoreActor,
            fn_constructor_kwargs=dict(
                clip=args.clip, checkpoint=args.checkpoint, out=str(out), organ=args.organ,
                batch=args.batch, cpu=args.gpus_per_worker == 0,
            ),
            batch_size=args.files_per_batch,
            compute=ray.data.ActorPoolStrategy(size=args.workers),
            num_cpus=args.cpus_per_worker,
            num_gpus=args.gpus_per_worker,
            # A worker that dies is replaced and its batch retried.
            max_restarts=-1,
            max_task_retries=-1,
        )
        started = time.time()
        files_done = frames_done = 0
        for batch in scored.iter_batches(batch_size=None):
            threshold = float(batch["threshold"][0])
            (out / "threshold.txt").write_text("" if np.isnan(threshold) else repr(threshold))
            files_done += int(np.sum(batch["files"]))
            frames_done += int(np.sum(batch["frames"]))
            rate = frames_done / max(time.time() - started, 1e-9)
            print(f"progress: {files_done}/{len(todo)} files, {frames_done} frames, "
                  f"{rate:.2f} frames/s", flush=True)
        ray.shutdown()

    # The detector's threshold, as the workers reported it (opened here only when a resumed
    # run had nothing left to score and the record is gone).
    info_path = out / "threshold.txt"
    if not info_path.exists():
        det_info = mvfa.Detector(args.clip, args.checkpoint, organ=args.organ, cpu=True).info
        info_path.write_text("" if det_info["threshold"] is None else repr(det_info["threshold"]))
    text = info_path.read_text().strip()
    threshold = float(text) if text else None
    frames, failures = merge(out, files, threshold)
    print(f"wrote {out / 'scores.csv'} ({len(frames)} frames), {out / 'series.csv'}, "
          f"{out / 'failures.csv'} ({len(failures)} unreadable)")
    return 1 if failures or unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
