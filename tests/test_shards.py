"""Webdataset shards in img2dataset's layout, written from a dataset folder and read back with webdataset."""
import contextlib
import json
import shutil

import pytest
import torch
import webdataset

from data.caption_table import read_caption_table
from scripts.make_shards import main as make_shards
from utils.errors import UserError
from tests.helpers import (assert_same_checkpoints, http_server, kill_inside_an_epoch, png_bytes, run_script,
                           torchrun, truncated_png_bytes)


def _read_back(pattern):
    return {sample["__key__"]: sample for sample in webdataset.WebDataset(pattern, shardshuffle=False)}


def test_shards_hold_every_image_and_all_its_captions(tiny_dataset, tmp_path):
    out = tmp_path / "shards"
    assert make_shards(["--data", str(tiny_dataset / "train"), "--out", str(out), "--samples-per-shard", "20"]) == 0
    sizes = json.loads((out / "sizes.json").read_text())
    assert sizes == {"00000.tar": 20, "00001.tar": 20, "00002.tar": 8}
    assert json.loads((out / "00002_stats.json").read_text())["successes"] == 8
    samples = _read_back(str(out / "{00000..00002}.tar"))
    assert len(samples) == 48 and "000010019" in samples and "000020007" in samples  # img2dataset's keys
    table = read_caption_table(str(tiny_dataset / "train"))
    by_name = {record.filename: record for record in table.images}
    for key, sample in samples.items():
        meta = json.loads(sample["json"])
        record = by_name[meta["filename"]]
        assert meta["key"] == key and meta["captions"] == record.captions
        assert sample["txt"].decode() == record.captions[0]
        with open(record.path, "rb") as handle:
            assert sample["png"] == handle.read()  # the file's own bytes, not re-encoded


def test_undecodable_images_are_left_out_and_an_existing_set_is_kept(tiny_dataset, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset / "valid", data)
    (data / "images" / "000003.png").write_bytes(truncated_png_bytes())
    out = tmp_path / "shards"
    assert make_shards(["--data", str(data), "--out", str(out), "--samples-per-shard", "5"]) == 0
    captured = capsys.readouterr()
    assert "000003.png" in captured.err and "1 image(s) left out" in captured.out
    assert sum(json.loads((out / "sizes.json").read_text()).values()) == 15
    assert all(json.loads(s["json"])["filename"] != "000003.png" for s in _read_back(str(out / "{00000..00002}.tar")).values())

    before = (out / "00000.tar").read_bytes()
    with pytest.raises(SystemExit) as refused:  # no --overwrite: nothing touched
        make_shards(["--data", str(data), "--out", str(out)])
    assert refused.value.code == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "00000.tar").read_bytes() == before
    assert make_shards(["--data", str(data), "--out", str(out), "--overwrite"]) == 0  # now one shard of 15
    assert json.loads((out / "sizes.json").read_text()) == {"00000.tar": 15}
    assert sorted(p.name for p in out.iterdir()) == ["00000.tar", "00000_stats.json", "sizes.json"]


def _shards(tiny_dataset, tmp_path, per_shard):
    out = tmp_path / f"shards-{per_shard}"
    assert make_shards(["--data", str(tiny_dataset / "train"), "--out", str(out), "--samples-per-shard",
                        str(per_shard), "--quiet"]) == 0
    sizes = json.loads((out / "sizes.json").read_text())
    return [str(out / name) for name in sizes], sum(sizes.values())


def _names(items):
    """A collate that keeps what identifies each sample: the 'caption' read from the JSON's filename key."""
    return [caption for _, caption in items]


def _epoch(urls, rank, world_size, workers, local_batch, batches, epoch=0, first=0, transform=None, collate=_names,
           keys=("filename",), weights=None, sizes=None, timeout=60):
    """One epoch of ShardBatches as the training loader reads it: (its batches, the dataset)."""
    from data.shard_dataset import ShardBatches
    from training.train_data import StreamLoader

    dataset = ShardBatches(urls, transform or (lambda image: torch.zeros(1)), collate, list(keys), seed=7,
                           rank=rank, world_size=world_size, local_batch=local_batch, batches=batches,
                           resampled_weights=weights, sizes=sizes, timeout=timeout)
    dataset.set_epoch(epoch, first)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    return list(StreamLoader(loader)), dataset


