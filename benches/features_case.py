"""Writes a Market-1501-sized feature case: 3368 query and 15913 gallery features of 2048 dimensions (float32,
as .npy), with Market-like identities and cameras and identity signal weak enough that the metrics are not trivial,
and times the anchors on it with PyTorch on the CPU:

  - the distance gemm alone, torch.mm(qf, gf.T) (the physical floor of evaluation from features);
  - torchreid's recipe: its euclidean distance (‖q‖² + ‖g‖² − 2q·g with addmm_, as
    torchreid.metrics.compute_distance_matrix) followed by torchreid's eval_market1501 from its PyPI sdist.

Usage: python benches/features_case.py OUT_DIR TORCHREID_RANK_PY MGAT_METRICS_JSON_OR_-   (needs torch and numpy)
Prints the timings; with a path to mgat's `metrics --json` output, also the agreement of rank-1 and mAP.
"""
import importlib.util
import json
import sys
import time

import numpy as np
import torch

out, rank_py = sys.argv[1], sys.argv[2]
torch.set_num_threads(2)
rng = np.random.default_rng(2019)
nq, ng, dim, n_ids, n_cams = 3368, 15913, 2048, 750, 6
q_pids = rng.integers(1, n_ids + 1, nq)
g_pids = np.concatenate([rng.integers(1, n_ids + 1, ng - 2793), np.zeros(2793, dtype=np.int64)])
q_camids, g_camids = rng.integers(0, n_cams, nq), rng.integers(0, n_cams, ng)
centres = rng.standard_normal((n_ids + 1, dim)).astype(np.float32)
qf = (centres[q_pids] + 3.1 * rng.standard_normal((nq, dim))).astype(np.float32)
gf = (centres[g_pids] + 3.1 * rng.standard_normal((ng, dim))).astype(np.float32)
gf[g_pids == 0] = rng.standard_normal((2793, dim)).astype(np.float32) * 3.25
for name, arr in [("qf", qf), ("gf", gf), ("q_pids", q_pids), ("g_pids", g_pids), ("q_camids", q_camids),
                  ("g_camids", g_camids)]:
    np.save(f"{out}/{name}.npy", arr)
if len(sys.argv) < 4:
    sys.exit(0)

q, g = torch.from_numpy(qf), torch.from_numpy(gf)
def median_s(f, n=3):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return sorted(times)[n // 2]

gemm = median_s(lambda: torch.mm(q, g.t()))
def distance():
    d = torch.pow(q, 2).sum(dim=1, keepdim=True).expand(nq, ng) + torch.pow(g, 2).sum(dim=1, keepdim=True).expand(ng, nq).t()
    return d.addmm_(q, g.t(), beta=1, alpha=-2)
t = time.perf_counter()
dist = distance().numpy()
t_dist = time.perf_counter() - t
spec = importlib.util.spec_from_file_location("rank", rank_py)
rank = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rank)
t = time.perf_counter()
cmc, mAP = rank.eval_market1501(dist, q_pids, g_pids, q_camids, g_camids, 50)
t_eval = time.perf_counter() - t
print(f"torch.mm(qf, gf.T) alone (median of 3): {gemm:.2f} s")
print(f"torch distance {t_dist:.2f} s + torchreid eval_market1501 {t_eval:.2f} s = {t_dist + t_eval:.2f} s")
if sys.argv[3] != "-":
    ours = json.load(open(sys.argv[3]))
    print(f"agreement: rank-1 {cmc[0]:.6f} vs {ours['cmc']['1']:.6f}, mAP {mAP:.6f} vs {ours['mAP']:.6f}")
print(f"GEMM_S={gemm:.4f}")
