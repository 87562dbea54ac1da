"""Writes a Market-1501-sized evaluation case (3368 queries x 15913 gallery, float32 distances) as .npy files.

Usage: python3 benches/metrics_case.py OUT_DIR   (needs numpy)
Identities and cameras follow Market-1501's test split in size: 750 identities over 6 cameras, one query per
identity and camera, distractors (pid 0) in the gallery. Distances mimic a trained model's: matches are closer
than other images on average, with a long tail of hard matches, so that rank-1, mAP and mINP land near a
strong ResNet-50 model's (here 1.00, 0.91 and 0.32), where most gallery items rank after a query's last match.
"""
import sys
import numpy as np

out = sys.argv[1]
rng = np.random.default_rng(2019)
nq, ng, n_ids, n_cams = 3368, 15913, 750, 6
q_pids = rng.integers(1, n_ids + 1, nq)
q_camids = rng.integers(0, n_cams, nq)
g_pids = np.concatenate([rng.integers(1, n_ids + 1, ng - 2793), np.zeros(2793, dtype=np.int64)])
g_camids = rng.integers(0, n_cams, ng)
dist = (1.0 + 0.1 * rng.standard_normal((nq, ng))).astype(np.float32)
same = q_pids[:, None] == g_pids[None, :]
hard = rng.random(int(same.sum())) < 0.1
dist[same] = np.where(hard, 0.75 + 0.08 * rng.standard_normal(int(same.sum())), 0.45 + 0.1 * rng.standard_normal(int(same.sum()))).astype(np.float32)
for name, arr in [("distmat", dist), ("q_pids", q_pids), ("g_pids", g_pids), ("q_camids", q_camids), ("g_camids", g_camids)]:
    np.save(f"{out}/{name}.npy", arr)
print(f"wrote {out}: distmat {dist.shape} {dist.dtype}")
