"""Chinese-CLIP's retrieval score (MUGE, Flickr30k-CN, COCO-CN tables): top-10 predictions both ways and their
recall, as its eval/evaluation.py and evaluation_tr.py compute them from the prediction files.

Text -> image ranks every image of the split (those no text names included); a text scores at k when any of its
image_ids is in its top k. Image -> text ranks every text; an image scores when any text naming it is in its
top k, over the images some text names. Recalls are ×100; MR is the mean of the six.
"""
import torch

TOP = 10


def _top(queries, gallery, k, chunk=4096):
    """Indices [Q, k] of the k best gallery rows for each query row (inner product), in chunks of queries."""
    k = min(k, gallery.shape[0])
    return torch.cat([(queries[start:start + chunk] @ gallery.t()).topk(k, dim=1).indices
                      for start in range(0, queries.shape[0], chunk)]) if queries.shape[0] else torch.zeros(0, k)


def chinese_clip_predictions(image_features, image_ids, text_features, text_ids, k=TOP):
    """image_features [N, D] of ``image_ids``, text_features [T, D] of ``text_ids`` (L2-normalised). Returns
    (text->image [{"text_id", "image_ids"}], image->text [{"image_id", "text_ids"}]), k ids each, best first."""
    to_images = _top(text_features, image_features, k)
    to_texts = _top(image_features, text_features, k)
    return ([{"text_id": text_ids[t], "image_ids": [image_ids[i] for i in row]}
             for t, row in enumerate(to_images.tolist())],
            [{"image_id": image_ids[i], "text_ids": [text_ids[t] for t in row]}
             for i, row in enumerate(to_texts.tolist())])


def chinese_clip_score(text_to_image, image_to_text, texts):
    """{"t2i_r1", ..., "i2t_r10", "mr"} (×100) of the predictions against ``texts`` [(text_id, text,
    [image_id])]. Every text is a text -> image query, as in Chinese-CLIP's evaluation.py (one whose images are
    all unknown can only miss); images no text names are no image -> text query."""
    truth = {text_id: set(image_ids) for text_id, _, image_ids in texts}
    named = {}
    for text_id, image_ids in truth.items():
        for image_id in image_ids:
            named.setdefault(image_id, set()).add(text_id)
    scores = {}
    for direction, predictions, key, found, gold in (("t2i", text_to_image, "text_id", "image_ids", truth),
                                                      ("i2t", image_to_text, "image_id", "text_ids", named)):
        ranked = {p[key]: p[found] for p in predictions if p[key] in gold}
        for k in (1, 5, 10):
            hits = sum(1 for query, expected in gold.items() if expected & set(ranked.get(query, [])[:k]))
            scores[f"{direction}_r{k}"] = 100.0 * hits / max(len(gold), 1)
    scores["mr"] = sum(scores.values()) / 6
    return scores


def prediction_file_problems(split, text_to_image, image_to_text):
    """Why Chinese-CLIP's evaluation.py / evaluation_tr.py would refuse these predictions, or "" (they want
    integer ids, exactly 10 distinct ones per query, and a prediction for every text and named image)."""
    problems = []
    if any(not isinstance(i, int) for i in [*split.images, *(t for t, _, _ in split.texts)]):
        problems.append("ids that are not integers")
    if any(len(p["image_ids"]) < TOP for p in text_to_image) or any(len(p["text_ids"]) < TOP for p in image_to_text):
        problems.append(f"fewer than {TOP} images or texts to rank")
    predicted = {p["image_id"] for p in image_to_text}
    if any(image_id not in predicted for _, _, image_ids in split.texts for image_id in image_ids):
        problems.append("images that could not be decoded have no prediction")
    return "; ".join(problems)


def format_chinese_clip_score(scores):
    return ("Chinese-CLIP score (×100): text → image R@1/5/10 {t2i_r1:.2f}/{t2i_r5:.2f}/{t2i_r10:.2f}, "
            "image → text R@1/5/10 {i2t_r1:.2f}/{i2t_r5:.2f}/{i2t_r10:.2f}, MR {mr:.2f}").format(**scores)


def score_split(model, tokenizer, split, transform, batch_size, num_workers, device, dtype):
    """Embed a ChineseClipSplit (data/cn_clip_layout.py): every image and every text. Returns ((text->image,
    image->text) predictions, chinese_clip_score). Images that fail to decode are left out (reported)."""
    from data.caption_table import CaptionTable, ImageRecord
    from evaluation.embedding import sharded_image_features, sharded_text_features

    image_ids = list(split.images)
    table = CaptionTable("chinese-clip split", [ImageRecord(str(image_id), "", [], split.images[image_id])
                                                for image_id in image_ids], [])
    was_training = model.training
    model.eval()
    image_features, kept = sharded_image_features(model, table, transform, batch_size, num_workers, device, dtype)
    text_features = sharded_text_features(model, tokenizer, [text for _, text, _ in split.texts], batch_size,
                                          device, dtype)
    model.train(was_training)
    predictions = chinese_clip_predictions(image_features, [image_ids[row] for row in kept.tolist()],
                                           text_features, [text_id for text_id, _, _ in split.texts])
    return predictions, chinese_clip_score(*predictions, split.texts)
