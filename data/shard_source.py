"""Where webdataset shards are: a pattern (with brace expansion), several joined with '::', local or fsspec
URLs, how many samples they hold (sizes.json, img2dataset's *_stats.json, or the train-num-samples key), and
reading one from start to end."""
import json
import logging
import os
import posixpath

from utils.errors import UserError, first_line

logger = logging.getLogger(__name__)
SOURCE_SEPARATOR = "::"
URL_SCHEMES = ("file://", "http://", "https://", "s3://", "gs://", "gcs://")
DEFAULT_TIMEOUT = 60.0  # seconds an http(s) shard may stall before the rest of it is skipped (shard-timeout)


def is_shard_source(value):
    """Whether a train-data / valid-data value names shards (else: a dataset folder)."""
    return any(part.strip().endswith(".tar") or part.strip().startswith(URL_SCHEMES)
               for part in value.split(SOURCE_SEPARATOR))


def expand_shards(value):
    """Every shard URL of ``value``, in order: each '::'-separated part brace-expanded
    ('dir/{00000..00099}.tar'). UserError for an empty part or a pattern that names no .tar file."""
    return [url for source in expand_sources(value) for url in source]


def shard_weights(value, weights):
    """One sampling weight per shard URL of ``value``: each source's weight from ``weights`` ('1::3', one per
    '::' source, as open_clip's upsampling factors) given to every shard of that source."""
    sources = expand_sources(value)
    try:
        factors = [float(part) for part in weights.split(SOURCE_SEPARATOR)]
    except ValueError:
        raise UserError(f"train-data-weights: expected numbers joined with '::', got '{weights}'") from None
    if len(factors) != len(sources) or any(not factor > 0 for factor in factors):
        raise UserError(f"train-data-weights: give {len(sources)} positive number(s) joined with '::', one per "
                        f"train-data source; got '{weights}'")
    return [factor for factor, source in zip(factors, sources) for _ in source]


def expand_sources(value):
    """The shard URLs of each '::'-separated source of ``value``, brace-expanded."""
    import braceexpand

    sources = []
    for part in value.split(SOURCE_SEPARATOR):
        part = part.strip()
        if not part:
            raise UserError(f"'{value}': an empty source between '{SOURCE_SEPARATOR}'")
        try:
            expanded = list(braceexpand.braceexpand(part))
        except ValueError as error:  # unbalanced braces and the like
            raise UserError(f"'{part}': not a shard pattern ({first_line(error)})") from None
        bad = [url for url in expanded if not url.endswith(".tar")]
        if bad:
            raise UserError(f"'{part}' expands to '{bad[0]}', which is no .tar shard (give a dataset folder, or "
                            f"shards such as dir/{{00000..00099}}.tar)")
        sources.append(expanded)
    return sources


def open_shard(url, timeout=DEFAULT_TIMEOUT):
    """A binary stream of one shard: local paths directly, URLs through fsspec (s3://, gs://, http(s):// need
    their fsspec protocol package, e.g. s3fs).

    http(s) shards are streamed in one request (no block cache of range requests, which a server without
    Range support answers with the first block only), and a connection or read that stalls ``timeout``
    seconds raises TimeoutError (an OSError) instead of waiting for the client's default of minutes."""
    if not url.startswith(URL_SCHEMES):
        return open(url, "rb")
    import fsspec

    options, http_errors = {}, ()
    if url.startswith(("http://", "https://")):
        import aiohttp

        options = {"block_size": 0, "client_kwargs": {"timeout": aiohttp.ClientTimeout(
            total=None, sock_connect=timeout, sock_read=timeout)}}
        http_errors = (aiohttp.ClientError,)  # e.g. a 5xx or 403 on the GET after the HEAD went through
    try:
        return fsspec.open(url, "rb", **options).open()
    except (ImportError, ValueError) as error:  # no package for the protocol, or an unknown protocol
        raise UserError(f"reading '{url}' needs an fsspec protocol package (aiohttp for http(s), s3fs, gcsfs): "
                        f"{first_line(error)}") from None
    except http_errors as error:
        raise OSError(f"{url}: {first_line(error) or type(error).__name__}") from None


