"""Several processes on the CPU (gloo, 2 processes), on a tiny WRN and fake shards:

* the slices of the global batch, the load-time check of the world size, the index ranges;
* a training stage launched the way the DVC stage runs it (`stages.train` starts torchrun), then
  resumed in one process, against one process all along;
* the loops and the evaluation inside a process group (torch.multiprocessing.spawn).
"""

import contextlib
import dataclasses
import io
import json
import os
import socket
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from dualat import artifacts, checkpoint, config, distributed, launch, model_io, stages
from dualat.config import ComputeConfig, ConfigError
from dualat.data import BatchStream
from dualat.evaluation import classification, counterfactuals, generation, ood_detection
from dualat.models import WideResNet
from dualat.records import NotComputed, read_record
from dualat.train import train_stage1
from tests.test_data import write_shards
from tests.test_evaluate import TinyNet
from tests.test_train import STAGE1, _data, _model, _test_xy

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
WORLD = 2
# quick cifar10, shrunk: 64 training images, p_ood = uniform noise, 4 stage-2 steps of a global batch of 8
TINY = {
    "data.n_train": 0, "data.n_test": 0, "data.ood": "noise", "data.n_ood": 64,
    "stage2.images": 32, "stage2.batch_size": 8, "stage2.eval_every_images": 16, "stage2.eval_fid_samples": 0,
    "stage2.eval_n": 8, "stage2.attack.steps": 1, "stage2.sampler.T_max": 2, "stage2.sampler.auc_window_images": 8,
    "stage2.sampler.auc_threshold": 0.0, "stage2.init": "plain",
    "sample.n_samples": 12, "sample.n_grid_samples": 4, "sample.steps_grid": [1, 2], "sample.steps.dualat": 2,
    "sample.fid_ref_n": 16, "sample.batch_size": 4, "sample.kid_subsets": 3, "sample.kid_subset_size": 4,
    "evaluate.batch_size": 4, "evaluate.autoattack_n": 8, "evaluate.pgd.steps": 2, "evaluate.ood_sets": ["noise"],
    "evaluate.ood_n": 8, "evaluate.ood_attack.steps": 2, "evaluate.cf_n": 12, "evaluate.cf_eps": [0.5, 2.0],
    "evaluate.cf_steps": 2,
}  # fmt: skip
AUTOATTACK_CHUNK = 4  # images per AutoAttack chunk in these tests: 2 chunks, one per process


def _cfg(root: Path, processes: int = 1, **overrides) -> config.Config:
    over = TINY | {"compute.nproc_per_node": processes} | overrides
    return dataclasses.replace(config.load(PARAMS, profile="quick", overrides=over), data_root=str(root))


def _fake_data(root: Path) -> Path:
    root.mkdir(parents=True)
    write_shards(root, "cifar10_train", [64])
    write_shards(root, "cifar10_test", [16])
    return root


def _init(folder: Path) -> Path:
    """A stage-1 result as the training stage leaves it: best.pt and a computed status."""
    torch.manual_seed(0)
    state = WideResNet(10, 1, 10).state_dict()
    path = checkpoint.save(folder / "best.pt", {"model": state, "plain": state})
    artifacts.write_status(folder, None)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert distributed.init_from_env() == (rank, WORLD)


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- the global batch, the world size, the index ranges ------------------------------------------


def test_rank_slices_make_the_global_batch_and_resume_across_world_sizes():
    ds = TensorDataset(torch.arange(20.0), torch.arange(20))
    one = BatchStream(ds, 8, 3)
    parts = [BatchStream(ds, 8, 3, part=(r, WORLD)) for r in range(WORLD)]
    for _ in range(5):  # over two epoch boundaries (2 batches an epoch)
        x, _ = next(one)
        assert torch.equal(torch.cat([next(p)[0] for p in parts]), x)
    assert parts[0].state_dict() == parts[1].state_dict() == one.state_dict()
    fresh = BatchStream(ds, 8, 3, part=(1, WORLD))  # a 2-process run resumed from a 1-process state
    fresh.load_state_dict(one.state_dict())
    assert torch.equal(next(fresh)[0], next(one)[0][4:])
    with pytest.raises(ValueError, match="global batch of 9 does not split evenly over 2 processes"):
        BatchStream(ds, 9, 0, part=(0, WORLD))


