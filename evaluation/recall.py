"""Retrieval recall@k, computed in chunks so the full similarity matrix never exists."""
import torch

RECALL_KS = (1, 5, 10)
# Largest similarity block held at once (elements); 2**24 floats = 64 MiB.
CHUNK_ELEMENTS = 2 ** 24


def _merge_column_topk(best_scores, best_texts, block, offset):
    """Merge a score block [c, N] (captions offset.. x images) into the running per-image top-k [k, N].

    A column top-k is strided and costs several times a row top-k. Only images whose best score in this
    block beats their running k-th best can change, so a cheap column max picks those columns first; once
    a few thousand captions have been seen, that is a small fraction of the images.
    """
    k = best_scores.shape[0]
    affected = (block.amax(dim=0) > best_scores[-1]).nonzero().squeeze(1)        # [A]
    if affected.numel() == 0:
        return best_scores, best_texts
    columns = slice(None) if affected.numel() * 4 > block.shape[1] else affected
    sub_top = block[:, columns].topk(min(k, block.shape[0]), dim=0)                # [kc, A]
    scores = torch.cat([best_scores[:, columns], sub_top.values])
    candidates = torch.cat([best_texts[:, columns], sub_top.indices + offset])
    keep = scores.topk(k, dim=0)
    best_scores, best_texts = best_scores.clone(), best_texts.clone()
    best_scores[:, columns] = keep.values
    best_texts[:, columns] = candidates.gather(0, keep.indices)
    return best_scores, best_texts


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
    for start in range(0, texts, chunk):
        block = text_features[start:start + chunk] @ image_features.t()          # [c, N]
        top_images = block.topk(k_images, dim=1).indices                           # [c, k]
        match = top_images == owner[start:start + chunk, None]
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
