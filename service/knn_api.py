"""clip-retrieval's back-end API, served over our index so that its ClipClient and front end work unchanged.

POST /knn-service takes clip-retrieval's JSON query: ``text``, or ``image`` (base64), ``image_url`` or
``embedding_input``, taken in that order; ``modality`` "image" (search the images) or "text" (search the
captions); ``num_images`` (results with metadata) and ``num_result_ids`` (results in all); ``deduplicate``.
It answers ``[{"id", "similarity", "url", "caption", "image_path"}]``, with metadata for the first
num_images only. GET /indices-list answers ``[name]`` (the index folder's name); POST /metadata takes
``{"indice_name", "ids"}`` (image ids) and answers ``[{"id", "metadata"}]``. The safety, violence, aesthetic
and multilingual options are accepted and have no effect (this service has none of those models); an
``image_url`` is fetched only when serve.py's allow-image-url is on.
"""
import base64
import binascii
import http.client
import time
import urllib.error
import urllib.request
from typing import List, Optional, Union

import numpy as np
from fastapi import HTTPException, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from utils.errors import UserError

MAX_EMBEDDING = 8192
FETCH_SECONDS = 10  # the whole download of an image_url, not each read


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to another http(s) URL."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not newurl.startswith(("http://", "https://")):
            raise urllib.error.URLError(f"redirected to {newurl[:80]}, which is not http(s)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


class KnnQuery(BaseModel):
    text: Optional[str] = Field(None, max_length=1000)
    image: Optional[str] = None
    image_url: Optional[str] = Field(None, max_length=2000)
    embedding_input: Optional[List[float]] = Field(None, max_length=MAX_EMBEDDING)
    modality: str = "image"
    indice_name: str
    num_images: int = Field(40, ge=1)
    num_result_ids: Optional[int] = Field(None, ge=1)
    deduplicate: bool = True
    use_mclip: bool = False
    use_safety_model: bool = False
    use_violence_detector: bool = False
    # accepted and unused; clip-retrieval's front end sends "" when aesthetic scoring is off
    aesthetic_score: Union[int, float, str, None] = None
    aesthetic_weight: Union[int, float, str, None] = None


class MetadataQuery(BaseModel):
    indice_name: str
    ids: List[int] = Field(..., max_length=10_000)


def add_knn_routes(app, searcher, index_name, decode_image, max_k, max_upload_bytes, allow_image_url=False):
    """Add clip-retrieval's three endpoints to ``app``. decode_image(bytes) -> PIL image (the service's upload
    checks); max_k bounds num_result_ids."""
    items = searcher.gallery.items

    def checked_index(name):
        if name != index_name:
            raise HTTPException(400, f"unknown indice_name '{name}'; this service has '{index_name}'")

    def metadata(item, base_url):
        captions = item["captions"]
        return {"url": f"{base_url}api/items/{item['id']}/thumbnail", "caption": captions[0] if captions else "",
                "image_path": item["name"]}

    def query_embedding(query):
        try:
            if query.text is not None and query.text.strip():  # its front end sends text "" with an image
                return searcher.encoder.encode_texts([query.text.strip()])[0]
            if query.image is not None:
                try:
                    data = base64.b64decode(query.image, validate=True)
                except (binascii.Error, ValueError):
                    raise HTTPException(400, "image: not base64") from None
                return searcher.encoder.encode_images([decode_image(data)])[0]
            if query.image_url is not None:
                return searcher.encoder.encode_images([decode_image(fetch(query.image_url))])[0]
            if query.embedding_input is not None:
                return np.asarray(query.embedding_input, np.float32)
        except UserError as error:
            raise HTTPException(400, str(error)) from None
        raise HTTPException(400, "give one of text, image, image_url or embedding_input")

    def fetch(url):
        if not allow_image_url:
            raise HTTPException(400, "image_url queries are off here (serve.py --allow-image-url true fetches them)")
        if not url.startswith(("http://", "https://")):
            raise HTTPException(400, "image_url must be http(s)")
        deadline, chunks, size = time.monotonic() + FETCH_SECONDS, [], 0
        try:
            with _OPENER.open(url, timeout=FETCH_SECONDS) as response:
                while chunk := response.read(65536):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > max_upload_bytes:
                        raise HTTPException(413, "image_url: the image is larger than the service's upload limit")
                    if time.monotonic() > deadline:
                        raise HTTPException(400, f"image_url: not fetched within {FETCH_SECONDS} s")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            raise HTTPException(400, f"image_url could not be fetched: {error}") from None
        return b"".join(chunks)

    @app.get("/indices-list", tags=["clip-retrieval"])
    def indices_list():
        return [index_name]

    @app.post("/knn-service", tags=["clip-retrieval"], openapi_extra=_json_body(KnnQuery))
    async def knn_service(request: Request):
        query = _parsed(KnnQuery, await request.body())
        return await run_in_threadpool(knn, query, str(request.base_url))

    def knn(query, base_url):
        checked_index(query.indice_name)
        if query.modality not in ("image", "text"):
            raise HTTPException(400, f"modality '{query.modality}': image or text")
        total = min(max(query.num_result_ids or query.num_images, query.num_images), max_k)
        embedding = query_embedding(query)
        try:
            if query.modality == "image":
                found = [(r["score"], r, searcher.gallery.image_features[r["id"]], None)
                         for r in searcher.search_vector(embedding, total)]
            else:  # each result's caption is the one found; its id is its image's, as /metadata reads ids
                found = [(r["score"], r["item"], searcher.gallery.text_features[r["row"]], r["caption"])
                         for r in searcher.search_captions(embedding, total)]
        except UserError as error:
            raise HTTPException(400, str(error)) from None
        results, seen = [], set()
        for score, item, vector, caption in found:
            if query.deduplicate:  # equal embeddings among the results (an image, or a caption, indexed twice)
                key = np.asarray(vector).tobytes()
                if key in seen:
                    continue
                seen.add(key)
            result = {"id": int(item["id"]), "similarity": score}
            if len(results) < query.num_images:
                result.update(metadata(item, base_url))
                if caption is not None:
                    result["caption"] = caption
            results.append(result)
        return results

    @app.post("/metadata", tags=["clip-retrieval"], openapi_extra=_json_body(MetadataQuery))
    async def item_metadata(request: Request):
        query = _parsed(MetadataQuery, await request.body())
        checked_index(query.indice_name)
        return await run_in_threadpool(described, query, str(request.base_url))

    def described(query, base_url):
        return [{"id": item_id, "metadata": metadata(items[item_id], base_url)} for item_id in query.ids
                if 0 <= item_id < len(items)]



def _parsed(model, body):
    """``body`` read as JSON whatever its Content-Type (ClipClient sends none, as clip-retrieval's Flask back end
    accepts), validated by ``model``; 422 with pydantic's reasons otherwise."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise HTTPException(422, error.errors(include_url=False, include_context=False)) from None


def _json_body(model):
    """The request body's schema for /docs, since the handlers read the body themselves."""
    return {"requestBody": {"content": {"application/json": {"schema": model.model_json_schema()}},
                            "required": True}}
