"""PyTorch twin of mgat's training step, for benches/train_speed.sh: the same ResNet (width multiplier, last
stride), BN-neck, MGAT head, ID + OF losses and Adam, on random images of the same shape and batch.

Usage: python train_speed_torch.py DEPTH WIDTH HEIGHT IMG_WIDTH P K ITERS [--device cpu|cuda] [--amp]
Prints images/s on stdout; on CUDA also the peak allocated memory (GiB) on stderr. --amp runs the forward pass
under bfloat16 autocast (CUDA).
"""
import argparse
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv(cin, cout, k, stride):
    return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.c1, self.b1 = conv(cin, planes, 3, stride), nn.BatchNorm2d(planes)
        self.c2, self.b2 = conv(planes, planes, 3, 1), nn.BatchNorm2d(planes)
        out = planes
        self.down = None if stride == 1 and cin == out else nn.Sequential(conv(cin, out, 1, stride), nn.BatchNorm2d(out))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        out = planes * 4
        self.c1, self.b1 = conv(cin, planes, 1, 1), nn.BatchNorm2d(planes)
        self.c2, self.b2 = conv(planes, planes, 3, stride), nn.BatchNorm2d(planes)
        self.c3, self.b3 = conv(planes, out, 1, 1), nn.BatchNorm2d(out)
        self.down = None if stride == 1 and cin == out else nn.Sequential(conv(cin, out, 1, stride), nn.BatchNorm2d(out))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = F.relu(self.b2(self.c2(y)))
        y = self.b3(self.c3(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    def __init__(self, depth, width, last_stride):
        super().__init__()
        block, layers = {18: (Basic, [2, 2, 2, 2]), 34: (Basic, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3])}[depth]
        self.stem = nn.Sequential(conv(3, width, 7, 2), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], width
        for i, n in enumerate(layers):
            for b in range(n):
                blocks.append(block(cin, width << i, ([1, 2, 2, last_stride][i] if b == 0 else 1)))
                cin = (width << i) * block.expansion
        self.blocks, self.dim = nn.Sequential(*blocks), cin

    def forward(self, x):
        return self.blocks(self.stem(x)).mean(dim=(2, 3))


def mgat(x, labels, gamma):
    n = x.shape[0]
    sq = (x * x).sum(1, keepdim=True)
    d2 = (sq + sq.t() - 2 * x @ x.t()).clamp(min=0)
    e = (d2 + 1e-12).sqrt() * (1 - torch.eye(n, device=x.device))
    a = torch.exp(-gamma * e)
    a = a / a.sum(1, keepdim=True)
    mask = (labels[:, None] == labels[None, :]).float() * 2 - 1
    return (a * mask) @ x


def main():
    parser = argparse.ArgumentParser()
    for name in ["depth", "width", "h", "w", "p", "k", "iters"]:
        parser.add_argument(name, type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true")
    a = parser.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    net = ResNet(a.depth, a.width, 1).to(dev)
    neck = nn.BatchNorm1d(net.dim).to(dev)
    classes = max(a.p, 16)
    fc = nn.Linear(net.dim, classes, bias=False).to(dev)
    params = list(net.parameters()) + list(neck.parameters()) + list(fc.parameters())
    opt = torch.optim.Adam(params, lr=3.5e-4, weight_decay=5e-4)
    images = torch.randn(a.p * a.k, 3, a.h, a.w, device=dev)
    labels = torch.arange(a.p, device=dev).repeat_interleave(a.k)

    def step():
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=a.amp):
            x = net(images)
            refined = mgat(x.float(), labels, 1.0)
            logits = fc(neck(refined))
        loss = F.cross_entropy(logits.float(), labels) + F.mse_loss(x.float(), refined.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(a.iters):
        step()
    sync()
    print(f"{a.iters * a.p * a.k / (time.perf_counter() - start):.2f}")
    if dev.type == "cuda":
        print(f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", file=sys.stderr)


if __name__ == "__main__":
    main()
