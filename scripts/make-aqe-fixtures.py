#!/usr/bin/env python3
"""Writes tests/data/aqe/<case>/: query and gallery features, what fast-reid's own `aqe` (α-weighted average query
expansion, `fastreid/evaluation/query_expansion.py`) makes of them, and the cosine distances fast-reid's evaluator
then scores (`compute_cosine_distance`: 1 - normalised q·g). mgat's expansion must give the same features to 1e-5
(crates/eval/src/query_expansion.rs) and the same metrics to 1e-6 (tests/metrics.rs).

fast-reid's function is imported from a checkout of https://github.com/JDAI-CV/fast-reid (only that file, which
needs torch and numpy):

    python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch numpy
    /tmp/torch/bin/python scripts/make-aqe-fixtures.py /path/to/fast-reid tests/data/aqe
"""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

spec = importlib.util.spec_from_file_location(
    "fastreid_query_expansion", Path(sys.argv[1]) / "fastreid" / "evaluation" / "query_expansion.py"
)
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)
out = Path(sys.argv[2])

CASES = {
    # name: (queries, gallery, dims, identities, k, alpha, seed)
    "fastreid-defaults": (40, 200, 32, 30, 5, 3.0, 1),
    "wide-k": (25, 120, 16, 20, 12, 1.0, 2),
    "no-weights": (30, 90, 8, 15, 3, 0.0, 3),
}

for name, (q, g, d, ids, k, alpha, seed) in CASES.items():
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, d)).astype(np.float32)
    q_pids = rng.integers(0, ids, size=q)
    g_pids = rng.integers(0, ids, size=g)
    # Positive features (as after a ReLU), so that every similarity is positive and any α is defined.
    qf = np.abs(centres[q_pids] + 0.8 * rng.normal(size=(q, d))).astype(np.float32)
    gf = np.abs(centres[g_pids] + 0.8 * rng.normal(size=(g, d))).astype(np.float32)
    q_camids = rng.integers(0, 3, size=q)
    g_camids = rng.integers(0, 3, size=g)
    eq, eg = reference.aqe(torch.from_numpy(qf), torch.from_numpy(gf), qe_times=1, qe_k=k, alpha=alpha)
    dist = (1 - torch.mm(F.normalize(eq, p=2, dim=1), F.normalize(eg, p=2, dim=1).t())).numpy()
    case = out / name
    case.mkdir(parents=True, exist_ok=True)
    for file, array in {
        "qf": qf, "gf": gf, "expanded_qf": eq.numpy().astype(np.float32),
        "expanded_gf": eg.numpy().astype(np.float32), "distmat": dist.astype(np.float32),
        "q_pids": q_pids.astype(np.int64), "g_pids": g_pids.astype(np.int64),
        "q_camids": q_camids.astype(np.int64), "g_camids": g_camids.astype(np.int64),
    }.items():
        np.save(case / f"{file}.npy", array)
    (case / "params.json").write_text(json.dumps({"k": k, "alpha": alpha}) + "\n")
    print(name, eq.shape, eg.shape)
