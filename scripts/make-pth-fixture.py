#!/usr/bin/env python3
"""Writes the checkpoint fixtures of tests/data/weights/: a width-reduced ResNet-18 state dict in torchvision naming,
saved by `torch.save` exactly as torchvision's hub checkpoints are (zip container, `fc.*` and `num_batches_tracked`
included), and its safetensors twin with the same tensors.

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch safetensors   # a throwaway venv, CPU wheels are enough
    /tmp/tv/bin/python scripts/make-pth-fixture.py tests/data/weights

The modules mirror torchvision.models.resnet (BasicBlock, `downsample.0/1`, `fc`), so the names are torchvision's
without depending on torchvision; the width is a parameter (torchvision's ResNet-18 is width 64).
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet18(nn.Module):
    def __init__(self, width, classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for i, (mult, stride) in enumerate([(1, 1), (2, 2), (4, 2), (8, 2)], start=1):
            cout = width * mult
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.fc = nn.Linear(cin, classes)


def main(out: Path, width: int = 4):
    torch.manual_seed(1501)
    model = ResNet18(width, classes=10)
    # Non-trivial BatchNorm statistics, so that loading them is visible in the tests.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.8, 1.2)
            m.bias.data.normal_(0, 0.05)
            m.num_batches_tracked.fill_(1000)
    state = model.state_dict()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / f"resnet18-w{width}.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / f"resnet18-w{width}.safetensors"))
    print(f"wrote {out}/resnet18-w{width}.{{pth,safetensors}}: {len(state)} tensors")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/weights"))