def shard_samples(url, handler, timeout=DEFAULT_TIMEOUT):
    """The samples of one shard as webdataset groups its files (dicts keyed by lower-cased extension, plus
    __key__, __url__ and __members__: {extension: the member's own name in the tar}, e.g. {"jpg":
    "a/IMG_1.JPG"}); ``handler(error)`` decides on read errors inside the tar (True: go on). The shard is
    closed when the iteration ends or stops; opening it may raise OSError or UserError."""
    from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_expander

    members = {}

    def split_and_remember(name):
        prefix, suffix = base_plus_ext(name)
        if prefix is not None:
            members.setdefault(prefix, {})[suffix.lower()] = name
        return prefix, suffix

    with open_shard(url, timeout) as stream:
        files = tar_file_expander([{"url": url, "stream": stream}], handler=handler)
        for sample in group_by_keys(files, keys=split_and_remember, handler=handler):
            sample["__members__"] = members.pop(sample["__key__"], {})
            yield sample


def _read_json(url, timeout=DEFAULT_TIMEOUT):
    """The JSON at ``url`` as a dict, or None when there is none or it is not a JSON object."""
    try:
        with open_shard(url, timeout) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def shard_sizes(urls, per_shard_stats=True, timeout=DEFAULT_TIMEOUT):
    """Samples per shard, from sizes.json beside the shards (open_clip's convention) or, with
    ``per_shard_stats``, from img2dataset's NNNNN_stats.json ("successes"); None where neither says. One read
    per folder for sizes.json, one per shard for a stats file."""
    folders = {}
    sizes = []
    for url in urls:
        folder, name = posixpath.split(url) if url.startswith(URL_SCHEMES) else os.path.split(url)
        if folder not in folders:
            join = posixpath.join if url.startswith(URL_SCHEMES) else os.path.join
            folders[folder] = _read_json(join(folder, "sizes.json"), timeout) or {}
        size = folders[folder].get(name)
        if size is None and per_shard_stats:
            join = posixpath.join if url.startswith(URL_SCHEMES) else os.path.join
            stats = _read_json(join(folder, name[:-len(".tar")] + "_stats.json"), timeout)
            size = stats.get("successes") if isinstance(stats, dict) else None
        sizes.append(int(size) if isinstance(size, int) and size >= 0 else None)
    return sizes


def checked_shards(value, timeout=DEFAULT_TIMEOUT):
    """The shard URLs of ``value``, after checking that the local ones exist and the first remote one opens
    (here, not in every data-loading worker: a protocol package missing, a server down). UserError if not."""
    urls = expand_shards(value)
    local_missing = [url for url in urls if not url.startswith(URL_SCHEMES) and not os.path.isfile(url)]
    if local_missing:
        raise UserError(f"shard '{local_missing[0]}' not found ({len(local_missing)} of {len(urls)} missing)")
    remote = next((url for url in urls if url.startswith(URL_SCHEMES)), None)
    if remote:
        try:
            open_shard(remote, timeout).close()
        except OSError as error:
            raise UserError(f"cannot read shard '{remote}': {first_line(error) or type(error).__name__}") from None
    return urls


def epoch_samples(value, num_samples=None, timeout=DEFAULT_TIMEOUT):
    """(shard URLs, samples per epoch, samples per shard or None where unknown) of a shard source.
    ``num_samples`` (train-num-samples) wins for the epoch; otherwise every shard's size must be known.
    UserError naming a missing shard or the missing sizes."""
    urls = checked_shards(value, timeout)
    # with train-num-samples set, sizes only make the epoch exact: a stats file per remote shard is not worth it
    remote = any(url.startswith(URL_SCHEMES) for url in urls)
    sizes = shard_sizes(urls, per_shard_stats=not (num_samples and remote), timeout=timeout)
    if num_samples:
        return urls, num_samples, sizes
    unknown = [url for url, size in zip(urls, sizes) if size is None]
    if unknown:
        raise UserError(f"the number of samples in '{unknown[0]}' is unknown (no sizes.json or "
                        f"{os.path.basename(unknown[0])[:-4]}_stats.json beside it): set train-num-samples")
    return urls, sum(sizes), sizes
