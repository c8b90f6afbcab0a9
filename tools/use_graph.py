#!/usr/bin/env python3
"""The graph of module references between the files of a Rust module tree, and its cycles.

Usage: tools/use_graph.py [src/app] [--edges]

An edge A -> B means file A names an item of file B: in a `use`, or in a path written in
the code (`crate::app::jobs::Jobs`, `super::files::show`, `child::Item`). `mod` declarations
are not edges. Comments and `#[cfg(test)]` modules are ignored. Prints every strongly
connected component with more than one file (an import circle) and exits 1 if there is one.
"""
import re
import sys
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else "src/app")
SRC = Path("src")


def module_of(path):
    """`src/app/jobs/runner.rs` -> ['app', 'jobs', 'runner']."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


def file_of(module):
    """The longest prefix of `module` that is a file, and the file."""
    for n in range(len(module), 0, -1):
        for candidate in (SRC.joinpath(*module[:n]).with_suffix(".rs"), SRC.joinpath(*module[:n], "mod.rs")):
            if candidate.is_file():
                return candidate
    return None


def strip(text):
    text = text.split("#[cfg(test)]")[0]
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)


def children(text):
    return set(re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, re.M))


PATH = re.compile(r"\b(crate|super|self|[a-z_][a-z0-9_]*)((?:::[A-Za-z_][A-Za-z0-9_]*|::\{)+)")


def expand_use_groups(text):
    """`use a::b::{c, d::e}` -> `a::b::c a::b::d::e` (one level of braces)."""
    def repl(m):
        prefix, inner = m.group(1), m.group(2)
        items = [i.strip() for i in inner.split(",") if i.strip()]
        return " ".join(f"{prefix}::{i.split(' as ')[0].strip()}" for i in items)
    for _ in range(3):
        text = re.sub(r"([\w:]+)::\{([^{}]*)\}", repl, text)
    return text


def references(path):
    module = module_of(path)
    text = strip(path.read_text())
    kids = children(text)
    text = expand_use_groups(text)
    targets = set()
    for m in PATH.finditer(text):
        head = m.group(1)
        rest = [p for p in m.group(2).split("::") if p and p != "{"]
        if head == "crate":
            full = rest
        elif head == "super":
            full = module[:-1] + rest
            while full and full[0] == "super":
                full = full[1:]
        elif head == "self":
            full = module + rest
        elif head in kids:
            full = module + [head] + rest
        else:
            continue
        target = file_of(full)
        if target is not None and target != path and str(target).startswith(str(ROOT)):
            targets.add(target)
    return targets


def main():
    files = sorted(ROOT.rglob("*.rs"))
    top = ROOT.with_suffix(".rs")
    if top.is_file():
        files.insert(0, top)
    graph = {f: references(f) for f in files}
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(comp)

    sys.setrecursionlimit(10000)
    for f in files:
        if f not in index:
            connect(f)
    edges = sum(len(t) for t in graph.values())
    print(f"{len(files)} files, {edges} edges")
    if "--edges" in sys.argv:
        for f, ts in graph.items():
            for t in sorted(ts):
                print(f"  {f} -> {t}")
    cycles = [c for c in sccs if len(c) > 1]
    for c in cycles:
        print("circle:", " <-> ".join(str(p) for p in sorted(c)))
    if not cycles:
        print("no import circle")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
