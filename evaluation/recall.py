"""Retrieval recall@k, computed in chunks so the full similarity matrix never exists."""
import torch

RECALL_KS = (1, 5, 10)
# Largest similarity block held at once (elements); 2**24 floats = 64 MiB.
CHUNK_ELEMENTS = 2 ** 24


# The first block's captions seed every image's running top-k with a dense column top-k (strided, so kept
# small); later blocks only add the few scores above an image's running k-th best.
FIRST_BLOCK_ROWS = 512


def _merge_column_topk(best_scores, best_texts, block, offset):
    """Merge a score block [c, N] (captions offset.. x images) into the running per-image top-k [k, N].

    Only scores above an image's running k-th best can enter its top-k; once a few hundred captions have
    been seen those are a small fraction of the block, gathered sparsely and merged per image. A block
    where they are not (the first, or a caption order that keeps improving) takes a dense column top-k.
    """
    k, images = best_scores.shape
    rows, columns = (block > best_scores[-1]).nonzero(as_tuple=True)                 # [E] each
    if rows.numel() == 0:
        return best_scores, best_texts
    if rows.numel() * 8 > block.numel():
        top = block.topk(min(k, block.shape[0]), dim=0)                              # [kc, N]
        scores, candidates = torch.cat([best_scores, top.values]), torch.cat([best_texts, top.indices + offset])
    else:
        order = torch.argsort(columns, stable=True)
        rows, columns = rows[order], columns[order]
        counts = torch.bincount(columns, minlength=images)
        slots = torch.arange(len(columns), device=columns.device) - (torch.cumsum(counts, 0) - counts)[columns]
        depth = int(counts.max().item())
        new_scores = best_scores.new_full((depth, images), float("-inf"))
        new_texts = best_texts.new_zeros((depth, images))
        new_scores[slots, columns] = block[rows, columns]
        new_texts[slots, columns] = rows + offset
        scores, candidates = torch.cat([best_scores, new_scores]), torch.cat([best_texts, new_texts])
    keep = scores.topk(k, dim=0)
    return keep.values, candidates.gather(0, keep.indices)


def retrieval_recall(image_features, text_features, text_image_index, ks=RECALL_KS, chunk_elements=CHUNK_ELEMENTS):
    """R@k both ways under the standard protocol, from one pass over the similarity matrix.

    image->text: a hit if any caption of the image is among the top k captions.
    text->image: every caption is a query; a hit if its image is among the top k images.
    The matrix is produced in blocks of caption rows (at most ``chunk_elements`` scores at once): each block
    gives its captions' top-k images directly, and is merged into a running top-k of captions per image
    (``_merge_column_topk``).
    Memory: O((N + M) * k) plus one block; each score is computed once.

    Args:
        image_features: [N, D] L2-normalised.
        text_features: [M, D] L2-normalised.
        text_image_index: LongTensor [M], the image of each caption.
    Returns:
        {"i2t_r1": float, ..., "t2i_r10": float}.
    """
    image_features = image_features.float()
    text_features = text_features.float()
    images, texts = image_features.shape[0], text_features.shape[0]
    owner = torch.as_tensor(text_image_index, dtype=torch.long, device=image_features.device)
    k_images, k_texts = min(max(ks), images), min(max(ks), texts)
    best_scores = torch.full((k_texts, images), float("-inf"), device=image_features.device)
    best_texts = torch.zeros((k_texts, images), dtype=torch.long, device=image_features.device)
    t2i_hits = {k: 0 for k in ks}
    chunk = max(1, chunk_elements // max(1, images))
    bounds = [0, *range(min(chunk, FIRST_BLOCK_ROWS), texts, chunk), texts] if texts else [0]
    for start, stop in zip(bounds, bounds[1:]):
        block = text_features[start:stop] @ image_features.t()                  # [c, N]
        top_images = block.topk(k_images, dim=1).indices                           # [c, k]
        match = top_images == owner[start:stop, None]
        for k in ks:
            t2i_hits[k] += int(match[:, :k].any(dim=1).sum())
        best_scores, best_texts = _merge_column_topk(best_scores, best_texts, block, start)
    i2t_match = owner[best_texts] == torch.arange(images, device=owner.device)[None, :]   # [k, N]
    metrics = {f"i2t_r{k}": int(i2t_match[:k].any(dim=0).sum()) / images for k in ks}
    metrics.update({f"t2i_r{k}": t2i_hits[k] / texts for k in ks})
    return metrics


def mean_recall(metrics):
    """Mean of all i2t/t2i recalls: the number best-path is chosen by."""
    values = [v for k, v in metrics.items() if k.startswith(("i2t_r", "t2i_r"))]
    return sum(values) / len(values)


def format_recall_table(metrics, ks=RECALL_KS):
    """The original project's README table, as text."""
    lines = ["|              | " + " | ".join(f"R @ {k:<3}" for k in ks) + " |",
             "|:------------:| " + " | ".join("-------" for _ in ks) + " |"]
    for label, prefix in (("image → text", "i2t"), ("text → image", "t2i")):
        lines.append(f"| {label:<12} | " + " | ".join(f"{metrics[f'{prefix}_r{k}']:.5f}" for k in ks) + " |")
    return "\n".join(lines)
