"""The index folder's temporary files: every writer uses utils.atomic_file's convention (temporary file,
fsync, rename), so index.py's sweep removes whatever a killed write left."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from retrieval.vector_search import VectorIndex
from tests.helpers import ROOT, run_script
from utils.atomic_file import TEMPORARY_PREFIX

# A save killed between writing its temporary file and the rename (as a SIGKILL there would leave it).
KILLED_SAVE = """
import os, signal, sys
import numpy as np
from retrieval.vector_search import VectorIndex
os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
VectorIndex(np.eye(8, dtype=np.float32), "faiss-flat").save(sys.argv[1])
"""


def test_vector_index_save_writes_a_temporary_file_fsyncs_and_renames_it(tmp_path, monkeypatch):
    import faiss

    events, fsync, replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a), str(b))), replace(a, b))[1])
    path = tmp_path / "vectors.faiss"
    VectorIndex(np.eye(8, dtype=np.float32), "faiss-flat").save(str(path))
    [(_, temporary, target)] = [event for event in events if event[0] == "replace"]
    assert target == str(path) and os.path.basename(temporary).startswith(TEMPORARY_PREFIX)  # what the sweep removes
    assert events.index(("fsync", temporary)) < events.index(("replace", temporary, target))
    assert events[-1] == ("fsync", str(tmp_path))  # the rename made durable
    assert os.listdir(tmp_path) == ["vectors.faiss"] and faiss.read_index(str(path)).ntotal == 8


@pytest.mark.slow
def test_the_next_index_py_run_removes_what_a_killed_vector_index_save_left(tiny_checkpoint, tiny_dataset, tmp_path):
    out = tmp_path / "idx"
    args = ("index.py", "--model-path", str(tiny_checkpoint), "--data", str(tiny_dataset / "valid"), "--out", str(out),
            "--search", "faiss-flat", "--batch-size", "16")
    result = run_script(*args)
    assert result.returncode == 0, result.stderr
    files = sorted(os.listdir(out))
    assert "vectors.faiss" in files
    killed = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(out / "vectors.faiss")], cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL
    assert len(os.listdir(out)) == len(files) + 1  # its temporary file
    result = run_script(*args)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == files