def test_world_size_is_checked_at_load():
    with pytest.raises(ConfigError, match=r"quick\.cifar10\.stage1\.batch_size is 64, the global batch.*3 processes"):
        config.load(PARAMS, profile="quick", overrides={"compute.nproc_per_node": 3})
    with pytest.raises(ConfigError, match=r"quick\.cifar10\.compute\.rdzv_endpoint must be host:port"):
        config.load(PARAMS, profile="quick", overrides={"compute.nnodes": 2})
    for bad in ("many", 0, True):
        with pytest.raises(ConfigError, match="compute.nproc_per_node"):
            config.load(PARAMS, profile="quick", overrides={"compute.nproc_per_node": bad})
    assert config.load(PARAMS, profile="quick", overrides={"compute.nproc_per_node": 4}).compute.nproc_per_node == 4
    assert config.world_size(ComputeConfig("auto", 2, "node0:29500"), gpus=4) == 8
    assert config.world_size(ComputeConfig("auto", 1, ""), gpus=0) == 1  # no CUDA: one process


def test_spans_are_the_batches_of_one_process_cut_in_rank_order(monkeypatch):
    for n, batch, world in ((150, 25, 2), (10, 4, 3), (3, 4, 2), (0, 4, 2)):
        one = [(s, min(s + batch, n)) for s in range(0, n, batch)]
        monkeypatch.setattr(distributed, "world_size", lambda w=world: w)
        cut = []
        for r in range(world):
            monkeypatch.setattr(distributed, "rank", lambda r=r: r)
            cut += distributed.spans(n, batch)
        assert cut == one


def test_torchrun_command_line():
    single = launch.torchrun_argv(ComputeConfig(2, 1, ""), 2, "x", Path("job.json"))
    assert single[1:5] == ["-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone"]
    assert single[-3:] == ["-m", "dualat.launch", "job.json"]
    several = launch.torchrun_argv(ComputeConfig(4, 2, "node0:29500"), 4, "dualat-train-m", Path("job.json"))
    assert {"--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29500", "--rdzv-id=dualat-train-m"} <= set(
        several
    )
    assert "--standalone" not in several


def test_run_on_several_nodes_prints_their_command_and_returns_rank_0s_result(tmp_path, monkeypatch, capsys):
    cfg = _cfg(tmp_path, 2, **{"compute.nnodes": 2, "compute.rdzv_endpoint": "node0:29500"})
    seen = {}

    def fake_torchrun(argv):  # what rank 0 of `python -m dualat.launch JOB` leaves beside the job
        job = Path(argv[-1])
        seen["job"] = json.loads(job.read_text())
        job.with_name("result.json").write_text(json.dumps({"computed": False, "reason": "not computed: x"}))

    monkeypatch.setattr(launch, "_stream", fake_torchrun)
    result = launch.run("train", cfg, tmp_path / "models" / "dualat", method="dualat")
    assert result["reason"].reason == "x"  # NotComputed comes back as such
    assert config.from_dict(seen["job"]["config"]) == cfg and seen["job"]["kwargs"] == {"method": "dualat"}
    printed = capsys.readouterr().out
    assert "other 1 nodes" in printed and "python -m torch.distributed.run --nproc-per-node=2 --nnodes=2" in printed
    assert "--rdzv-endpoint=node0:29500" in printed and not list((tmp_path / "models").iterdir())


def test_a_failed_launch_raises_with_its_last_lines(capsys):
    script = "import sys; print('step 1'); print('Traceback: boom', file=sys.stderr); sys.exit(3)"
    with pytest.raises(RuntimeError, match=r"(?s)torchrun failed \(exit 3\).*step 1.*Traceback: boom"):
        launch._stream([sys.executable, "-c", script])
    assert "step 1" in capsys.readouterr().out  # printed as it came


def test_every_group_hands_torchrun_the_arguments_of_its_function(tmp_path, monkeypatch):
    """What each entry point sends to `launch.run` binds to the function the processes call."""
    import inspect
    from importlib import import_module

    sent = {}
    monkeypatch.setattr(launch, "run", lambda job, cfg, where, **kw: sent.setdefault(job, (cfg, kw)))
    cfg, model = _cfg(tmp_path, 2), tmp_path / "m" / "final.pt"
    stages.train(cfg, "dualat", tmp_path / "out", init=model, ref_path=tmp_path / "ref.npz", stop_after=3)
    classification.accuracy(cfg, "dualat", model, tmp_path / "acc")
    generation.generation(cfg, "dualat", model, tmp_path / "ref.npz", tmp_path / "gen")
    counterfactuals.counterfactuals(cfg, "dualat", model, tmp_path / "cf", real_features_cache=tmp_path / "f.npz")
    ood_detection.ood(cfg, "dualat", model, tmp_path / "ood")
    assert set(sent) == set(launch.JOBS)
    for job, (got, kwargs) in sent.items():
        module, name = launch.JOBS[job].split(":")
        inspect.signature(getattr(import_module(module), name)).bind(got, **kwargs)
        assert got is cfg and all(v is None or isinstance(v, (str, int, bool)) for v in kwargs.values()), job
    assert sent["train"][1]["stop_after"] == 3 and sent["train"][1]["init"] == str(model)


