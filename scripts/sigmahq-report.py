#!/usr/bin/env python3
"""Writes docs/sigmahq-load-report.md from `vigil rules lint fixtures/sigma/rules`.

Usage (from the repository root, after `cargo build`):
    target/debug/vigil rules lint fixtures/sigma/rules > /tmp/lint.txt
    python3 scripts/sigmahq-report.py /tmp/lint.txt
Needs PyYAML (to read each loaded rule's logsource).
"""
import collections
import datetime
import glob
import re
import sys

import yaml

lines = open(sys.argv[1]).read().splitlines()
summary = lines[-1]
unsupported_paths = set()
groups = collections.Counter()
for line in lines[:-1]:
    m = re.match(r"unsupported: (.+?):\d+: ", line)
    if m:
        unsupported_paths.add(m.group(1))
    g = re.search(r"logsource \{([^}]*)\}", line)
    if g:
        groups[g.group(1)] += 1
loaded = collections.Counter()
for f in sorted(glob.glob("fixtures/sigma/rules/**/*.yml", recursive=True)):
    if f in unsupported_paths:
        continue
    ls = (yaml.safe_load(open(f)) or {}).get("logsource") or {}
    loaded[", ".join(f"{k}: {ls[k]}" for k in ("product", "service", "category") if k in ls)] += 1
n_loaded = int(re.search(r"loaded (\d+)", summary).group(1))
assert sum(loaded.values()) == n_loaded, (sum(loaded.values()), n_loaded)
out = [
    "# SigmaHQ rules in Vigil: load report",
    "",
    "What `vigil rules lint fixtures/sigma/rules` says of the SigmaHQ rule tree (commit `8eaafff1`,",
    f"3,141 rules, see `fixtures/sigma/SOURCE.md`), generated {datetime.date.today()} by",
    "`scripts/sigmahq-report.py` (its docstring has the commands).",
    "",
    f"Result: `{summary}`.",
    "",
    "- **No rule panics the loader and none fails.** Every rule is valid Sigma that Vigil compiles:",
    "  `tests/sigmahq.rs` checks it, and the engine's own test loads all of them with unserved log",
    "  sources allowed.",
    "- **Unsupported** means the rule's `logsource` names events that no Vigil parser produces yet. Such",
    "  a rule is refused rather than run against events it was not written for: a Windows",
    "  process-creation rule has nothing to find in sshd logs, and its keyword searches could only",
    "  raise false positives.",
    "- Each parser that lands adds its `logsource` rows to `LOGSOURCE_MAP` in",
    "  `correlate/src/fields.rs`, which moves its rules from unsupported to loaded.",
    "",
    "## Loaded, by log source",
    "",
    "| logsource | rules |",
    "| --- | ---: |",
]
out += [f"| `{{{k}}}` | {v:,} |" for k, v in loaded.most_common()]
out += [
    "",
    "Loading is not matching. Some of these rules test fields Vigil's parsers do not fill yet",
    "(`CommandLine`, `cs-uri-query`, Zeek's `query`, ...), so they stay silent until a parser",
    "produces those fields under the names in the field map.",
    "",
    "## Unsupported, by log source",
    "",
    "| logsource | rules |",
    "| --- | ---: |",
]
out += [f"| `{{{k}}}` | {v:,} |" for k, v in groups.most_common()]
open("docs/sigmahq-load-report.md", "w").write("\n".join(out) + "\n")
print(summary)
