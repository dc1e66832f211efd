// Adds reference token counts to tests/data/token_corpus.jsonl with real BPE tokenizers
// (gpt-tokenizer: OpenAI's cl100k_base and o200k_base, shipped inside the npm package, so this
// runs offline). Run: node scripts/measure/token_reference.mjs
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { encode as cl100k } from "gpt-tokenizer/encoding/cl100k_base";
import { encode as o200k } from "gpt-tokenizer/encoding/o200k_base";

const file = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../tests/data/token_corpus.jsonl");
const rows = fs.readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l));
const out = rows.map(({ kind, text }) => ({ kind, cl100k: cl100k(text).length, o200k: o200k(text).length, text }));
fs.writeFileSync(file, out.map((r) => JSON.stringify(r)).join("\n") + "\n");
console.error(`${out.length} prompts counted`);