# --- a training stage launched as under DVC: 2 processes, then resumed in 1 -----------------------


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Stage 2 (BN frozen) in one process, and the same run killed after 2 of its 4 steps in two
    torchrun processes started by `stages.train`, then resumed to the end in one process."""
    tmp = tmp_path_factory.mktemp("launched")
    root, init = _fake_data(tmp / "data"), _init(tmp / "standard_at")
    one = stages.train(_cfg(root, 1), "dualat", tmp / "one", init=init, progress=False)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        two = stages.train(_cfg(root, 2), "dualat", tmp / "two", init=init, stop_after=2)
    history_two = (tmp / "two" / "history.json").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # another number of processes must not set the run aside
        resumed = stages.train(_cfg(root, 1), "dualat", tmp / "two", init=init, progress=False)
    return tmp, one, two, resumed, printed.getvalue(), history_two


def test_launched_ood_evaluation_equals_one_process(launched):
    """An evaluation group started by its one call in two torchrun processes, as under DVC."""
    tmp = launched[0]
    model = tmp / "one" / "final.pt"
    one = ood_detection.ood(_cfg(tmp / "data", 1), "dualat", model, tmp / "ood1", progress=False)
    with contextlib.redirect_stdout(io.StringIO()):
        two = ood_detection.ood(_cfg(tmp / "data", 2), "dualat", model, tmp / "ood2", progress=False)
    assert one == two and set(one["sets"]) == {"noise"} and isinstance(one["sets"]["noise"]["max_prob"]["clean"], float)
    assert read_record(tmp / "ood2" / "ood.json")["extra"]["processes"] == 2


def test_launched_stage_prints_progress_and_leaves_one_process_files(launched):
    tmp, one, two, resumed, printed, _ = launched
    assert "stage 2: 2/4" in printed  # rank 0's progress lines, read from torchrun as they came
    assert two["computed"] and two["steps"] == 2 and resumed["steps"] == one["steps"] == 4
    assert sorted(p.name for p in (tmp / "two").iterdir()) == sorted(p.name for p in (tmp / "one").iterdir())
    assert not list(tmp.glob(".*launch*"))  # the job folder is removed
    assert checkpoint.load(tmp / "two" / "last.pt")["config"]["compute"]["nproc_per_node"] == 1


def test_two_processes_then_one_follow_the_one_process_trajectory(launched):
    """The global batch is drawn from one seeded order and the AUC is the global batch's: the run
    matches one process up to the order of floating-point sums (all-reduce, batch of 4 vs 8)."""
    tmp, one, _, resumed, _, history_two = launched
    a, b = read_record(tmp / "one" / "history.json"), read_record(tmp / "two" / "history.json")
    assert [h["T"] for h in a] == [h["T"] for h in b] and [h["auc"] for h in a] == [h["auc"] for h in b]
    for h1, h2 in zip(a, b):
        assert h1.keys() == h2.keys() and all(h1[k] == pytest.approx(h2[k], rel=1e-5, abs=1e-6) for k in h1)
    assert read_record(tmp / "two" / "history.json")[0] == json.loads(history_two)[0]
    w1, w2 = (checkpoint.load(tmp / run / "final.pt")["model"] for run in ("one", "two"))
    for k in w1:
        assert torch.allclose(w1[k].float(), w2[k].float(), atol=1e-6, rtol=1e-5), k
    assert resumed["T"] == one["T"]


# --- inside a process group (torch.multiprocessing.spawn) -----------------------------------------


def _pooled(x: torch.Tensor) -> np.ndarray:
    """A cheap stand-in for the Inception features: 4x4 average-pooled pixels (N, 48)."""
    return F.adaptive_avg_pool2d(x, 4).flatten(1).double().numpy()


def _evaluations(cfg: config.Config, tmp: Path, out: str) -> dict:
    """The four evaluation groups of the TinyNet at tmp/tiny/final.pt into tmp/<out>/<group>."""
    model_io.new_model = lambda cfg: TinyNet(cfg.data.num_classes)  # AutoAttack in seconds
    classification.AUTOATTACK_CHUNK = AUTOATTACK_CHUNK
    path, where = tmp / "tiny" / "final.pt", tmp / out
    return {
        "generation": generation.generation(
            cfg, "dualat", path, tmp / "ref" / "stats.npz", where / "generation", features=_pooled, progress=False
        ),
        "accuracy": classification.accuracy(cfg, "dualat", path, where / "accuracy", progress=False),
        "counterfactuals": counterfactuals.counterfactuals(
            cfg, "dualat", path, where / "counterfactuals", features=_pooled, progress=False
        ),
        "ood": ood_detection.ood(cfg, "dualat", path, where / "ood", progress=False),
    }


def _worker(rank: int, port: int, tmp: Path) -> None:
    _join(rank, port)
    try:
        out = {}
        model = _model()  # stage 1, BN in train mode: each rank normalises its slice
        stream = BatchStream(_data(), 8, 0, part=distributed.part())
        out["stage1"] = train_stage1(model, STAGE1, stream, 4, _test_xy(), tmp / f"stage1_rank{rank}", progress=False)
        out["stage1"]["state"] = model.state_dict()
        torch.manual_seed(rank)  # other weights and BN statistics on each rank, until wrap
        model = WideResNet(10, 1, 10)
        with torch.no_grad():
            model(torch.rand(4, 3, 32, 32))
        distributed.wrap(model)
        out["wrapped"] = model.state_dict()
        out |= _evaluations(_cfg(tmp / "data", 2), tmp, "eval2")
        torch.save(out, tmp / f"out{rank}.pt")
    finally:
        distributed.close()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    _fake_data(tmp / "data")
    torch.manual_seed(0)
    checkpoint.save(tmp / "tiny" / "final.pt", {"model": TinyNet().state_dict()})
    artifacts.write_status(tmp / "tiny", None)
    mp.spawn(_worker, args=(_free_port(), tmp), nprocs=WORLD, join=True)
    with torch.serialization.safe_globals([NotComputed]):  # the metrics' "not computed" cells, plain data
        return tmp, [torch.load(tmp / f"out{r}.pt", weights_only=True) for r in range(WORLD)]


def test_stage1_ranks_stay_identical_and_only_rank_0_writes(spawned):
    tmp, (r0, r1) = spawned
    assert r0["stage1"]["history"] == r1["stage1"]["history"] and r0["stage1"]["best"] == r1["stage1"]["best"]
    assert _equal(r0["stage1"]["state"], r1["stage1"]["state"])  # BN buffers too (averaged)
    assert _equal(r1["stage1"]["state"], checkpoint.load(tmp / "stage1_rank0" / "last.pt")["model"])
    assert (tmp / "stage1_rank0" / "history.json").exists() and not (tmp / "stage1_rank1").exists()
    assert r0["stage1"]["steps"] == 8  # 32 images, global batch 8, 2 epochs: as in one process


def test_wrap_copies_rank_0_weights_and_buffers(spawned):
    _, (r0, r1) = spawned
    assert _equal(r0["wrapped"], r1["wrapped"])


def _same(a, b, rel: float = 1e-12) -> bool:
    """Equal, floats to `rel`: KID's kernel matrices (numpy's BLAS) differ in the last bits from
    one process to another even on equal features (summation order of the BLAS kernels)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k], rel) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=rel, abs=1e-15)
    return a == b


