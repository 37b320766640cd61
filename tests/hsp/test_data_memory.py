"""A worker reading samples through the memory-mapped reader does not hold the corpus:
its memory is the same for a corpus 10x larger.

Measured in a fresh subprocess per corpus (after imports, before opening the data, and
after reading 400 random samples): anonymous RSS (heap: what loading the corpus would
grow) and total RSS (heap + mapped file pages). The 10x corpus has 72 MB more tokens as
uint16 (288 MB as int64), so the margins below -- 8 MB anonymous, 16 MB total -- fail if
any copy of the corpus were read into memory, or if the reader kept the pages it read
mapped (that grew total RSS by 69 MB here before the reader released them).
"""

import json
import subprocess
import sys

import pytest

from hsp.data import prepare

DOC_CHARS = 2000
BASE_DOCS = 2000  # 1x: 4 M tokens (8 MB uint16); 10x: 40 M tokens (80 MB)
ANON_MARGIN_BYTES = 8 << 20
TOTAL_MARGIN_BYTES = 16 << 20

_PROBE = r"""
import json, sys
import numpy as np
from hsp.data import PreparedDataset

def rss():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "RssAnon")}

before = rss()
data = PreparedDataset(sys.argv[1], max_len=4096)
rng = np.random.default_rng(0)
total = sum(int(data.tokens(int(i)).sum() >= 0) for i in rng.integers(0, len(data.lengths), 400))
after = rss()
print(json.dumps({"samples": total, "num_tokens": int(data.lengths.sum()),
                  "anon": after["RssAnon"] - before["RssAnon"], "total": after["VmRSS"] - before["VmRSS"]}))
"""


def _corpus(folder, num_docs: int):
    folder.mkdir(parents=True)
    line = json.dumps({"text": "abcdefghij" * (DOC_CHARS // 10)})
    with open(folder / "docs.jsonl", "w") as f:
        for _ in range(num_docs):
            f.write(line + "\n")


def _measure(folder) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(folder)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.slow
def test_data_worker_memory_does_not_grow_with_the_corpus(tmp_path):
    results = {}
    for scale in (1, 10):
        _corpus(tmp_path / f"raw{scale}", BASE_DOCS * scale)
        prepare([tmp_path / f"raw{scale}"], tmp_path / f"prep{scale}")
        results[scale] = _measure(tmp_path / f"prep{scale}")
    small, large = results[1], results[10]
    assert large["num_tokens"] == 10 * small["num_tokens"] >= 4_000_000
    assert small["samples"] == large["samples"] == 400
    growth_anon, growth_total = large["anon"] - small["anon"], large["total"] - small["total"]
    print(f"RSS growth 1x -> 10x: anonymous {growth_anon / 2**20:.1f} MiB, total {growth_total / 2**20:.1f} MiB")
    assert growth_anon < ANON_MARGIN_BYTES, results
    assert growth_total < TOTAL_MARGIN_BYTES, results
