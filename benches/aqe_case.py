"""fast-reid's α-query expansion (`fastreid/evaluation/query_expansion.py`, imported from a checkout) on the
features benches/rerank_case.py writes, then the cosine distances fast-reid's evaluator scores, timed, for
benches/aqe_bench.sh (which reads the peak RSS).

    python aqe_case.py DIR FASTREID_DIR OUT.npy
"""
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

out, fastreid, dist_path = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
spec = importlib.util.spec_from_file_location("aqe", fastreid / "fastreid" / "evaluation" / "query_expansion.py")
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)
qf, gf = torch.from_numpy(np.load(out / "qf.npy")), torch.from_numpy(np.load(out / "gf.npy"))
start = time.perf_counter()
eq, eg = reference.aqe(qf, gf, qe_times=1, qe_k=5, alpha=3.0)
dist = 1 - torch.mm(F.normalize(eq, p=2, dim=1), F.normalize(eg, p=2, dim=1).t())
seconds = time.perf_counter() - start
np.save(dist_path, dist.numpy().astype(np.float32))
print(f"REFERENCE_S={seconds:.1f}")
