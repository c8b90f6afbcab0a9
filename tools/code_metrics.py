#!/usr/bin/env python3
"""Code-health counts for the issue tracker: long functions and String errors.

Usage: tools/code_metrics.py [--list] [src]

A function's length runs from its `fn` line to its closing brace. Functions inside
`#[cfg(test)]` modules are skipped (the count is about shipped code).
"""
import re
import sys
from pathlib import Path

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def strip_strings(line):
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "' '", line)
    return line.split("//")[0]


def functions(path):
    lines = path.read_text().splitlines()
    out = []
    test_depth = None
    depth = 0
    pending_cfg_test = False
    stack = []  # (name, start, depth_at_open)
    for i, raw in enumerate(lines):
        line = strip_strings(raw)
        if "#[cfg(test)]" in raw:
            pending_cfg_test = True
        m = FN.match(line)
        if m and test_depth is None and "{" in line or (m and test_depth is None and not line.rstrip().endswith(";")):
            if m and test_depth is None:
                stack.append((m.group(6), i, depth, False))
        opens = line.count("{")
        closes = line.count("}")
        if pending_cfg_test and re.match(r"^\s*(pub\s+)?mod\s+\w+", line) and opens:
            test_depth = depth
            pending_cfg_test = False
        elif pending_cfg_test and line.strip() and not line.strip().startswith("#"):
            pending_cfg_test = False
        depth += opens - closes
        while stack and depth <= stack[-1][2] and (opens or closes or line.rstrip().endswith(";")):
            name, start, d, _ = stack.pop()
            if i > start or "}" in line:
                out.append((name, start + 1, i - start + 1))
        if test_depth is not None and depth <= test_depth:
            test_depth = None
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = Path(args[0] if args else "src")
    rows = []
    strings = 0
    anyhow = []
    for f in sorted(root.rglob("*.rs")):
        for name, start, n in functions(f):
            rows.append((n, f"{f}:{start}", name))
        text = f.read_text()
        body = text.split("#[cfg(test)]")[0]
        strings += len(re.findall(r"Result<[^;{]*?,\s*String>", body))
        if "anyhow" in body:
            anyhow.append(str(f))
    rows.sort(reverse=True)
    over80 = [r for r in rows if r[0] > 80]
    over120 = [r for r in rows if r[0] > 120]
    print(f"functions over 80 lines: {len(over80)}; over 120: {len(over120)}")
    print(f"Result<_, String> in signatures: {strings}")
    print(f"files using anyhow: {len(anyhow)} {' '.join(anyhow)}")
    if "--list" in sys.argv:
        for n, loc, name in over80:
            print(f"{n:5} {loc} {name}")


if __name__ == "__main__":
    main()
