"""Image files: find them in a folder, decode one safely into an RGB PIL image."""
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.errors import first_line

# PIL's own default; above it an image is treated as a decompression bomb and skipped.
MAX_PIXELS = 89_478_485
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")  # of files in folders


def _registered(names):
    Image.init()
    return tuple(name for name in names if name in Image.OPEN)


# The only formats opened, whatever a file is named: EPS and the like reach external programs (Ghostscript).
# Dataset and gallery files: the formats PIL decodes by itself that photo datasets hold (AVIF where this
# Pillow reads it). Untrusted uploads to the web service: the common web formats alone.
IMAGE_FORMATS = _registered(("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "ICO", "JPEG2000", "AVIF"))
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def image_files(root):
    """Yield the paths below ``root`` whose names end in an image extension, folders and files sorted."""
    for folder, directories, files in os.walk(root):
        directories.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                yield os.path.join(folder, name)


class EncodedImage(bytes):
    """An image file's bytes (from inside a shard) with the label warnings name it by."""

    def __new__(cls, data, label):
        instance = super().__new__(cls, data)
        instance.label = label
        return instance


class ImageProblem(Exception):
    """An image that cannot be used; the message says why."""


def check_image_header(path):
    """Cheap check that ``path`` is a readable image of sane size; raises ImageProblem.

    Reads only the header, so scanning a large dataset stays fast; ``open_image_rgb`` decodes.
    """
    if not os.path.exists(path):
        raise ImageProblem("file not found")
    if not os.path.isfile(path):
        raise ImageProblem("not a regular file")
    if os.path.getsize(path) == 0:
        raise ImageProblem("empty file (0 bytes)")
    with _opened(path) as image:
        _check_size(image)




def open_image_rgb(path, draft_size=None, max_pixels=MAX_PIXELS, formats=IMAGE_FORMATS):
    """Decode ``path`` (a file name or a binary file object) to an RGB image: EXIF orientation applied,
    alpha composited on white, grayscale/palette/CMYK/16-bit converted. Raises ImageProblem for anything
    unusable.

    draft_size: for JPEGs, let the decoder scale down by 1/2, 1/4 or 1/8 while both sides stay
    >= draft_size (PIL's ``draft``): much less work when the model's input is far smaller than the photo.
    max_pixels: a tighter limit for untrusted input; formats: the PIL formats opened.
    """
    with _opened(path, formats) as image:
        _check_size(image, max_pixels)
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
                image = ImageOps.exif_transpose(image)
            return to_rgb(image)  # exif_transpose above already dropped the orientation tag
        except MemoryError:
            raise
        except Exception as error:  # Pillow raises many types for malformed data (struct.error, EXIF bugs…)
            raise ImageProblem(f"cannot decode ({first_line(error)})") from None


def prepare_rgb(image):
    """EXIF orientation applied, then ``to_rgb``; returns RGB images without orientation unchanged."""
    if image.mode == "RGB" and not image.getexif().get(0x0112):
        return image
    return to_rgb(ImageOps.exif_transpose(image))


def to_rgb(image):
    """Convert any PIL mode to 8-bit RGB (16-bit and float scaled, transparency over white)."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            top = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
        else:
            top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        image = background
    return image.convert("RGB")


class _opened:
    """Context manager around Image.open turning every failure into ImageProblem."""

    def __init__(self, path, formats=IMAGE_FORMATS):
        self.path = path
        self.formats = formats
        self.image = None

    def __enter__(self):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                self.image = Image.open(self.path, formats=self.formats)
        except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageProblem(_reason(error)) from None
        except (OSError, ValueError, SyntaxError) as error:
            raise ImageProblem(f"cannot open ({first_line(error)})") from None
        return self.image

    def __exit__(self, *exc):
        self.image.close()
        return False


def _check_size(image, max_pixels=MAX_PIXELS):
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageProblem(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageProblem(f"image too large ({width}x{height} pixels; limit {max_pixels}, decompression bomb?)")


def _reason(error):
    if isinstance(error, UnidentifiedImageError):
        return "not an image file in a format read here (JPEG, PNG, WebP, GIF, BMP, TIFF, …)"
    return f"image too large ({first_line(error)})"

