"""Shard loader images/s: ours (ShardBatches) vs open_clip's webdataset pipeline, same shards, workers, transform.

The reference is the pipeline open_clip's get_wds_dataset builds for training (open_clip_train/data.py):
SimpleShardList -> split_by_worker -> tarfile_to_samples -> shuffle -> decode("pilrgb") -> rename ->
map_dict(image=transform, text=tokenizer) -> to_tuple -> batched, in a DataLoader with batch_size=None
and persistent workers. Both produce the same batches' shapes: (images [b,3,S,S] float32, token ids [b,L]).
Ours decodes JPEGs at reduced size (PIL draft) before the same transform.

    python bench/shard_loader.py [--images 400] [--workers 2] [--size 224]
    python bench/shard_loader.py --breakdown      # one core's ms per image: full and reduced-size decode, transform
"""
import argparse
import io
import json
import os
import tempfile
import time

import torch

from bench._common import result
from bench.input_pipeline import make_jpegs
from data.datasets import PairCollate
from data.image_file import open_image_rgb
from data.shard_dataset import ShardBatches
from data.shard_source import shard_sizes
from data.transforms import train_transform


class Tokens:
    """A stand-in tokenizer (the same for both pipelines): list[str] -> LongTensor[B, 16]."""

    def __call__(self, texts):
        return torch.tensor([[len(word) for word in (text.split() + [""] * 16)[:16]] for text in texts])


def write_shards(directory, count, per_shard):
    import webdataset

    paths = make_jpegs(directory, count)
    urls = []
    for start in range(0, count, per_shard):
        url = os.path.join(directory, f"{start // per_shard:05d}.tar")
        with webdataset.TarWriter(url) as writer:
            for index in range(start, min(start + per_shard, count)):
                with open(paths[index], "rb") as handle:
                    writer.write({"__key__": f"{index:09d}", "jpg": handle.read(),
                                  "txt": f"a generated photo number {index}"})
        urls.append(url)
    with open(os.path.join(directory, "sizes.json"), "w") as handle:  # as make_shards writes it: one pass per epoch
        json.dump({os.path.basename(url): min(per_shard, count - i * per_shard) for i, url in enumerate(urls)}, handle)
    return urls


def open_clip_loader(urls, transform, batch, workers):
    import webdataset as wds

    tokens = Tokens()
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(urls), wds.split_by_worker, wds.tarfile_to_samples(handler=wds.warn_and_continue),
        wds.shuffle(1000, initial=100), wds.decode("pilrgb", handler=wds.warn_and_continue),
        wds.rename(image="jpg;png;jpeg;webp", text="txt"),
        wds.map_dict(image=transform, text=lambda text: text), wds.to_tuple("image", "text"),
        wds.batched(batch, partial=False, collation_fn=lambda items: (torch.stack([i for i, _ in items]),
                                                                       tokens([t for _, t in items]))))
    return torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=workers, persistent_workers=True)


def our_loader(urls, transform, batch, workers, size, total):
    dataset = ShardBatches(urls, transform, PairCollate(Tokens()), ["txt"], seed=0, rank=0, world_size=1,
                           local_batch=batch, batches=total // batch, draft_size=size, sizes=shard_sizes(urls))
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=True)


def images_per_second(loader, epochs=3):
    """Best epoch's images/s over ``epochs`` epochs (the first also starts the persistent workers)."""
    best = 0.0
    for _ in range(epochs):
        started, images = time.perf_counter(), 0
        for batch_images, _ in loader:
            images += batch_images.shape[0]
        best = max(best, images / (time.perf_counter() - started))
    return best, images


def breakdown(size, count=100, rounds=3):
    """Print one thread's best-of-``rounds`` ms per image for each stage of our per-sample work."""
    from PIL import Image

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as directory:
        files = []
        for path in make_jpegs(directory, count):
            with open(path, "rb") as handle:
                files.append(handle.read())
    transform = train_transform(size, 0.9, flip=False, color=False)
    decoded = [open_image_rgb(io.BytesIO(data), draft_size=size) for data in files]

    def full_decode(data):
        with Image.open(io.BytesIO(data)) as image:
            image.load()

    stages = (("JPEG decode at full size (PIL)", files, full_decode),
              (f"JPEG decode at reduced size (draft >= {size})", files,
               lambda data: open_image_rgb(io.BytesIO(data), draft_size=size)),
              (f"crop, resize to {size}, normalise", decoded, transform))
    print(f"{count} JPEGs 640x480 ({sum(map(len, files)) / count / 1000:.0f} KB each), one thread, ms per image")
    for label, items, work in stages:
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            for item in items:
                work(item)
            best = min(best, time.perf_counter() - started)
        print(f"{label:<44} {1000 * best / count:>6.2f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--per-shard", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args()
    if args.breakdown:
        breakdown(args.size)
        return
    transform = train_transform(args.size, 0.9, flip=False, color=False)
    with tempfile.TemporaryDirectory() as directory:
        urls = write_shards(directory, args.images, args.per_shard)
        theirs, their_images = images_per_second(open_clip_loader(urls, transform, args.batch, args.workers))
        ours, our_images = images_per_second(our_loader(urls, transform, args.batch, args.workers, args.size,
                                                        args.images))
    print(f"{args.images} JPEGs 640x480 in {len(urls)} shards -> {args.size}x{args.size}, batch {args.batch}, "
          f"{args.workers} workers; images per epoch: ours {our_images}, open_clip's pipeline {their_images}")
    print(f"{'loader':<22} {'images/s':>9}")
    print(f"{'ours (ShardBatches)':<22} {ours:>9.1f}")
    print(f"{'open_clip pipeline':<22} {theirs:>9.1f}")
    result("shard_loader", ours, theirs, "higher", "images/s")


if __name__ == "__main__":
    main()
