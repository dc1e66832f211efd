#!/usr/bin/env python3
"""Builds tests/data/token_corpus.jsonl: varied prompts for measuring the token estimate.

Kinds: English prose and code (from Python's standard library docstrings and sources), JSON
(generated), chat-like mixes, and non-Latin scripts (real translated sentences from the gettext
catalogues under /usr/share/locale). Deterministic: the same machine gives the same corpus.
Reference token counts are added by scripts/measure/token_reference.mjs.
"""
import gettext
import glob
import inspect
import json
import os
import random
import sys

rng = random.Random(20261123)
out = []


def add(kind, text):
    text = text.strip()
    if 20 <= len(text) <= 6000:
        out.append({"kind": kind, "text": text})


# English prose: docstrings of standard library modules and functions.
import collections, functools, itertools, json as jsonmod, os as osmod, pathlib, re, statistics, string, textwrap, typing, urllib.parse, http.client, email.message, argparse, logging, datetime, decimal, fractions, heapq, bisect, csv, sqlite3, subprocess, threading, asyncio, unittest, zipfile  # noqa: E401,E402

modules = [collections, functools, itertools, jsonmod, osmod, pathlib, re, statistics, string, textwrap,
           typing, urllib.parse, http.client, email.message, argparse, logging, datetime, decimal,
           fractions, heapq, bisect, csv, sqlite3, subprocess, threading, asyncio, unittest, zipfile]
docs = []
for m in modules:
    for name, obj in sorted(vars(m).items()):
        doc = inspect.getdoc(obj) if not name.startswith("_") else None
        if doc and len(doc) > 200:
            docs.append(doc)
rng.shuffle(docs)
for d in docs[:70]:
    add("prose", d[:2500])

# Code: slices of standard library sources.
sources = []
for m in modules:
    try:
        src = inspect.getsource(m)
    except (OSError, TypeError):
        continue
    lines = src.splitlines()
    for _ in range(3):
        start = rng.randrange(0, max(1, len(lines) - 60))
        sources.append("\n".join(lines[start:start + rng.randrange(15, 60)]))
rng.shuffle(sources)
for s in sources[:60]:
    add("code", s)

# JSON: tool definitions, schemas and records.
def rand_word():
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randrange(3, 12)))

def rand_value(depth=0):
    r = rng.random()
    if depth > 2 or r < 0.3:
        return rng.choice([rng.randrange(-1000, 100000), round(rng.random() * 1000, 3), True, None, rand_word(), " ".join(rand_word() for _ in range(rng.randrange(1, 8)))])
    if r < 0.65:
        return {rand_word(): rand_value(depth + 1) for _ in range(rng.randrange(1, 6))}
    return [rand_value(depth + 1) for _ in range(rng.randrange(1, 5))]

for i in range(50):
    if i % 2 == 0:
        tool = {"type": "function", "function": {"name": rand_word(), "description": " ".join(rand_word() for _ in range(12)),
                "parameters": {"type": "object", "properties": {rand_word(): {"type": rng.choice(["string", "integer", "boolean"]), "description": rand_word()} for _ in range(rng.randrange(2, 8))}, "required": [rand_word()]}}}
        add("json", json.dumps(tool, indent=rng.choice([None, 2])))
    else:
        add("json", json.dumps(rand_value(), indent=rng.choice([None, 2]), ensure_ascii=False))

# Non-Latin scripts: translated messages from gettext catalogues.
langs = {"zh_CN": "chinese", "ja": "japanese", "ko": "korean", "ru": "russian", "uk": "ukrainian",
         "ar": "arabic", "he": "hebrew", "hi": "hindi", "th": "thai", "el": "greek", "fa": "persian",
         "ta": "tamil", "bn": "bengali", "vi": "vietnamese", "de": "german", "fr": "french",
         "es": "spanish", "pl": "polish", "tr": "turkish", "pt_BR": "portuguese"}
for code, lang in langs.items():
    texts = []
    for mo in sorted(glob.glob(f"/usr/share/locale/{code}/LC_MESSAGES/*.mo")):
        try:
            with open(mo, "rb") as f:
                cat = gettext.GNUTranslations(f)
        except Exception:
            continue
        texts.extend(v for k, v in sorted(cat._catalog.items(), key=lambda kv: str(kv[0])) if isinstance(v, str) and k and len(v) > 15)
    if not texts:
        continue
    rng.shuffle(texts)
    per = 6 if lang in ("german", "french", "spanish", "polish", "turkish", "portuguese") else 8
    for i in range(per):
        chunk = texts[i * 12:(i + 1) * 12]
        if chunk:
            add(lang, "\n".join(chunk)[:3000])

# Chat-like mixes: a question around a snippet.
for i in range(25):
    snippet = rng.choice(sources)[:800]
    q = rng.choice(["Explain what this code does:", "Find the bug in the following function.", "Rewrite this in Rust, keeping the behaviour:", "Summarize in one sentence:"])
    add("chat", f"{q}\n\n```\n{snippet}\n```\n\nAnswer briefly.")

path = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "token_corpus.jsonl")
with open(path, "w", encoding="utf-8") as f:
    for row in out:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
kinds = collections.Counter(r["kind"] for r in out)
print(f"{len(out)} prompts: {dict(kinds)}", file=sys.stderr)