@pytest.mark.parametrize("per_shard", [12, 48])  # a shard per slot; one shard for all slots
def test_ranks_and_workers_split_an_epoch_without_overlap(tiny_dataset, tmp_path, per_shard):
    urls, samples = _shards(tiny_dataset, tmp_path, per_shard)
    world_size, workers, local_batch = 2, 2, 4
    batches = samples // (world_size * local_batch)
    seen = []
    for rank in range(world_size):
        epoch, _ = _epoch(urls, rank, world_size, workers, local_batch, batches)
        assert len(epoch) == batches and all(len(batch) == local_batch for batch in epoch)  # no rank waits
        seen += [name for batch in epoch for name in batch]
    assert sorted(seen) == sorted(f"{i:06d}.png" for i in range(48))  # each sample once, on one rank only
    again, _ = _epoch(urls, 0, world_size, workers, local_batch, batches)
    later, _ = _epoch(urls, 0, world_size, workers, local_batch, batches, epoch=1)
    assert again == _epoch(urls, 0, world_size, workers, local_batch, batches)[0] and later != again


def test_an_epoch_started_mid_way_gives_the_batches_an_uninterrupted_one_would(tiny_dataset, tmp_path):
    from data.transforms import train_transform

    urls, _ = _shards(tiny_dataset, tmp_path, 10)  # uneven: 10, 10, 10, 10, 8
    augment = train_transform(32, 0.5, True, True, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

    def pairs(items):
        return torch.stack([image for image, _ in items]), [caption for _, caption in items]

    full, _ = _epoch(urls, 0, 1, 2, 4, 11, transform=augment, collate=pairs)
    for first in (3, 4):  # resumed at a batch of either worker
        rest, _ = _epoch(urls, 0, 1, 2, 4, 11, first=first, transform=augment, collate=pairs)
        assert len(rest) == 11 - first
        for (images, names), (expected_images, expected_names) in zip(rest, full[first:]):
            assert names == expected_names and torch.equal(images, expected_images)


def test_bad_samples_and_a_truncated_shard_are_skipped_and_counted(tiny_dataset, tmp_path, capfd):
    urls, _ = _shards(tiny_dataset, tmp_path, 12)
    bad = tmp_path / "bad.tar"
    with webdataset.TarWriter(str(bad)) as writer:
        good = next(iter(webdataset.WebDataset(urls[0], shardshuffle=False)))
        writer.write({"__key__": "a", "png": truncated_png_bytes(), "json": {"filename": "a"}})  # undecodable
        writer.write({"__key__": "b", "png": good["png"], "json": b"{not json"})                # bad JSON
        writer.write({"__key__": "c", "png": good["png"], "json": {"other": 1}})                # no caption
        writer.write({"__key__": "e", "png": good["png"], "json": {"filename": 5}})                # no string
        writer.write({"__key__": "d", "png": good["png"], "json": {"filename": "ok-d"}})
    cut = tmp_path / "cut.tar"
    data = open(urls[1], "rb").read()
    cut.write_bytes(data[: len(data) // 2])  # a shard cut off in mid-file
    epoch, dataset = _epoch([urls[0], str(bad), str(cut), urls[2]], 0, 1, 2, 4, 6)
    assert len(epoch) == 6 and all(len(batch) == 4 for batch in epoch)
    names = [name for batch in epoch for name in batch]
    assert "ok-d" in names and "a" not in names
    assert dataset.bad_samples() >= 4  # counted by the workers, read by the training process for its report
    main_process, dataset = _epoch([urls[0], str(bad), str(cut), urls[2]], 0, 1, 0, 4, 6)
    assert len(main_process) == 6 and all(len(batch) == 4 for batch in main_process)
    assert dataset.bad_samples() >= 5  # 4 bad samples and the cut shard, counted for the epoch report
    from data.shard_dataset import first_captions
    with pytest.raises(UserError, match="caption-key 'nope'"):  # a key no sample has: said at once, no hang
        first_captions(urls, ["nope"])
    logged = capfd.readouterr().err  # one line per bad sample (the first few per worker), with its reason
    assert "bad.tar/a': cannot decode" in logged and "bad.tar/c': no caption" in logged


@pytest.mark.slow
def test_train_py_and_eval_py_from_shards(tiny_checkpoint, tiny_dataset, tmp_path):
    _shards(tiny_dataset, tmp_path, 12)
    pattern = str(tmp_path / "shards-12" / "{00000..00003}.tar")
    valid = tmp_path / "valid-shards"
    assert make_shards(["--data", str(tiny_dataset / "valid"), "--out", str(valid), "--samples-per-shard", "6",
                        "--quiet"]) == 0
    valid_pattern = str(valid / "{00000..00002}.tar")

    # eval.py on shards (every caption of each sample) measures what it measures on the folder
    recalls = {}
    for name, source in (("folder", str(tiny_dataset / "valid")), ("shards", valid_pattern)):
        done = run_script("eval.py", "--config", "configs/demo/eval.yaml", "--model-path", str(tiny_checkpoint),
                          "--valid-data", source, "--caption-key", "captions", "--num-workers", "2",
                          "--output", str(tmp_path / f"{name}.json"))
        assert done.returncode == 0, done.stderr
        recalls[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert recalls["shards"]["images"] == 16 and recalls["shards"]["captions"] == 80
    for key in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"):
        assert recalls["shards"][key] == pytest.approx(recalls["folder"][key], abs=1e-9), key

    result = run_script("train.py", "--config", "configs/demo/train.yaml", "--load-path", str(tiny_checkpoint),
                        "--train-data", pattern, "--caption-key", "captions", "--valid-data",
                        valid_pattern, "--best-path", str(tmp_path / "best.pt"), "--last-path",
                        str(tmp_path / "last.pt"), "--log-dir", str(tmp_path / "logs"), "--batch-size", "16",
                        "--num-workers", "2", "--epochs", "2", "--warmup-steps", "2")
    assert result.returncode == 0, result.stderr
    assert "training: 48 samples from shards, global batch 16, 3 steps/epoch" in result.stdout
    assert "one pass per epoch" in result.stdout  # sizes.json read: each sample once per epoch
    history = [json.loads(line) for line in (tmp_path / "logs/metrics.jsonl").read_text().splitlines()]
    assert [item["step"] for item in history] == [3, 6]
    assert history[-1]["images"] == 16 and history[-1]["captions"] == 80  # validated on the valid shards
    missing = run_script("train.py", "--config", "configs/demo/train.yaml", "--load-path", str(tiny_checkpoint),
                         "--train-data", str(tmp_path / "shards-12" / "{00000..00009}.tar"), "--valid-data",
                         str(tiny_dataset / "valid"), "--best-path", str(tmp_path / "b2.pt"), "--last-path",
                         str(tmp_path / "l2.pt"), "--log-dir", str(tmp_path / "logs2"))
    assert missing.returncode == 2 and "00004.tar' not found" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.slow
def test_training_from_shards_killed_inside_an_epoch_resumes_bit_for_bit(tiny_checkpoint, tiny_dataset, tmp_path):
    _shards(tiny_dataset, tmp_path, 10)  # 5 uneven shards for 2 workers

    def args(out, *extra):
        return ["train.py", "--config", "configs/demo/train.yaml", "--load-path", str(tiny_checkpoint),
                "--train-data", str(tmp_path / "shards-10" / "{00000..00004}.tar"), "--valid-data",
                str(tiny_dataset / "valid"), "--best-path", str(out / "best.pt"), "--last-path", str(out / "last.pt"),
                "--log-dir", str(out / "logs"), "--batch-size", "8", "--num-workers", "2", "--epochs", "3",
                "--warmup-steps", "2", *extra]

    straight = tmp_path / "straight"
    result = run_script(*args(straight))
    assert result.returncode == 0, result.stderr
    killed = tmp_path / "killed"
    # an odd batch: the resumed loader's workers play rotated roles for the rest of that epoch, then not
    state = kill_inside_an_epoch(args(killed, "--checkpoint-every-steps", "1"), killed, lambda batches: batches % 2)
    other = run_script(*args(killed, "--checkpoint-every-steps", "1", "--num-workers", "1"), "--resume",
                       str(killed / "last.pt"))
    assert other.returncode == 2 and "num-workers 2" in other.stderr  # its position means nothing with 1 worker
    resumed = run_script(*args(killed, "--checkpoint-every-steps", "1"), "--resume", str(killed / "last.pt"))
    assert resumed.returncode == 0, resumed.stderr
    assert f"after batch {state['epoch-progress']['batches']} of epoch" in resumed.stdout
    assert_same_checkpoints(straight, killed)


@pytest.mark.slow
def test_torchrun_from_shards_killed_inside_an_epoch_resumes_bit_for_bit(tiny_checkpoint, tiny_dataset, tmp_path):
    _shards(tiny_dataset, tmp_path, 10)

    def args(out, port, *extra):  # 2 processes x 2 persistent workers: 4 slots over 5 uneven shards
        return torchrun(port, "train.py", "--config", "configs/demo/train.yaml", "--load-path", str(tiny_checkpoint),
                        "--train-data", str(tmp_path / "shards-10" / "{00000..00004}.tar"), "--valid-data",
                        str(tiny_dataset / "valid"), "--best-path", str(out / "best.pt"), "--last-path",
                        str(out / "last.pt"), "--log-dir", str(out / "logs"), "--batch-size", "8",
                        "--num-workers", "2", "--epochs", "2", "--warmup-steps", "2", *extra)

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    result = run_script(*args(straight, 29531))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "global batch 8 (2 processes x 4), 6 steps/epoch" in result.stdout
    state = kill_inside_an_epoch(lambda attempt: args(killed, 29540 + attempt, "--checkpoint-every-steps", "1"),
                                 killed, lambda batches: batches % 2)
    assert len(state["rng"]) == 2  # each rank's random streams, taken at the same step
    resumed = run_script(*args(killed, 29539, "--checkpoint-every-steps", "1"), "--resume", str(killed / "last.pt"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count(f"after batch {state['epoch-progress']['batches']} of epoch") == 1  # rank 0 reports
    assert_same_checkpoints(straight, killed)


def test_shards_stream_over_http_as_from_disk(tiny_dataset, tmp_path):
    from data.shard_source import epoch_samples

    urls, samples = _shards(tiny_dataset, tmp_path, 12)
    with http_server(tmp_path / "shards-12") as base:
        remote, remote_samples, _ = epoch_samples(base + "/{00000..00003}.tar")  # sizes.json read over HTTP too
        assert remote_samples == samples == 48 and remote[0] == base + "/00000.tar"
        over_http, _ = _epoch(remote, 0, 1, 2, 4, 12)
        from_disk, _ = _epoch(urls, 0, 1, 2, 4, 12)
        assert over_http == from_disk  # the same samples in the same order
        gone, dataset = _epoch(remote + [base + "/00009.tar"], 0, 1, 0, 4, 12)  # a shard the server lacks
        assert len(gone) == 12 and dataset.bad_samples() >= 1  # skipped and counted, the epoch complete


def test_resampled_sources_are_drawn_by_their_weights(tiny_dataset, tmp_path):
    from data.shard_source import expand_shards, shard_weights

    train, _ = _shards(tiny_dataset, tmp_path, 12)  # 4 shards of train images
    valid = tmp_path / "valid-shards"
    assert make_shards(["--data", str(tiny_dataset / "valid"), "--out", str(valid), "--samples-per-shard", "8",
                        "--quiet"]) == 0  # 2 shards of valid images (the same file names as 16 train images)
    value = str(tmp_path / "shards-12" / "{00000..00003}.tar") + "::" + str(valid / "{00000..00001}.tar")
    urls = expand_shards(value)
    assert shard_weights(value, "1::4") == [1.0] * 4 + [4.0] * 2

    def valid_share(weights):
        epoch, _ = _epoch(urls, 0, 1, 2, 4, 60, weights=weights, keys=("txt",))
        names = [caption for batch in epoch for caption in batch]
        assert len(names) == 240
        valid_captions = {row.captions[0] for row in read_caption_table(str(tiny_dataset / "valid")).images}
        return sum(name in valid_captions for name in names) / len(names)

    plain, weighted = valid_share([1.0] * 6), valid_share(shard_weights(value, "1::4"))
    # by shard weight and size: 0.25 of the samples from valid unweighted, 0.57 with weight 4
    assert 0.1 < plain < 0.4 and 0.4 < weighted < 0.75, (plain, weighted)

    full, _ = _epoch(urls, 0, 1, 2, 4, 10, weights=[1.0] * 6)
    later, _ = _epoch(urls, 0, 1, 2, 4, 10, first=5, weights=[1.0] * 6)
    assert later == full[5:]  # resampled epochs resume mid-way too
    for bad in ("1", "1::0", "a::b"):
        with pytest.raises(UserError, match="train-data-weights"):
            shard_weights(value, bad)


@pytest.mark.parametrize("world_size", [1, 2])
def test_an_epoch_over_uneven_shards_uses_each_sample_once(tiny_dataset, tmp_path, world_size):
    from data.shard_source import shard_sizes

    urls, samples = _shards(tiny_dataset, tmp_path, 20)  # 20, 20, 8: make_shards' short last shard
    sizes = shard_sizes(urls)
    assert sizes == [20, 20, 8]
    local_batch = 4 // world_size
    batches = samples // 4
    for epoch in (0, 1):
        seen = []
        for rank in range(world_size):
            batches_of_rank, _ = _epoch(urls, rank, world_size, 3, local_batch, batches, epoch=epoch, sizes=sizes)
            assert len(batches_of_rank) == batches
            seen += [name for batch in batches_of_rank for name in batch]
        assert sorted(seen) == sorted(f"{i:06d}.png" for i in range(48))  # 48 draws: every sample, once


def test_a_missing_or_empty_shard_is_skipped_and_its_places_filled(tiny_dataset, tmp_path):
    urls, _ = _shards(tiny_dataset, tmp_path, 12)  # 4 shards for 2 workers x 2 ranks: a shard per slot
    empty = tmp_path / "empty.tar"
    with webdataset.TarWriter(str(empty)):
        pass
    with http_server(tmp_path) as base:
        gone = base + "/gone.tar"  # a 404
        for shards, sizes in (([urls[0], str(empty), urls[2], urls[3]], [12, 0, 12, 12]),  # sizes known
                              ([urls[0], str(empty), urls[2], urls[3]], [12, 12, 12, 12]),  # sizes.json wrong
                              ([urls[0], gone, urls[2], urls[3]], [12, 12, 12, 12]),
                              ([urls[0], gone, urls[2], str(empty)], None)):  # sizes unknown: train-num-samples
            batches, bad = 36 // 8, 0
            for rank in (0, 1):
                epoch, dataset = _epoch(shards, rank, 2, 2, 4, batches, sizes=sizes)
                assert len(epoch) == batches and all(len(batch) == 4 for batch in epoch)  # the epoch goes on
                names = [name for batch in epoch for name in batch]
                assert len(names) == 16 and not any(int(name[:6]) in range(12, 24) for name in names)
                bad += dataset.bad_samples()
            if sizes is None:
                assert bad >= 1  # the 404, counted
            else:  # the places a size promised and the shard did not hold
                assert bad == (12 if sizes[1] else 0)


def test_a_worker_error_reaches_the_training_process_as_one_line(tiny_dataset, tmp_path):
    urls, _ = _shards(tiny_dataset, tmp_path, 12)
    empty = tmp_path / "empty.tar"
    with webdataset.TarWriter(str(empty)):
        pass
    with pytest.raises(UserError, match="no sample could be read from any of the 2 shard") as raised:
        _epoch([str(empty), str(empty)], 0, 1, 2, 4, 3, sizes=[12, 12])
    assert "Traceback" not in str(raised.value) and "worker" not in str(raised.value)
    with pytest.raises(UserError, match="no sample could be read") as raised:
        _epoch([str(empty), str(empty)], 0, 1, 2, 4, 3)  # sizes unknown
    assert "Traceback" not in str(raised.value)


def _noise_shard(path, count, side=200):
    """A shard of ``count`` noise PNGs (about 120 kB each) with .txt captions."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    with webdataset.TarWriter(str(path)) as writer:
        for i in range(count):
            image = Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
            writer.write({"__key__": f"{i:05d}", "png": png_bytes(image), "txt": f"noise {i}"})


def test_an_http_shard_over_5_mb_is_read_whole_from_a_server_without_range(tmp_path):
    from data.shard_source import shard_samples

    served = tmp_path / "served"
    served.mkdir()
    _noise_shard(served / "big.tar", 64)
    assert (served / "big.tar").stat().st_size > 7 * 2 ** 20
    with http_server(served) as base:  # python's http.server: no Range support
        keys = [sample["__key__"] for sample in shard_samples(base + "/big.tar", lambda error: False)]
        assert keys == [f"{i:05d}" for i in range(64)]
        epoch, dataset = _epoch([base + "/big.tar"], 0, 1, 2, 8, 8, keys=("txt",), sizes=[64])
    assert sorted(name for batch in epoch for name in batch) == sorted(f"noise {i}" for i in range(64))
    assert dataset.bad_samples() == 0


@contextlib.contextmanager
def _stalling_server(data, send_bytes):
    """A loopback HTTP server whose GET sends the first ``send_bytes`` of ``data``, then stalls."""
    import http.server
    import threading

    stalled = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _headers(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()

        def do_HEAD(self):
            self._headers()

        def do_GET(self):
            self._headers()
            self.wfile.write(data[:send_bytes])
            self.wfile.flush()
            stalled.wait(120)

    with http_server(handler=Handler) as base:
        try:
            yield base
        finally:
            stalled.set()


def test_an_http_shard_that_stalls_mid_body_is_cut_after_shard_timeout(tmp_path, caplog):
    import time

    _noise_shard(tmp_path / "s.tar", 16, side=64)
    data = (tmp_path / "s.tar").read_bytes()
    with _stalling_server(data, len(data) // 2) as base:
        started = time.monotonic()
        epoch, dataset = _epoch([base + "/s.tar"], 0, 1, 0, 2, 6, keys=("txt",), sizes=[16], timeout=2)
        assert time.monotonic() - started < 30  # not the client's default of 5 minutes
    names = [name for batch in epoch for name in batch]
    read = set(names)  # the samples before the stall; the epoch is filled by reading them again
    assert len(names) == 12 and 0 < len(read) < 12 and read == {f"noise {i}" for i in range(len(read))}
    assert dataset.bad_samples() == 12 - len(read)  # the places of its range it could not fill, counted
    assert "rest of the shard skipped" in caplog.text


def test_a_big_missing_shard_does_not_stop_a_slot_that_refills_from_a_small_one(tiny_dataset, tmp_path):
    urls, _ = _shards(tiny_dataset, tmp_path, 20)  # 20, 20, 8
    gone = str(tmp_path / "gone.tar")  # deleted after the sizes were taken: most of every pass is unreadable
    for epoch in range(4):
        batches, dataset = _epoch([urls[2], gone], 0, 1, 0, 2, 6, epoch=epoch, sizes=[8, 40])
        assert len(batches) == 6 and dataset.bad_samples() > 0  # the 8 samples, again and again


def _refusing_handler(status):
    """An HTTP handler that answers HEAD with a size and GET with ``status``."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self.send_response(200)
            self.send_header("Content-Length", "10240")
            self.end_headers()

        def do_GET(self):
            self.send_error(status)

    return Handler


def test_an_http_error_on_a_shard_get_is_skipped_and_counted(tiny_dataset, tmp_path):
    urls, _ = _shards(tiny_dataset, tmp_path, 12)
    with http_server(handler=_refusing_handler(503)) as base:
        epoch, dataset = _epoch([urls[0], base + "/busy.tar"], 0, 1, 2, 4, 6, sizes=[12, 12])
    assert len(epoch) == 6 and all(len(batch) == 4 for batch in epoch)
    assert dataset.bad_samples() == 12
