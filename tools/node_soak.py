#!/usr/bin/env python3
"""Soak run of the AI node (run by hand; prints a table for the README and the closing note).

Synthetic DICOM volumes are sent by several DCMTK `storescu` processes at once to
`mvfa-studio serve`, which scores every series with a quick detector (the tiny random CLIP of
the test fixtures unless --clip names real weights) and sends the results to a real Orthanc
over C-STORE. Reports instances sent and journaled, series scored, results in Orthanc, the
node's peak RSS, and the p50/p95 time from the last instance of a series received to the last
of its results sent (from the node's journal).

    tools/node_soak.py --cli target/release/mvfa-studio --volumes 40 --slices 25 --senders 10

Needs storescu (Debian dcmtk) and Orthanc (Debian orthanc).
"""
import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{out.stderr}")
    return out


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def wait_for(what, check, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"timed out waiting for {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", default=str(ROOT / "target/release/mvfa-studio"))
    ap.add_argument("--clip", default=str(ROOT / "tests/fixtures/clip/open_clip/open_clip_model.safetensors"))
    ap.add_argument("--volumes", type=int, default=40)
    ap.add_argument("--slices", type=int, default=25)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--senders", type=int, default=10)
    ap.add_argument("--interval", type=float, default=0.0,
                    help="send one series every this many seconds (each in its own association) "
                         "instead of all at once from --senders processes")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mvfa-soak-"))
    data = work / "data"
    run([args.cli, "synth-data", "--normal", "4", "--abnormal", "4", "--size", str(args.size),
         "--volumes", str(args.volumes), "--slices", str(args.slices), "--seed", "1", data])
    ckpt = work / "detector.safetensors"
    run([args.cli, "train", "--cpu", "--organ", "Brain", "--epochs", "0", "--clip", args.clip,
         "--data", data, "--out", ckpt])

    # Orthanc, the destination.
    o_http, o_dicom = free_port(), free_port()
    storage = work / "orthanc"
    (work / "orthanc.json").write_text(json.dumps({
        "Name": "soak", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
        "HttpPort": o_http, "DicomPort": o_dicom, "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True,
    }))
    orthanc = subprocess.Popen(["Orthanc", str(work / "orthanc.json")],
                               stdout=subprocess.DEVNULL, stderr=open(work / "orthanc.log", "w"))
    wait_for("Orthanc", lambda: get_json(f"http://127.0.0.1:{o_http}/system"), 30)

    n_dimse, n_http = free_port(), free_port()
    (work / "serve.toml").write_text(f"""
[node]
ae_title = "MVFA_NODE"
dimse_listen = "127.0.0.1:{n_dimse}"
http_listen = "127.0.0.1:{n_http}"
data_dir = "node"
quiet_seconds = 30
complete_at_release = true
cpu = true
[[route]]
name = "soak"
checkpoint = "{ckpt}"
clip = "{args.clip}"
destination = "orthanc"
[[destination]]
name = "orthanc"
protocol = "dimse"
host = "127.0.0.1"
port = {o_dicom}
called_ae = "ORTHANC"
""")
    node = subprocess.Popen([args.cli, "serve", "--config", work / "serve.toml"],
                            stdout=subprocess.DEVNULL, stderr=open(work / "node.log", "w"))
    health = f"http://127.0.0.1:{n_http}/health"
    wait_for("the node", lambda: get_json(health), 30)

    peak = {"rss": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                for line in open(f"/proc/{node.pid}/status"):
                    if line.startswith("VmRSS:"):
                        peak["rss"] = max(peak["rss"], int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.1)

    threading.Thread(target=sample, daemon=True).start()
    volumes = sorted(p for p in (data / "volumes").iterdir() if p.is_dir())
    if args.interval > 0:
        groups = [[v] for v in volumes]
    else:
        groups = [volumes[i::args.senders] for i in range(args.senders)]
    started = time.time()
    senders = []
    for i, g in enumerate(groups):
        if not g:
            continue
        if args.interval > 0 and i > 0:
            time.sleep(max(0.0, started + i * args.interval - time.time()))
        senders.append(subprocess.Popen(
            ["storescu", "-aec", "MVFA_NODE", "-aet", f"SENDER{i % 100}", "+sd", "+r",
             "127.0.0.1", str(n_dimse), *g],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    failed_senders = sum(s.wait() != 0 for s in senders)
    sent_in = time.time() - started

    def done():
        h = get_json(health)
        return h if (h["queued_series"] == 0 and h["unsent_results"] == 0
                     and h["series"].get("done", 0) == len(volumes)) else None

    wait_for("every series", done, 3600)
    total = time.time() - started
    stop.set()
    hwm = 0
    for line in open(f"/proc/{node.pid}/status"):
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])

    db = sqlite3.connect(work / "node" / "journal.sqlite3")
    instances = db.execute("SELECT COUNT(*) FROM instance").fetchone()[0]
    scored = db.execute("SELECT series_uid, COUNT(*) FROM event WHERE kind='scored' GROUP BY series_uid").fetchall()
    results = db.execute("SELECT COUNT(*) FROM result").fetchone()[0]
    latencies = [row[0] for row in db.execute("""
        SELECT MAX(CASE WHEN kind = 'sent' THEN at END) - MAX(CASE WHEN kind = 'received' THEN at END)
        FROM event GROUP BY series_uid""")]
    scoring = [float(d.rsplit(", ", 1)[1].split()[0]) for (d,) in
               db.execute("SELECT detail FROM event WHERE kind='scored'")]
    in_orthanc = get_json(f"http://127.0.0.1:{o_http}/statistics")["CountInstances"]
    node.kill()
    orthanc.kill()

    q = statistics.quantiles(latencies, n=20)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    rows = [
        ("CPU", f"{cpu}, {os.cpu_count()} cores"),
        ("instances sent", f"{sum(len(list(v.glob('*.dcm'))) for v in volumes)} in {len(volumes)} series, "
                           + (f"one association every {args.interval:g} s" if args.interval > 0
                            else f"{len(senders)} storescu at once")
                           + f" ({failed_senders} failed), {sent_in:.1f} s"),
        ("instances journaled", str(instances)),
        ("series scored", f"{len(scored)} (each once: {all(n == 1 for _, n in scored)})"),
        ("results sent / in Orthanc", f"{results} / {in_orthanc}"),
        ("all done after", f"{total:.1f} s"),
        ("scoring one series (median)", f"{statistics.median(scoring):.2f} s"),
        ("node peak RSS", f"{max(hwm, peak['rss']) / 1024:.0f} MiB"),
        ("last instance received -> results sent", f"p50 {statistics.median(latencies):.1f} s, p95 {q[18]:.1f} s"),
    ]
    print("| measure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    if args.keep:
        print(f"work folder: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
