import random

import torch
import torch.nn.functional as F
from clip_benchmark.metrics.zeroshot_retrieval import recall_at_k as cb_recall_at_k

from evaluation.recall import format_recall_table, mean_recall, retrieval_recall


def clip_benchmark_recalls(image_features, text_features, text_image_index, ks=(1, 5, 10)):
    """clip_benchmark's own definition, on the full score matrix."""
    scores = text_features @ image_features.t()
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(scores)), text_image_index] = True
    result = {}
    for k in ks:
        result[f"t2i_r{k}"] = (cb_recall_at_k(scores, positive, k) > 0).float().mean().item()
        result[f"i2t_r{k}"] = (cb_recall_at_k(scores.t(), positive.t(), k) > 0).float().mean().item()
    return result


def random_embeddings(images, dim, seed, noise):
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    counts = [rng.randint(1, 7) for _ in range(images)]
    image_features = F.normalize(torch.randn(images, dim, generator=generator), dim=-1)
    text_image_index = torch.tensor([i for i, n in enumerate(counts) for _ in range(n)])
    text_features = F.normalize(image_features[text_image_index]
                                + noise * torch.randn(len(text_image_index), dim, generator=generator), dim=-1)
    return image_features, text_features, text_image_index


def test_recall_equals_clip_benchmark_with_one_to_seven_captions_per_image():
    for seed, noise in [(0, 0.5), (1, 1.0), (2, 2.0)]:
        image_features, text_features, index = random_embeddings(200, 32, seed, noise)
        ours = retrieval_recall(image_features, text_features, index)
        theirs = clip_benchmark_recalls(image_features, text_features, index)
        for key, value in theirs.items():
            assert abs(ours[key] - value) < 1e-6, (key, ours[key], value)  # theirs is a float32 mean
        assert 0.0 < ours["i2t_r1"] < 1.0  # the case is neither trivial nor hopeless


def test_chunking_does_not_change_the_result():
    image_features, text_features, index = random_embeddings(97, 16, seed=4, noise=1.0)
    whole = retrieval_recall(image_features, text_features, index)
    chunked = retrieval_recall(image_features, text_features, index, chunk_elements=50)
    assert whole == chunked


def test_sparse_and_dense_merges_equal_clip_benchmark_in_any_caption_order():
    image_features, text_features, index = random_embeddings(300, 32, seed=5, noise=0.8)
    best = (text_features @ image_features.t()).max(dim=1).values
    theirs = clip_benchmark_recalls(image_features, text_features, index)
    # the first blocks' scores mostly enter the images' running top k (the dense merge), later blocks' only a
    # few (the sparse merge): measured 3 dense and 28 sparse merges at 40 captions per block, in each order
    for order in (torch.randperm(len(index), generator=torch.Generator().manual_seed(0)), best.argsort(),
                  best.argsort(descending=True)):
        for chunk_elements in (300 * 40, 300 * 600):
            ours = retrieval_recall(image_features, text_features[order], index[order], chunk_elements=chunk_elements)
            for key, value in theirs.items():
                assert abs(ours[key] - value) < 1e-6, (key, ours[key], value)


def test_recall_counts_any_of_five_captions_as_hit():
    image_features = torch.eye(3)
    # Image 0 has five captions; only the last one is close to it, the other four are nearer images 1 and 2.
    text_features = F.normalize(torch.tensor([[-1, 0.2, 0.1], [-1, 0.1, 0.3], [-1, 0.3, 0.2], [-1, 0.25, 0.15],
                                              [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float), dim=-1)
    index = torch.tensor([0, 0, 0, 0, 0, 1, 2])
    metrics = retrieval_recall(image_features, text_features, index, ks=(1,))
    assert metrics["i2t_r1"] == 1.0          # each image's top caption is one of its own
    assert metrics["t2i_r1"] == 3 / 7        # only three captions retrieve their image first


def test_k_larger_than_gallery_counts_everything_as_hit():
    image_features, text_features, index = random_embeddings(4, 8, seed=5, noise=3.0)
    metrics = retrieval_recall(image_features, text_features, index, ks=(10,))
    assert metrics["t2i_r10"] == 1.0


def test_table_and_mean():
    metrics = {"i2t_r1": 0.1, "i2t_r5": 0.2, "i2t_r10": 0.3, "t2i_r1": 0.4, "t2i_r5": 0.5, "t2i_r10": 0.6}
    assert abs(mean_recall(metrics) - 0.35) < 1e-12
    table = format_recall_table(metrics)
    assert "0.10000" in table and "0.60000" in table and "image → text" in table
