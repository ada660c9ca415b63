"""Retrieval recall@k, computed in chunks so the full similarity matrix never exists."""
import torch

RECALL_KS = (1, 5, 10)
# Largest similarity block held at once (elements); 2**24 floats = 64 MiB.
CHUNK_ELEMENTS = 2 ** 24


def _hits(queries, gallery, owner_of_result, query_owner, ks, chunk_elements):
    """Count queries whose top-k gallery items include one owned by the query's owner.

    queries [Q,D], gallery [G,D]; owner_of_result [G] maps gallery rows to an owner id;
    query_owner [Q] gives each query's owner id. Returns {k: hit count}.
    """
    k_max = min(max(ks), gallery.shape[0])
    chunk = max(1, chunk_elements // max(1, gallery.shape[0]))
    hits = {k: 0 for k in ks}
    for start in range(0, queries.shape[0], chunk):
        block = queries[start:start + chunk] @ gallery.t()                 # [c, G]
        top = block.topk(k_max, dim=1).indices                             # [c, k_max]
        match = owner_of_result[top] == query_owner[start:start + chunk, None]
        for k in ks:
            hits[k] += int(match[:, :k].any(dim=1).sum())
    return hits


def retrieval_recall(image_features, text_features, text_image_index, ks=RECALL_KS, chunk_elements=CHUNK_ELEMENTS):
    """R@k both ways under the standard protocol.

    image->text: a hit if any caption of the image is among the top k captions.
    text->image: every caption is a query; a hit if its image is among the top k images.

    Args:
        image_features: [N, D] L2-normalised.
        text_features: [M, D] L2-normalised.
        text_image_index: LongTensor [M], the image of each caption.
    Returns:
        {"i2t_r1": float, ..., "t2i_r10": float}.
    """
    image_features = image_features.float()
    text_features = text_features.float()
    text_image_index = torch.as_tensor(text_image_index, dtype=torch.long, device=image_features.device)
    image_ids = torch.arange(image_features.shape[0], device=image_features.device)
    i2t = _hits(image_features, text_features, text_image_index, image_ids, ks, chunk_elements)
    t2i = _hits(text_features, image_features, image_ids, text_image_index, ks, chunk_elements)
    metrics = {f"i2t_r{k}": i2t[k] / image_features.shape[0] for k in ks}
    metrics.update({f"t2i_r{k}": t2i[k] / text_features.shape[0] for k in ks})
    return metrics


def mean_recall(metrics):
    """Mean of all i2t/t2i recalls: the number best-path is chosen by."""
    values = [v for k, v in metrics.items() if k.startswith(("i2t_r", "t2i_r"))]
    return sum(values) / len(values)


def format_recall_table(metrics, ks=RECALL_KS):
    """The seed's README table, as text."""
    lines = ["|              | " + " | ".join(f"R @ {k:<3}" for k in ks) + " |",
             "|:------------:| " + " | ".join("-------" for _ in ks) + " |"]
    for label, prefix in (("image → text", "i2t"), ("text → image", "t2i")):
        lines.append(f"| {label:<12} | " + " | ".join(f"{metrics[f'{prefix}_r{k}']:.5f}" for k in ks) + " |")
    return "\n".join(lines)
