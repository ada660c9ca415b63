"""Write tests/data/img2dataset/: the real img2dataset's output, in each of its formats, over a loopback server.

img2dataset cannot share the project's environment (it pins webdataset < 1 and pulls wandb, albumentations
and OpenCV), so it runs from its own virtual environment and its output is committed as a test fixture:

    python3 -m venv /tmp/i2d && /tmp/i2d/bin/pip install img2dataset==1.47.0
    python scripts/img2dataset_fixture.py --img2dataset /tmp/i2d/bin/img2dataset --out tests/data/img2dataset

The url list (url_list.parquet, written beside the outputs) has 12 images served from 127.0.0.1, each with
two captions (caption: the first; all_captions: both), plus two URLs that answer 404 and one file that is
not an image. Each format is downloaded with the command in COMMANDS.txt, which this script writes and runs.
"""
import argparse
import functools
import http.server
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

COLORS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle")
FORMATS = ("webdataset", "files", "parquet")


def draw(color, shape, size=48):
    image = Image.new("RGB", (size, size), (245, 245, 245))
    pen, box = ImageDraw.Draw(image), (8, 8, size - 8, size - 8)
    if shape == "circle":
        pen.ellipse(box, fill=COLORS[color])
    elif shape == "square":
        pen.rectangle(box, fill=COLORS[color])
    else:
        pen.polygon([(size // 2, 6), (size - 6, size - 6), (6, size - 6)], fill=COLORS[color])
    return image


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(folder):
    handler = functools.partial(QuietHandler, directory=folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img2dataset", required=True, help="the img2dataset command (its own venv)")
    parser.add_argument("--out", default="tests/data/img2dataset")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as site:
        rows = []
        for index, (color, shape) in enumerate((c, s) for c in COLORS for s in SHAPES):
            name = f"img{index:02d}.png"
            draw(color, shape).save(os.path.join(site, name))
            rows.append((name, [f"a {color} {shape}", f"a picture of a {shape} in {color}"]))
        with open(os.path.join(site, "broken.jpg"), "wb") as handle:
            handle.write(b"this is not an image")
        rows += [("missing1.jpg", ["a missing image"]), ("broken.jpg", ["a broken image"]),
                 ("missing2.jpg", ["another missing image"])]
        server = serve(site)
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        if os.path.exists(args.out):
            shutil.rmtree(args.out)
        os.makedirs(args.out)
        url_list = os.path.join(args.out, "url_list.parquet")
        pq.write_table(pa.table({"url": [base + name for name, _ in rows],
                                 "caption": [captions[0] for _, captions in rows],
                                 "all_captions": [captions for _, captions in rows]}), url_list)
        commands = []
        for output_format in FORMATS:
            command = [args.img2dataset, "--url_list", url_list, "--input_format", "parquet",
                       "--url_col", "url", "--caption_col", "caption",
                       "--save_additional_columns", '["all_captions"]', "--output_format", output_format,
                       "--output_folder", os.path.join(args.out, output_format), "--image_size", "32",
                       "--resize_mode", "border", "--processes_count", "1", "--thread_count", "4",
                       "--number_sample_per_shard", "8", "--enable_wandb", "False"]
            shown = [("img2dataset" if part == args.img2dataset else part) for part in command]
            commands.append(shlex.join(shown).replace(base, "http://127.0.0.1:PORT/"))
            result = subprocess.run(command, capture_output=True, text=True,
                                    env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
            if result.returncode != 0:
                sys.stderr.write(result.stderr[-3000:])
                return 1
        server.shutdown()
    for output_format in FORMATS:  # what differs per run: timings, the server's port
        for stats in sorted(os.listdir(os.path.join(args.out, output_format))):
            if stats.endswith("_stats.json"):
                path = os.path.join(args.out, output_format, stats)
                with open(path, encoding="utf-8") as handle:
                    data = json.load(handle)
                kept = {key: data[key] for key in ("count", "successes", "failed_to_download", "failed_to_resize",
                                                   "status_dict") if key in data}
                with open(path, "w", encoding="utf-8") as handle:
                    json.dump(kept, handle, indent=1)
    with open(os.path.join(args.out, "COMMANDS.txt"), "w", encoding="utf-8") as handle:
        handle.write("# written by scripts/img2dataset_fixture.py with img2dataset 1.47.0; "
                     "url_list.parquet's URLs point at that run's loopback server\n" + "\n".join(commands) + "\n")
    print(f"wrote {args.out}: " + ", ".join(FORMATS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
