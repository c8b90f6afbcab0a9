#!/usr/bin/env python3
"""Writes assets/html_entities.tsv: the HTML5 named character references that the CLIP text
clean-up decodes, so the Rust port (src/model/clip/tokenizer.rs) needs neither Python nor ftfy.

Each line is `name<TAB>code points (hex, space separated)<TAB>flags`:
  - `name` is the entity name without the leading `&` (with its `;` where it has one),
  - flag `h`: the name is in Python's `html.entities.html5` (used by `html.unescape`),
  - flag `f`: `&name` is in ftfy's `chardata.HTML_ENTITIES` (ftfy's semicolon-only decoder,
    which also accepts all-caps forms of some entities such as `EACUTE;`).

Run by hand with the reference venv: /work/pyref/bin/python tools/tokenizer/make_html_entities.py
"""
import html.entities
import pathlib
import sys

import ftfy
from ftfy import chardata

out = pathlib.Path(__file__).resolve().parents[2] / "assets" / "html_entities.tsv"
table = {}
for name, value in html.entities.html5.items():
    table.setdefault(name, [value, set()])[1].add("h")
for amp_name, value in chardata.HTML_ENTITIES.items():
    name = amp_name[1:]
    entry = table.setdefault(name, [value, set()])
    if entry[0] != value:
        sys.exit(f"entity {name} differs between html5 and ftfy")
    entry[1].add("f")
lines = [
    f"# HTML5 entities: Python {sys.version.split()[0]} html.entities.html5 (h), ftfy {ftfy.__version__} HTML_ENTITIES (f)"
]
for name in sorted(table):
    value, flags = table[name]
    cps = " ".join(f"{ord(c):X}" for c in value)
    lines.append(f"{name}\t{cps}\t{''.join(sorted(flags))}")
out.write_text("\n".join(lines) + "\n", encoding="utf-8")
print(f"wrote {out} ({len(table)} entities)")
