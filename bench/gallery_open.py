"""Opening a big gallery: the memory-mapped index folder vs the former one-JSON-document layout, and IVF-PQ's
memory and recall, on synthetic items (default 1M, 512-d: a ViT-B gallery's size).

Each measurement runs in a fresh process; RSS is the process's resident memory after the step, minus what it
held after its imports (so torch, numpy, faiss themselves are not counted).

    python bench/gallery_open.py [--items 1000000] [--dim 512] [--keep DIR]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench._common import ROOT, result, rss_mb

CHUNK = 65_536


def synthetic(items, dim, start, count, rng_seed=0):
    """Rows start..start+count of a clustered, L2-normalised synthetic gallery: (image [c, D], text [c, D])."""
    rng = np.random.default_rng(rng_seed + start)
    centres = np.random.default_rng(12345).normal(size=(1000, dim)).astype(np.float32)
    image = centres[rng.integers(0, 1000, count)] + 0.5 * rng.normal(size=(count, dim)).astype(np.float32)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    text = image + 0.3 * rng.normal(size=(count, dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    return image, text


def rows(start, count):
    return [(f"/data/laion/images/{i:09d}.jpg", f"{i // 10000:05d}/{i:09d}.jpg",
             [f"a photo of item {i}, one of many synthetic gallery items"]) for i in range(start, start + count)]


def build(directory, items, dim):
    from retrieval.gallery import FORMAT
    from retrieval.gallery_writer import PartWriter, read_part, write_gallery
    from safetensors.numpy import save_file

    part_dir = os.path.join(directory, "part")
    writer = PartWriter(part_dir, dim)
    for start in range(0, items, CHUNK):
        count = min(CHUNK, items - start)
        image, text = synthetic(items, dim, start, count)
        writer.add(rows(start, count), image, text)
    writer.close()
    ours = os.path.join(directory, "ours")
    os.makedirs(ours)
    part = read_part(part_dir)
    write_gallery(ours, {"format": FORMAT, "fingerprint": "synthetic", "model-path": "none", "embed-dim": dim}, [part])
    # The former layout (before this change): items.json, one JSON document, and embeddings.safetensors.
    former = os.path.join(directory, "former")
    os.makedirs(former)
    with open(os.path.join(former, "items.json"), "w", encoding="utf-8") as handle:
        json.dump([{"id": i, "file": f, "name": n, "captions": c} for i, (f, n, c) in enumerate(rows(0, items))], handle)
    save_file({"image_features": np.asarray(part.image_features), "text_features": np.asarray(part.text_features),
               "text_item": np.asarray(part.text_item)}, os.path.join(former, "embeddings.safetensors"))
    shutil.rmtree(part_dir)
    return ours, former


def measure(step, directory, dim):
    """Run in a child process: print one JSON line {seconds, rss_mb, ...} for ``step``."""
    import faiss  # noqa: F401  (imported before the baseline, as the service has it loaded)
    import torch  # noqa: F401

    from retrieval.gallery import Gallery
    from retrieval.vector_search import SearchSettings, VectorIndex, exact_recall_notice

    base, base_anon = rss_mb("VmRSS"), rss_mb("RssAnon")
    started = time.perf_counter()
    out = {}
    if step == "open-ours":
        gallery = Gallery.load(directory)
        lookups = [gallery.items[row] for row in np.random.default_rng(0).integers(0, len(gallery.items), 100)]
        out["items"] = len(gallery.items)
        assert all(item["name"].endswith(".jpg") for item in lookups)
    elif step == "open-former":
        from safetensors.numpy import load_file

        with open(os.path.join(directory, "items.json"), encoding="utf-8") as handle:
            items = json.load(handle)
        arrays = load_file(os.path.join(directory, "embeddings.safetensors"))
        out["items"] = len(items) + 0 * len(arrays)
    elif step == "exact-search":
        gallery = Gallery.load(directory)
        query = np.ascontiguousarray(gallery.text_features[:1])
        out["top"] = int(VectorIndex(gallery.image_features).search(query, 10)[1][0, 0])
    elif step == "build-ivfpq":
        gallery = Gallery.load(directory)
        index = VectorIndex(gallery.image_features, "faiss-ivfpq", ivf_nlist=1024, ivf_nprobe=32, ivfpq_m=64)
        out["build_seconds"] = time.perf_counter() - started
        index.save(os.path.join(directory, "vectors.faiss"))
    elif step in ("load-ivfpq", "load-ivfpq-norerank", "load-flat"):
        gallery = Gallery.load(directory)
        if step.startswith("load-ivfpq"):
            index = VectorIndex.load(os.path.join(directory, "vectors.faiss"), gallery.image_features,
                                     SearchSettings("faiss-ivfpq", ivfpq_rerank=0 if step.endswith("norerank") else 50))
        else:
            index = VectorIndex(gallery.image_features, "faiss-flat")
        queries = np.ascontiguousarray(gallery.text_features[:100])
        searched = time.perf_counter()
        index.search(queries, 10)
        out["search_ms_per_query"] = (time.perf_counter() - searched) * 10
    out["seconds"] = time.perf_counter() - started
    out["rss_mb"] = rss_mb("VmRSS") - base
    out["peak_mb"] = rss_mb("VmHWM") - base
    out["anon_mb"] = rss_mb("RssAnon") - base_anon
    if step.startswith("load-ivfpq"):  # after the memory snapshot: the exact search reads every row
        out["recall@10"] = exact_recall_notice(index)
    print(json.dumps(out))


def child(step, directory, dim):
    done = subprocess.run([sys.executable, __file__, "--measure", step, "--keep", directory, "--dim", str(dim)],
                          cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{step} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--keep", help="build in (or, with --measure, read) this folder instead of a temporary one")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure(args.measure, args.keep, args.dim)
    directory = args.keep or tempfile.mkdtemp(prefix="bench-gallery-")
    try:
        started = time.perf_counter()
        ours, former = build(directory, args.items, args.dim)
        print(f"{args.items} synthetic items, {args.dim}-d, 1 caption each: built in {time.perf_counter() - started:.0f} s")
        opened, json_opened = child("open-ours", ours, args.dim), child("open-former", former, args.dim)
        exact = child("exact-search", ours, args.dim)
        built = child("build-ivfpq", ours, args.dim)
        ivfpq, plain = child("load-ivfpq", ours, args.dim), child("load-ivfpq-norerank", ours, args.dim)
        flat = child("load-flat", ours, args.dim)
        print(f"{'step':<46} {'seconds':>8} {'RSS MiB':>8} {'of it anon':>10} {'peak MiB':>9}")
        for name, row in (("open + 100 item lookups (items.arrow, .npy)", opened),
                          ("open (former items.json + safetensors)", json_opened),
                          ("open + one exact search (touches all rows)", exact),
                          ("build IVF-PQ (nlist 1024, m 64), store", built),
                          ("open + stored IVF-PQ (rerank 50) + 100 searches", ivfpq),
                          ("open + stored IVF-PQ (no rerank) + 100 searches", plain),
                          ("open + FAISS flat (built) + 100 searches", flat)):
            print(f"{name:<46} {row['seconds']:>8.2f} {row['rss_mb']:>8.0f} {row['anon_mb']:>10.0f} {row['peak_mb']:>9.0f}")
        print(f"IVF-PQ recall@10 against exact search (200 gallery items as queries): {ivfpq['recall@10']:.3f} with "
              f"rerank 50, {plain['recall@10']:.3f} without; search {ivfpq['search_ms_per_query']:.2f} / "
              f"{plain['search_ms_per_query']:.2f} ms per query (flat: {flat['search_ms_per_query']:.2f})")
        result("gallery_open_seconds", opened["seconds"], json_opened["seconds"], "lower", "s (vs one JSON document)")
        result("gallery_open_rss", max(opened["rss_mb"], 1.0), json_opened["rss_mb"], "lower", "MiB (vs one JSON document)")
        result("ivfpq_serving_anon_memory", max(ivfpq["anon_mb"], 1.0), flat["anon_mb"], "lower",
               "MiB (vs FAISS flat)")
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
