"""examples/ray_score_archive.py on a local Ray cluster against the CLI (run by
tests/integration/python.rs).

    python3 tests/python/ray_job.py CLI CLIP CHECKPOINT WORK INPUT_FOLDER

1. The job scores the folder with two workers; scores.csv and series.csv equal the CLI's,
   byte for byte.
2. Resume: half the parts are deleted; a rerun scores only the files they held and the
   tables come out the same.
3. A worker killed with SIGKILL in the middle of a run: the job still finishes with every
   frame scored once, equal to the CLI's.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ray_score_archive.py"


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def job(clip, checkpoint, out, folder, extra=()):
    return [sys.executable, str(EXAMPLE), "--clip", clip, "--checkpoint", checkpoint,
            "--out", str(out), "--num-cpus", "2", "--workers", "2", "--files-per-batch", "2",
            *extra, folder]


def same_tables(cli_out: Path, out: Path, what: str) -> None:
    for name in ["scores.csv", "series.csv"]:
        a, b = (cli_out / name).read_bytes(), (out / name).read_bytes()
        if a != b:
            fail(f"{what}: {name} differs from the CLI's:\nCLI:\n{a.decode()[:800]}\nRay:\n{b.decode()[:800]}")


def main() -> None:
    cli, clip, checkpoint, work, folder = sys.argv[1:6]
    work = Path(work)
    cli_out = work / "cli"
    p = subprocess.run([cli, "score", "--clip", clip, "--cpu", "--checkpoint", checkpoint,
                        folder, "--out", cli_out], capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"score failed:\n{p.stderr}")
    frames = len((cli_out / "scores.csv").read_text().splitlines()) - 1

    # 1. A whole run.
    out = work / "ray"
    started = time.time()
    p = subprocess.run(job(clip, checkpoint, out, folder), capture_output=True, text=True)
    seconds = time.time() - started
    if p.returncode != 0:
        fail(f"the Ray job failed:\n{p.stdout}\n{p.stderr}")
    if "progress:" not in p.stdout:
        fail(f"no progress printed:\n{p.stdout}")
    same_tables(cli_out, out, "a whole run")
    print(f"whole run: {frames} frames in {seconds:.1f} s (two workers, Ray start included), "
          "scores.csv and series.csv equal to the CLI's")

    # 2. Resume after losing half the parts.
    parts = sorted((out / "parts").glob("*.parquet"))
    kept = {p: p.stat().st_mtime_ns for p in parts[len(parts) // 2 :]}
    for part in parts[: len(parts) // 2]:
        part.unlink()
    (out / "scores.csv").unlink()
    p = subprocess.run(job(clip, checkpoint, out, folder), capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"the resumed job failed:\n{p.stdout}\n{p.stderr}")
    for part, mtime in kept.items():
        if part.stat().st_mtime_ns != mtime:
            fail(f"{part.name} was scored again on resume")
    if "already scored" not in p.stdout:
        fail(f"the resumed run does not say what it skipped:\n{p.stdout}")
    same_tables(cli_out, out, "a resumed run")
    print(f"resume: {len(kept)} part(s) kept untouched, {len(parts) - len(kept)} rescored; "
          "tables equal to the CLI's")

    # 3. A worker killed in the middle.
    out = work / "ray-kill"
    proc = subprocess.Popen(job(clip, checkpoint, out, folder), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        workers = sorted((out / "workers").glob("*")) if (out / "workers").exists() else []
        parts = list((out / "parts").glob("*.parquet")) if (out / "parts").exists() else []
        if workers and parts:
            pid = int(workers[0].name)
            try:
                os.kill(pid, signal.SIGKILL)
                killed = pid
            except ProcessLookupError:
                pass
            break
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=900)
    if killed is None:
        fail(f"no worker to kill before the job ended:\n{stdout}\n{stderr}")
    if proc.returncode != 0:
        fail(f"the job did not survive a killed worker:\n{stdout}\n{stderr}")
    done = len(list((out / "parts").glob("*.parquet")))
    same_tables(cli_out, out, "a run with a killed worker")
    rows = (out / "scores.csv").read_text().splitlines()[1:]
    if len(rows) != len(set(rows)) or len(rows) != frames:
        fail(f"{len(rows)} rows for {frames} frames")
    print(f"killed worker {killed} after the first part: the job finished, {done} parts, "
          f"every one of {frames} frames once, equal to the CLI's")


if __name__ == "__main__":
    main()
