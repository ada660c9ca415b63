"""Concurrent load on a running service (loopback only): p50/p99 latency and the error count.

    python scripts/load_test.py --url http://127.0.0.1:8000 --requests 400 --concurrency 16 --image IMG

Mixes text searches and (with --image) image searches. Bounded: stops after --requests or --seconds.
"""
import argparse
import asyncio
import sys
import time
from urllib.parse import urlparse

import httpx

QUERIES = ["a big red circle", "a small blue square left of a large green cross", "there is a yellow triangle",
           "a picture of a black circle and a cyan square", "an orange cross at the top"]


async def main_async(args):
    host = urlparse(args.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"error: load tests target loopback only, not {host}", file=sys.stderr)
        return 2
    image = open(args.image, "rb").read() if args.image else None
    latencies, errors, issued = [], [], 0
    deadline = time.perf_counter() + args.seconds

    async def worker(client):
        nonlocal issued
        while issued < args.requests and time.perf_counter() < deadline:
            index = issued
            issued += 1
            started = time.perf_counter()
            try:
                if image is not None and index % 3 == 2:
                    response = await client.post("/api/search/image", files={"image": ("q.png", image)})
                else:
                    response = await client.get("/api/search/text", params={"q": QUERIES[index % len(QUERIES)],
                                                                            "k": 10})
                if response.status_code != 200:
                    errors.append(f"HTTP {response.status_code}")
            except httpx.HTTPError as error:
                errors.append(type(error).__name__)
            latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(base_url=args.url, timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def percentile(p):
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    print(f"{len(latencies)} requests, concurrency {args.concurrency}, {len(latencies) / elapsed:.1f} req/s, "
          f"p50 {percentile(50):.1f} ms, p99 {percentile(99):.1f} ms, errors {len(errors)}"
          + (f" ({', '.join(sorted(set(errors)))})" if errors else ""))
    return 1 if errors else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--image", help="an image file for image-search requests")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
