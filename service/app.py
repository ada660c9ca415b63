"""FastAPI app: text/image search over an index folder, zero-shot classification, thumbnails and the front end.

Every client mistake is a 4xx with a message; files are only ever read by indexed item id.
"""
import io
import os
import threading
from functools import lru_cache

from fastapi import FastAPI, File, Form, HTTPException, Path, Query, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from data.image_file import UPLOAD_FORMATS, ImageProblem, open_image_rgb
from retrieval.image_files import open_gallery_image
from retrieval.zero_shot import DEFAULT_TEMPLATES, class_embeddings, parse_labels, parse_templates, rank_labels
from service.body_limit import BodySizeLimit
from service.knn_api import add_knn_routes
from utils.errors import UserError

WEB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web")
MAX_QUERY_CHARS = 1000
MAX_LABELS = 100
MAX_TEMPLATES = 32
MAX_PROMPTS = 2000           # labels x templates encoded for one request
MAX_UPLOAD_PIXELS = 4096 * 4096
DECODE_SLOTS = 4             # uploads decoded at once: bounds memory under concurrent load


def create_app(searcher, max_upload_bytes=10 * 2 ** 20, max_k=100, thumbnail_size=256, allow_image_url=False,
               cors_origins=()):
    """The service over ``searcher``. allow_image_url: clip-retrieval queries may name an image URL, which the
    service then fetches (off by default: a URL makes the server connect wherever the client asks).
    cors_origins: web origins whose pages may call the API (clip-retrieval's front end served elsewhere); none by
    default, so that no other site a browser visits can read the index."""
    app = FastAPI(title="Contrastive", description="Image-text retrieval and zero-shot classification",
                  version="1.0")
    limit = f"{max_upload_bytes / 2 ** 20:g} MB" if max_upload_bytes >= 2 ** 20 else f"{max_upload_bytes:,} bytes"
    too_large = f"upload larger than the service's limit of {limit} (max-upload-mb)"
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"])
    # the body may hold the image as base64 (clip-retrieval's JSON: 4/3 of its size) or multipart; the image
    # itself is held to max_upload_bytes once decoded
    app.add_middleware(BodySizeLimit, max_bytes=-(-4 * max_upload_bytes // 3) + 64 * 1024, detail=too_large)
    items = searcher.gallery.items
    decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)

    def public(results):
        return {"results": [{"id": r["id"], "score": r["score"], "file": r["name"], "captions": r["captions"],
                             "thumbnail": f"/api/items/{r['id']}/thumbnail"} for r in results]}

    def read_upload(upload):
        if upload.size is not None and upload.size > max_upload_bytes:
            raise HTTPException(413, too_large)
        data = upload.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, too_large)
        return decode_upload(data)

    def decode_upload(data):
        if not data:
            raise HTTPException(400, "empty upload")
        try:
            with decode_slots:
                return open_image_rgb(io.BytesIO(data), draft_size=2 * searcher.encoder.spec.image_size,
                                      max_pixels=MAX_UPLOAD_PIXELS, formats=UPLOAD_FORMATS)
        except ImageProblem as problem:
            raise HTTPException(400, f"not a usable image: {problem}") from None

    @lru_cache(maxsize=64)
    def classes_for(labels, templates):
        return class_embeddings(searcher.encoder, list(labels), list(templates))

    @lru_cache(maxsize=2048)
    def thumbnail(item_id):
        with decode_slots:  # gallery files can be large photos: bounded like uploads
            image = open_gallery_image(items[item_id]["file"], draft_size=thumbnail_size)
            image.thumbnail((thumbnail_size, thumbnail_size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()

    @app.get("/api/health")
    def health():
        return {"status": "ok", "items": len(items), "captions": int(len(searcher.gallery.text_item)),
                "encoder": searcher.encoder.kind, "model": searcher.encoder.fingerprint[:12],
                "search": searcher.vector_index.kind}

    @app.get("/api/search/text")
    def search_text(q: str = Query(..., max_length=MAX_QUERY_CHARS, description="query text"),
                    k: int = Query(10, ge=1, le=max_k)):
        if not q.strip():
            raise HTTPException(400, "empty query")
        return public(searcher.search_text(q, k))

    @app.post("/api/search/image")
    def search_image(image: UploadFile = File(...), k: int = Form(10, ge=1, le=max_k)):
        return public(searcher.search_image(read_upload(image), k))

    @app.post("/api/classify")
    def classify(image: UploadFile = File(...), labels: str = Form(..., max_length=10_000),
                 templates: str = Form(None, max_length=10_000)):
        try:
            names = parse_labels(labels)
            prompts = parse_templates(templates.splitlines()) if templates else list(DEFAULT_TEMPLATES)
        except UserError as error:
            raise HTTPException(400, str(error)) from None
        if len(names) > MAX_LABELS or len(prompts) > MAX_TEMPLATES or len(names) * len(prompts) > MAX_PROMPTS:
            raise HTTPException(400, f"at most {MAX_LABELS} labels, {MAX_TEMPLATES} templates and "
                                     f"{MAX_PROMPTS} label-template prompts per request")
        picture = read_upload(image)
        return {"labels": rank_labels(searcher.encoder, picture, names, classes_for(tuple(names), tuple(prompts)))}

    @app.get("/api/items/{item_id}/thumbnail", responses={200: {"content": {"image/jpeg": {}}}})
    def item_thumbnail(item_id: int = Path(..., ge=0)):
        if item_id >= len(items):
            raise HTTPException(404, f"no item {item_id}")
        try:
            return Response(thumbnail(item_id), media_type="image/jpeg",
                            headers={"Cache-Control": "max-age=3600"})
        except ImageProblem:
            raise HTTPException(404, f"item {item_id}: image file no longer available") from None

    @app.get("/", include_in_schema=False)
    def front_end():
        return FileResponse(os.path.join(WEB_DIR, "index.html"))

    add_knn_routes(app, searcher, searcher.index_name, decode_upload, max_k, max_upload_bytes, allow_image_url)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app
