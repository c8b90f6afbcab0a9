"""Errors arrive as mvfa_studio.MvfaError with the CLI's messages, and long calls release the
GIL (run by tests/integration/python.rs).

    python3 tests/python/errors.py CLI CLIP CHECKPOINT WORK
"""

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

import mvfa_studio as mvfa


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def cli_error(cmd) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode == 0:
        fail(f"{cmd} succeeded")
    return p.stderr


def main() -> None:
    cli, clip, checkpoint, work = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    work.mkdir(parents=True, exist_ok=True)

    # A weights file that is not one.
    bad = work / "not-weights.safetensors"
    bad.write_bytes(b"this is not a safetensors file")
    try:
        mvfa.Detector(bad, checkpoint, cpu=True)
        fail("a broken weights file opened")
    except mvfa.MvfaError as e:
        stderr = cli_error([cli, "score", "--clip", bad, "--cpu", "--checkpoint", checkpoint,
                            str(work), "--out", work / "o1"])
        if str(e) not in stderr:
            fail(f"Python says {str(e)!r}; the CLI:\n{stderr}")
        print(f"broken weights: {e}")

    # A missing checkpoint.
    try:
        mvfa.Detector(clip, work / "missing.safetensors", cpu=True)
        fail("a missing checkpoint opened")
    except mvfa.MvfaError as e:
        stderr = cli_error([cli, "score", "--clip", clip, "--cpu", "--checkpoint",
                            work / "missing.safetensors", str(work), "--out", work / "o2"])
        if str(e) not in stderr:
            fail(f"Python says {str(e)!r}; the CLI:\n{stderr}")
        print(f"missing checkpoint: {e}")

    det = mvfa.Detector(clip, checkpoint, cpu=True)
    # A broken DICOM among good images: the rest are scored, the message is the CLI's.
    images = work / "images"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(3)
    from PIL import Image
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(images / f"ok{i}.png")
    (images / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI" + b"\xff" * 40)
    try:
        det.score_files([images])
        fail("a broken DICOM raised nothing")
    except mvfa.MvfaError as e:
        message = str(e)
    frames = det.score_files([images], errors="report")
    errors = [f.error for f in frames if f.error]
    if len([f for f in frames if f.error is None]) != 2 or len(errors) != 1:
        fail(f"expected 2 scored and 1 failed: {frames}")
    p = subprocess.run([cli, "score", "--clip", clip, "--cpu", "--checkpoint", checkpoint,
                        images, "--out", work / "o3"], capture_output=True, text=True)
    if p.returncode != 1 or errors[0] not in p.stderr or errors[0] not in message:
        fail(f"Python: {errors[0]!r} / {message!r}; the CLI ({p.returncode}):\n{p.stderr}")
    print(f"broken DICOM: {errors[0]}")

    # Bad arrays and arguments.
    for call, expected in [
        (lambda: det.score_array(np.zeros((2, 3, 4, 5, 6))), "give (H, W)"),
        (lambda: det.score_array(np.full((32, 32), np.nan, dtype=np.float32)), "NaN"),
        (lambda: mvfa.Detector(clip, checkpoint, fpr=2.0, cpu=True), "is not a rate"),
        (lambda: mvfa.fit(clip, work / "x.safetensors", data=work / "nowhere", cpu=True), "nowhere"),
    ]:
        try:
            call()
            fail(f"no error where {expected!r} was expected")
        except mvfa.MvfaError as e:
            if expected not in str(e):
                fail(f"{str(e)!r} does not say {expected!r}")

    # Scoring releases the GIL: a Python thread keeps counting meanwhile.
    count = 0
    done = threading.Event()

    def counter():
        nonlocal count
        while not done.is_set():
            count += 1
            time.sleep(0.001)

    t = threading.Thread(target=counter)
    t.start()
    before = count
    started = time.time()
    det.score_array(rng.integers(0, 255, (4, 64, 64), dtype=np.uint8))
    elapsed = time.time() - started
    done.set()
    t.join()
    ticks = count - before
    if ticks < max(5, int(elapsed * 100)):
        fail(f"only {ticks} ticks of a Python thread during {elapsed:.2f} s of scoring")
    print(f"GIL released: {ticks} ticks of another thread during {elapsed:.2f} s of scoring")


if __name__ == "__main__":
    main()
