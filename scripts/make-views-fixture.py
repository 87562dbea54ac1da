#!/usr/bin/env python3
"""Writes tests/data/weights/views.pth: 4000 tensors that are views of one 64 KB storage, saved by `torch.save` (one
storage member in the archive, each tensor a storage offset into it). mgat's .pth reader must read that member
once, not once per tensor (which would allocate 4000 × 64 KB).

    /path/to/venv-with-torch/bin/python scripts/make-views-fixture.py tests/data/weights
"""
import sys
from pathlib import Path

import torch

base = torch.arange(16384, dtype=torch.float32)
views = {f"v{i:04d}": base[4 * i : 4 * i + 2] for i in range(4000)}
torch.save(views, Path(sys.argv[1]) / "views.pth")
