"""Restarts through the real scripts: resume auto, torchrun's elastic restart after one worker is killed, two
nodes, and the resume guard on shards' num-workers. One uninterrupted 2-process run is the torchrun tests'
reference."""
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from scripts.make_shards import main as make_shards
from tests.helpers import (ROOT, assert_same_checkpoints, child_processes, descendants, free_port, run_script,
                           train_args, wait_for_checkpoint)

# Every launch below trains with these: the same command line starts the run and continues it after a restart.
RUN = ("--epochs", "2", "--num-workers", "2", "--checkpoint-every-steps", "1", "--resume", "auto")
TORCHRUN = ("-m", "torch.distributed.run")
pytestmark = pytest.mark.slow  # every test here runs train.py


def launch(args, log, **environment):
    """Start ``python args`` in the repository, its output into the files ``log``.out and ``log``.err."""
    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
        # PYTHONFAULTHANDLER: a hung process prints every thread's stack when ``finished`` aborts it
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=out, stderr=err,
                                env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONFAULTHANDLER": "1",
                                     **environment})


def ended(process, log, timeout=180):
    """(exit code, stdout, stderr) of ``process`` once it has ended; a launcher still running after ``timeout``
    seconds is hung: its processes' stacks go into its log, then they are ended."""
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        hung = [*descendants(process.pid), process.pid]
        for sig in (signal.SIGABRT, signal.SIGKILL):
            for pid in hung:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(5)
        code = process.wait()
    with open(f"{log}.out") as out, open(f"{log}.err") as err:
        return code, out.read(), err.read()


def finished(process, log, timeout=180):
    """``process``'s stdout once it has ended with exit code 0 (its output's end in the failure message)."""
    code, stdout, stderr = ended(process, log, timeout)
    assert code == 0, f"exit code {code}\n{stdout[-2000:]}\n{stderr[-6000:]}"
    return stdout


@pytest.fixture(scope="module")
def two_process_run(tiny_checkpoint, tiny_dataset, tmp_path_factory):
    """2 processes on one node (gloo), never stopped: the first start of --resume auto."""
    out = tmp_path_factory.mktemp("two-processes")
    result = run_script(*TORCHRUN, "--nproc-per-node", "2", "--master-port", str(free_port()),
                        *train_args(tiny_checkpoint, tiny_dataset, out, *RUN))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resume auto: no {out / 'last.pt'} yet; starting from {tiny_checkpoint}" in result.stdout
    assert "2 processes x 8), 3 steps/epoch" in result.stdout
    return out


def test_torchrun_restarts_a_killed_worker_from_last_pt_and_ends_as_if_never_stopped(two_process_run, tiny_checkpoint,
                                                                                    tiny_dataset, tmp_path):
    out = tmp_path / "elastic"
    launcher = launch([*TORCHRUN, "--max-restarts", "3", "--nproc-per-node", "2", "--master-port", str(free_port()),
                       *train_args(tiny_checkpoint, tiny_dataset, out, *RUN)], tmp_path / "log")
    # after batch 1 of an epoch (of 3): the kill lands before the epoch's end, whatever the next step does
    state = wait_for_checkpoint(out / "last.pt", lambda state: (state.get("epoch-progress") or {}).get("batches") == 1,
                                launcher)
    workers = [pid for pid, environment in child_processes(launcher.pid).items() if environment.get("RANK") == "1"]
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)  # one worker, not the launcher
    stdout = finished(launcher, tmp_path / "log")
    assert stdout.count(f"resumed {out / 'last.pt'} at epoch {state['epoch']} after batch") == 1, stdout[-3000:]
    assert_same_checkpoints(two_process_run, out)


def test_two_nodes_of_one_process_train_as_one_node_of_two(two_process_run, tiny_checkpoint, tiny_dataset, tmp_path):
    # README's multi-node command, with 127.0.0.1 as HOST0 and one process per node. torchrun sets
    # OMP_NUM_THREADS=1 only for several processes per node (README's 8): with one, CPU kernels would use every
    # core, and another summation order rounds differently.
    out, port = tmp_path / "two-nodes", str(free_port())
    nodes = [launch([*TORCHRUN, "--nnodes", "2", "--node-rank", str(rank), "--master-addr", "127.0.0.1",
                     "--master-port", port, "--nproc-per-node", "1",
                     *train_args(tiny_checkpoint, tiny_dataset, out, *RUN)], tmp_path / f"node{rank}",
                    OMP_NUM_THREADS="1")
             for rank in (0, 1)]
    results = [ended(node, tmp_path / f"node{rank}") for rank, node in enumerate(nodes)]
    # both nodes' logs on a failure: a hang on one is often an error on the other
    assert [code for code, _, _ in results] == [0, 0], "\n".join(
        f"node {rank}: exit code {code}\n{stdout[-1500:]}\n{stderr[-4000:]}"
        for rank, (code, stdout, stderr) in enumerate(results))
    outputs = [stdout for _, stdout, _ in results]
    assert "distributed: gloo, 2 process(es)" in outputs[0] and "epoch 2/2" in outputs[0]
    assert "epoch 2/2" not in outputs[1]  # rank 0 alone reports
    assert_same_checkpoints(two_process_run, out)


def test_a_resume_from_shards_with_other_num_workers_is_refused_and_from_a_folder_allowed(
        two_process_run, tiny_checkpoint, tiny_dataset, tmp_path):
    # shards: batch k of an epoch comes from worker k % num-workers, each reading its own shards
    assert make_shards(["--data", str(tiny_dataset / "train"), "--out", str(tmp_path / "shards"),
                        "--samples-per-shard", "10", "--quiet"]) == 0
    out = tmp_path / "shards-run"
    args = [*train_args(tiny_checkpoint, tiny_dataset, out, "--epochs", "1", "--num-workers", "2", "--resume", "auto"),
            "--train-data", str(tmp_path / "shards" / "{00000..00004}.tar"), "--caption-key", "captions"]
    result = run_script(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    other = run_script(*args, "--num-workers", "1")  # at the run's end, not inside an epoch
    assert other.returncode == 2 and "Traceback" not in other.stderr, other.stderr[-3000:]
    assert "from shards with num-workers 2" in other.stderr and "Resume with --num-workers 2" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1, other.stderr

    # a folder's batches do not depend on the worker count: the 2-worker run continues with 1
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(two_process_run / "last.pt", folder / "last.pt")
    resumed = run_script(*train_args(tiny_checkpoint, tiny_dataset, folder, *RUN, "--num-workers", "1"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed {folder / 'last.pt'} at epoch 2" in resumed.stdout
