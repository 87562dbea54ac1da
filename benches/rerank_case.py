"""Market-1501-sized re-ranking case for benches/rerank_bench.sh: 3368 query and 15913 gallery 2048-d float32
features drawn around 1501 identity centres, with their ids; or, given torchreid's rerank.py, its re_ranking on the
squared euclidean matrices torchreid's engine would pass, timed, with its peak RSS read by the caller. Where the
reference cannot allocate its matrices (MSMT17's size on a 24 GB machine), it prints why and exits 3.

    python rerank_case.py write DIR [QUERIES GALLERY DIMS]
    python rerank_case.py reference DIR RERANK_PY OUT.npy
"""
import importlib.util
import resource
import sys
import time
from pathlib import Path

import numpy as np

# Per-dimension noise around each identity's centre: enough that neither ranking is perfect (plain rank-1 0.81, mAP 0.42).
NOISE = 3.3

mode, out = sys.argv[1], Path(sys.argv[2])
if mode == "write":
    q, g, d = (int(x) for x in sys.argv[3:6]) if len(sys.argv) > 3 else (3368, 15913, 2048)
    rng = np.random.default_rng(0)
    ids = 1501
    centres = rng.normal(size=(ids, d)).astype(np.float32)
    q_pids = rng.integers(1, ids, size=q)
    g_pids = rng.integers(0, ids, size=g)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "qf.npy", ((centres[q_pids] + NOISE * rng.normal(size=(q, d))) / np.sqrt(d)).astype(np.float32))
    np.save(out / "gf.npy", ((centres[g_pids] + NOISE * rng.normal(size=(g, d))) / np.sqrt(d)).astype(np.float32))
    np.save(out / "q_pids.npy", q_pids.astype(np.int64))
    np.save(out / "g_pids.npy", g_pids.astype(np.int64))
    np.save(out / "q_camids.npy", rng.integers(0, 6, size=q).astype(np.int64))
    np.save(out / "g_camids.npy", rng.integers(0, 6, size=g).astype(np.int64))
else:
    spec = importlib.util.spec_from_file_location("rerank", sys.argv[3])
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    qf, gf = np.load(out / "qf.npy"), np.load(out / "gf.npy")

    def sq(a, b):
        return ((a**2).sum(1, keepdims=True) + (b**2).sum(1, keepdims=True).T - 2 * a @ b.T).astype(np.float32)

    start = time.perf_counter()
    try:
        final = reference.re_ranking(sq(qf, gf), sq(qf, qf), sq(gf, gf))
    except MemoryError as error:
        print(f"REFERENCE_FAILED=MemoryError: {error}")
        sys.exit(3)
    seconds = time.perf_counter() - start
    np.save(sys.argv[4], final.astype(np.float32))
    print(f"REFERENCE_S={seconds:.1f}")
    print(f"REFERENCE_PEAK_MB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
