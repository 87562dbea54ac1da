#!/usr/bin/env python3
"""Writes tests/data/rerank/<case>/: features, their distance matrices as torchreid's engine computes them
(squared euclidean, float32: ||q||^2 + ||g||^2 - 2 q.g), and what torchreid's own `re_ranking` returns for them.
mgat's re-ranking must give the same re-ranked distances to 1e-5 (crates/eval/src/rerank.rs, tests/metrics.rs).

torchreid's function is imported from a checkout of https://github.com/KaiyangZhou/deep-person-reid (only
`torchreid/utils/rerank.py`, which needs numpy alone, so no torch is installed):

    python3 -m venv /tmp/np && /tmp/np/bin/pip install numpy
    /tmp/np/bin/python scripts/make-rerank-fixtures.py /path/to/deep-person-reid tests/data/rerank
"""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

spec = importlib.util.spec_from_file_location(
    "torchreid_rerank", Path(sys.argv[1]) / "torchreid" / "utils" / "rerank.py"
)
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)
out = Path(sys.argv[2])

CASES = {
    # name: (queries, gallery, dims, identities, k1, k2, lambda, seed)
    "paper-defaults": (40, 200, 32, 30, 20, 6, 0.3, 1),
    "no-query-expansion": (25, 120, 16, 20, 6, 1, 0.5, 2),
    "small-k": (30, 90, 8, 15, 3, 2, 0.1, 3),
}


def squared_euclidean(a, b):
    return (
        (a**2).sum(1, keepdims=True) + (b**2).sum(1, keepdims=True).T - 2 * a @ b.T
    ).astype(np.float32)


for name, (q, g, d, ids, k1, k2, lam, seed) in CASES.items():
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, d)).astype(np.float32)
    q_pids = rng.integers(0, ids, size=q)
    g_pids = rng.integers(0, ids, size=g)
    qf = (centres[q_pids] + 0.8 * rng.normal(size=(q, d))).astype(np.float32)
    gf = (centres[g_pids] + 0.8 * rng.normal(size=(g, d))).astype(np.float32)
    q_camids = rng.integers(0, 3, size=q)
    g_camids = rng.integers(0, 3, size=g)
    qg, qq, gg = squared_euclidean(qf, gf), squared_euclidean(qf, qf), squared_euclidean(gf, gf)
    reranked = reference.re_ranking(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam).astype(np.float32)
    case = out / name
    case.mkdir(parents=True, exist_ok=True)
    for file, array in {
        "qf": qf, "gf": gf, "distmat": qg, "distmat_qq": qq, "distmat_gg": gg, "reranked": reranked,
        "q_pids": q_pids.astype(np.int64), "g_pids": g_pids.astype(np.int64),
        "q_camids": q_camids.astype(np.int64), "g_camids": g_camids.astype(np.int64),
    }.items():
        np.save(case / f"{file}.npy", array)
    (case / "params.json").write_text(json.dumps({"k1": k1, "k2": k2, "lambda": lam}) + "\n")
    print(name, reranked.shape)
