"""Run a stage function on every GPU with torchrun, from the notebook's one call.

`stages.train` and the evaluation groups (accuracy, generation, counterfactuals, ood) begin with

    if launch.wanted(cfg):
        return launch.run("train", cfg, out_dir, method=method, ...)

When `cfg.compute` asks for more than one process and this process is not already one of
torchrun's, `run` starts `python -m torch.distributed.run ... -m dualat.launch JOB` (the same
stage function in every process, `distributed.init_from_env` joining them), prints the children's
output line by line as it comes (the executed notebook records it), and returns what rank 0's
call returned. The files are those of one process: rank 0 writes them (docs/gpus.md).

JOB is a JSON file with the job's name, the whole config (`config.to_dict`, so a config changed in
code, e.g. by overrides, is the one that runs) and the keyword arguments; it lies in a hidden
folder beside the output folder, removed afterwards (with several nodes the repository must be
on a shared file system; `run` prints the command the other nodes run).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from importlib import import_module
from pathlib import Path
from typing import Any

from dualat import config, distributed, progress
from dualat.config import Config
from dualat.records import atomic_open, dumps_strict, read_record

# job name -> "module:function"; each takes (cfg, **kwargs) and returns a JSON-ready value
JOBS = {
    "train": "dualat.stages:train",
    "accuracy": "dualat.evaluation.classification:accuracy",
    "generation": "dualat.evaluation.generation:generation",
    "counterfactuals": "dualat.evaluation.counterfactuals:counterfactuals",
    "ood": "dualat.evaluation.ood_detection:ood",
}
PACKAGE_PARENT = Path(__file__).resolve().parents[1]


def wanted(cfg: Config) -> bool:
    """True when `cfg.compute` asks for more than one process and this is not one of torchrun's."""
    return "RANK" not in os.environ and config.world_size(cfg.compute) > 1


def run(job: str, cfg: Config, where: str | Path, **kwargs: Any) -> Any:
    """Run JOBS[job](cfg, **kwargs) in the processes of `cfg.compute` and return rank 0's result.
    `where` (the job's output folder) places the job file; kwargs must be JSON values or paths."""
    world = config.world_size(cfg.compute)
    config.check_world(cfg, cfg.data.dataset, world)  # "auto" is resolved only now
    where = Path(where)
    where.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{where.name}.launch-", dir=where.parent))
    try:
        job_path = folder / "job.json"
        job_path.write_text(dumps_strict({"job": job, "config": config.to_dict(cfg), "kwargs": kwargs}))
        argv = torchrun_argv(cfg.compute, world // cfg.compute.nnodes, _run_id(job, where), job_path)
        if cfg.compute.nnodes > 1:
            print(f"on each of the other {cfg.compute.nnodes - 1} nodes, from the repository root, run:")
            print("  python " + shlex.join(argv[1:]), flush=True)
        _stream(argv)
        return read_record(folder / "result.json")  # NotComputed values come back as such
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def torchrun_argv(compute: config.ComputeConfig, per_node: int, run_id: str, job_path: Path) -> list[str]:
    """The torchrun command line: --standalone on one node, else a c10d rendezvous at the endpoint."""
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={per_node}"]
    if compute.nnodes == 1:
        argv.append("--standalone")
    else:
        argv += [f"--nnodes={compute.nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={compute.rdzv_endpoint}"]
        argv.append(f"--rdzv-id={run_id}")
    return argv + ["-m", "dualat.launch", str(job_path)]


def _run_id(job: str, out_dir: str | Path) -> str:
    """A rendezvous id the nodes agree on: the job and its output folder."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"dualat-{job}-{Path(out_dir).as_posix()}").strip("-")


def _stream(argv: list[str], keep: int = 40) -> None:
    """Run `argv`, printing its merged stdout/stderr line by line; raise with the last `keep`
    lines when it fails."""
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH", "")]))
    tail: deque[str] = deque(maxlen=keep)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail.append(line)
    if proc.returncode:
        raise RuntimeError(
            f"torchrun failed (exit {proc.returncode}): {shlex.join(argv)}\nlast lines:\n" + "".join(tail)
        )


def main(argv: list[str]) -> None:
    """One torchrun process: join the group, run the job, rank 0 writes result.json beside the job."""
    job_path = Path(argv[0])
    spec = json.loads(job_path.read_text())
    distributed.init_from_env()
    if not distributed.is_main():
        os.environ[progress.ENV] = "off"  # one progress report: rank 0's
    module, name = JOBS[spec["job"]].split(":")
    result = getattr(import_module(module), name)(config.from_dict(spec["config"]), **spec["kwargs"])
    if distributed.is_main():
        with atomic_open(job_path.with_name("result.json")) as f:
            f.write(dumps_strict(result))
    distributed.close()  # not after an error: torchrun stops the other ranks


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record  # the failing rank's traceback

    record(main)(sys.argv[1:])
