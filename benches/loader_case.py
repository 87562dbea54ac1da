"""The anchor of benches/loader_bench.sh: a torchvision DataLoader with PIL doing what mgat's training loader does
to the same files (decode, resize to 256×128, flip, pad-and-crop, normalisation, random erasing), batches of 64.

Usage: python loader_case.py ROOT WORKERS BATCHES   (WORKERS 0: everything in this process, on one core)
Prints `images_per_s=…`.
"""
import pathlib
import random
import sys
import time

import torch
import torchvision.transforms as T
from PIL import Image

root, workers, batches = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
files = sorted((root / "bounding_box_train").glob("*.jpg"))
random.Random(1).shuffle(files)
files = files[: batches * 64]
transform = T.Compose(
    [
        T.Resize((256, 128), interpolation=T.InterpolationMode.BILINEAR),
        T.RandomHorizontalFlip(),
        T.Pad(10),
        T.RandomCrop((256, 128)),
        T.ToTensor(),
        T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        T.RandomErasing(p=0.5, value=0),
    ]
)


class Files(torch.utils.data.Dataset):
    def __len__(self):
        return len(files)

    def __getitem__(self, i):
        return transform(Image.open(files[i]).convert("RGB")), i


if __name__ == "__main__":
    loader = torch.utils.data.DataLoader(Files(), batch_size=64, num_workers=workers)
    started = time.perf_counter()
    images = sum(len(labels) for _, labels in loader)
    seconds = time.perf_counter() - started
    print(f"images={images} seconds={seconds:.3f} images_per_s={images / seconds:.1f}")