@pytest.fixture(scope="module")
def one_process(spawned):
    tmp, _ = spawned
    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(model_io, "new_model", model_io.new_model)  # restored afterwards
        mp_.setattr(classification, "AUTOATTACK_CHUNK", classification.AUTOATTACK_CHUNK)
        return _evaluations(_cfg(tmp / "data", 1), tmp, "eval1")


@pytest.mark.parametrize("group", ["generation", "accuracy", "counterfactuals", "ood"])
def test_evaluation_split_over_processes_equals_one_process(spawned, one_process, group):
    """Each group split by index ranges (AutoAttack by whole chunks), merged in item order: the
    same metrics as one process, FIDs and accuracies to the last bit (KID: see `_same`)."""
    tmp, (r0, r1) = spawned
    assert _same(r0[group], r1[group]) and _same(r0[group], one_process[group])
    rec1, rec2 = (read_record(tmp / out / group / f"{group}.json") for out in ("eval1", "eval2"))
    assert _same(rec1["metrics"], rec2["metrics"])
    assert rec2["extra"]["processes"] == 2 and rec1["extra"]["processes"] == 1
    exact = {
        "generation": ("fid_conditional", "fid_unconditional", "grid"),
        "accuracy": ("clean_acc", "pgd_acc", "autoattack", "ece"),
        "counterfactuals": ("fid", "confidence", "per_class_fid"),
        "ood": ("sets",),
    }[group]
    for key in exact:
        assert r0[group][key] == one_process[group][key], key
    pngs = {"generation": "samples_conditional.png", "counterfactuals": "counterfactuals.png"}
    pngs |= {"accuracy": "reliability.png"}
    if group in pngs:
        assert (tmp / "eval1" / group / pngs[group]).read_bytes() == (tmp / "eval2" / group / pngs[group]).read_bytes()
