"""Every dataset layout module: importing them registers them (data/sources.py). A new layout is one module
imported here."""
from data import folder_layout  # noqa: F401
from data import shard_layout  # noqa: F401
from data import files_layout  # noqa: F401
from data import parquet_layout  # noqa: F401
from data import cn_clip_layout  # noqa: F401
