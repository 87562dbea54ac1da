#!/usr/bin/env python3
"""Expected values for mgat's training-maths parity test (tests/parity.rs), computed by an independent PyTorch
implementation of the same network and losses.

Reads the initial weights and the fixed batch that mgat exported to tests/data/parity/ (init.safetensors,
batch.safetensors), and for each variant (baseline, plain GAT, MGAT as specified, MGAT on the BN-neck, MGAT on
L2-normalised features) writes tests/data/parity/<variant>.safetensors holding:

  loss.total, loss.id, loss.of   the loss terms of the first forward pass,
  grad_norm.<tensor>             the euclidean norm of each weight's gradient in the first backward pass,
  step3.<tensor>                 every weight and BatchNorm statistic after 3 Adam steps on the same batch.

Everything is computed in float64 on both sides (in float32, three Adam steps turn gradients that are rounding noise,
such as the BN-neck bias's at initialisation, into different full-size updates) and stored as float32. No
augmentation, no triplet loss; Adam (lr 1e-3, L2 weight decay 5e-4, betas 0.9/0.999, eps 1e-8), as mgat's
`optimizer: adam`. Usage, with torch from PyPI in a throwaway venv:

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy safetensors
    MGAT_PARITY_EXPORT=1 cargo test --release --test parity   # (re)writes the inputs; fails until the next line ran
    /tmp/torchvenv/bin/python scripts/torch-parity.py
    cargo test --release --test parity
"""

import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

DIR = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "parity"
STEPS, LR, WEIGHT_DECAY = 3, 1e-3, 5e-4
WIDTH, LAST_STRIDE, LAYERS = 8, 1, [2, 2, 2, 2]  # ResNet-18 of width 8, as the quickstart
VARIANTS = {
    # name: (head, graph input, graph normalisation, gamma)
    "none": ("none", "backbone", "none", 1.0),
    "gat": ("gat", "backbone", "none", 1.0),
    "mgat": ("mgat", "backbone", "none", 1.0),
    "mgat-bnneck": ("mgat", "bnneck", "none", 2.0),
    "mgat-l2": ("mgat", "backbone", "l2", 10.0),
}


def batch_norm(x, w, prefix, stats):
    """Train-mode BatchNorm (batch statistics; running statistics updated with momentum 0.1, unbiased variance)."""
    return F.batch_norm(x, stats[prefix + ".running_mean"], stats[prefix + ".running_var"],
                        w[prefix + ".weight"], w[prefix + ".bias"], training=True, momentum=0.1, eps=1e-5)


def backbone(x, w, stats):
    """torchvision's ResNet-18 forward (BasicBlocks) with a width multiplier and last stride, then global average
    pooling."""
    y = F.relu(batch_norm(F.conv2d(x, w["conv1.weight"], stride=2, padding=3), w, "bn1", stats))
    y = F.max_pool2d(y, 3, 2, 1)
    c_in = WIDTH
    for layer, blocks in enumerate(LAYERS):
        planes = WIDTH << layer
        for b in range(blocks):
            name = f"layer{layer + 1}.{b}"
            stride = [1, 2, 2, LAST_STRIDE][layer] if b == 0 else 1
            if stride != 1 or c_in != planes:
                shortcut = batch_norm(F.conv2d(y, w[name + ".downsample.0.weight"], stride=stride), w,
                                      name + ".downsample.1", stats)
            else:
                shortcut = y
            z = F.relu(batch_norm(F.conv2d(y, w[name + ".conv1.weight"], stride=stride, padding=1), w,
                                  name + ".bn1", stats))
            z = batch_norm(F.conv2d(z, w[name + ".conv2.weight"], padding=1), w, name + ".bn2", stats)
            y = F.relu(z + shortcut)
            c_in = planes
    return y.mean(dim=(2, 3))


def graph_head(g, labels, head, gamma):
    """X' = (Â⊙M)G (MGAT) or ÂG (GAT): Â the row-normalised exp(−γ‖g_i − g_j‖), M = ±1 by identity."""
    sq = (g * g).sum(1, keepdim=True)
    d2 = (sq + sq.t() - 2.0 * g @ g.t()).clamp_min(0.0)
    off_diagonal = 1.0 - torch.eye(len(g), dtype=g.dtype)
    e = torch.sqrt(d2 + 1e-12) * off_diagonal
    a = torch.exp(-gamma * e)
    a = a / a.sum(1, keepdim=True)
    if head == "mgat":
        a = a * ((labels[:, None] == labels[None, :]).to(g.dtype) * 2.0 - 1.0)
    return a @ g


def losses(w, stats, images, labels, variant):
    head, graph_input, graph_norm, gamma = variant
    x = backbone(images, w, stats)
    neck = lambda t: batch_norm(t, w, "bottleneck", stats)  # noqa: E731
    classify = lambda t: t @ w["classifier.weight"].t()  # noqa: E731
    if head == "none":
        logits, of = classify(neck(x)), torch.zeros((), dtype=x.dtype)
    else:
        g = neck(x) if graph_input == "bnneck" else x
        if graph_norm == "l2":
            g = g / torch.sqrt((g * g).sum(1, keepdim=True) + 1e-12)
        refined = graph_head(g, labels, head, gamma)
        logits = classify(refined) if graph_input == "bnneck" else classify(neck(refined))
        of = ((g - refined.detach()) ** 2).mean()
    id_loss = F.cross_entropy(logits, labels)
    return id_loss + of, id_loss, of


def run(name, variant, init, images, labels):
    w = {k: v.clone().requires_grad_(True) for k, v in init.items() if "running_" not in k}
    stats = {k: v.clone() for k, v in init.items() if "running_" in k}
    opt = torch.optim.Adam(list(w.values()), lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=WEIGHT_DECAY)
    out = {}
    for step in range(STEPS):
        opt.zero_grad()
        total, id_loss, of = losses(w, stats, images, labels, variant)
        total.backward()
        if step == 0:
            out.update({"loss.total": total.detach(), "loss.id": id_loss.detach(), "loss.of": of.detach()})
            out.update({f"grad_norm.{k}": v.grad.norm() for k, v in w.items()})
        opt.step()
    out.update({f"step{STEPS}.{k}": v.detach() for k, v in {**w, **stats}.items()})
    save_file({k: v.float().contiguous().reshape(v.shape) for k, v in out.items()}, DIR / f"{name}.safetensors")
    print(f"{name}: loss {out['loss.total'].item():.6f} (id {out['loss.id'].item():.6f}, of {out['loss.of'].item():.6f})")


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # one summation order, run to run
    init = {k: v.double() for k, v in load_file(DIR / "init.safetensors").items()}
    batch = load_file(DIR / "batch.safetensors")
    images, labels = batch["images"].double(), batch["labels"].long()
    for name, variant in VARIANTS.items():
        run(name, variant, init, images, labels)


if __name__ == "__main__":
    main()
