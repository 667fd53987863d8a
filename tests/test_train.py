import dataclasses
import json

import pytest
import torch
from torch.utils.data import TensorDataset

from dualat import checkpoint
from dualat.attacks import pgd_ce
from dualat.config import AttackConfig, EMAConfig, OptimConfig, RatioConfig, SamplerConfig, Stage1Config, Stage2Config
from dualat.data import BatchStream
from dualat.losses import at_ce, bce_energy
from dualat.models import WideResNet
from dualat.sampling import sample_conditional
from dualat.train import NonFiniteLoss, Run, freeze_bn, stage2_step, train_stage1, train_stage2

ATTACK = AttackConfig(eps=0.5, step_size=0.2, steps=2, variant="ratio", momentum=0.9)
PLAIN = dataclasses.replace(ATTACK, variant="plain", momentum=0.0)
OPTIM = OptimConfig(
    lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="cosine", milestones=(), gamma=0.1
)
EMA = EMAConfig(enabled=True, decay=0.9, warmup=True)
STAGE1 = Stage1Config(
    epochs=2, batch_size=8, optim=OPTIM, ema=EMA, attack=ATTACK, eval_every_epochs=1, eval_n=0, seed=0
)
SAMPLER = SamplerConfig(
    step_size=0.1, T_max=3, curriculum="auc", auc_threshold=0.5, auc_window_images=16, loss_threshold=0.5,
    bce_reduction="sum_of_means", augmentation="crop_flip", curriculum_lag=0,
)  # fmt: skip
STAGE2 = Stage2Config(
    images=64, batch_size=8, init="ema", optim=dataclasses.replace(OPTIM, lr=0.01, schedule="constant"), ema=EMA,
    attack=PLAIN, sampler=SAMPLER, eval_every_images=32, eval_fid_samples=0, eval_n=0, fused=True,
    amp_bf16=False, channels_last=False, seed=0, ablation_kinds=("crop_flip",), ablation_images=64,
)  # fmt: skip
RATIO = RatioConfig(
    at_weight=0.5, lam=0.5, ood_attack=dataclasses.replace(ATTACK, eps=1.0), ood_augmentation="generative"
)


def _data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))


def _test_xy():
    ds = _data(16, seed=9)
    return ds.tensors


def _model():
    torch.manual_seed(0)
    return WideResNet(10, 1, 10)


def _streams(seed=0):
    return (
        BatchStream(_data(), 8, seed),
        BatchStream(_data(seed=1), 8, seed + 1),
        BatchStream(_data(seed=2), 8, seed + 2),
    )


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("ratio", [None, RATIO], ids=["standard_at", "ratio"])
def test_stage1_resume_equals_uninterrupted(tmp_path, ratio):
    full = _model()
    s, _, o = _streams()
    train_stage1(full, STAGE1, s, 4, _test_xy(), tmp_path / "full", ratio=ratio, ood_stream=o, progress=False)
    part = _model()
    s, _, o = _streams()
    train_stage1(
        part,
        STAGE1,
        s,
        4,
        _test_xy(),
        tmp_path / "part",
        ratio=ratio,
        ood_stream=o,
        checkpoint_every=1,
        stop_after=3,
        progress=False,
    )
    resumed = _model()  # a fresh process: new model, new streams, state from last.pt
    s, _, o = _streams()
    result = train_stage1(
        resumed, STAGE1, s, 4, _test_xy(), tmp_path / "part", ratio=ratio, ood_stream=o, progress=False
    )
    assert result["steps"] == 8
    assert _same_weights(full, resumed)
    a = checkpoint.load(tmp_path / "full" / "best.pt")["model"]
    b = checkpoint.load(tmp_path / "part" / "best.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stage1_keeps_bn_in_train_mode_and_updates_stats(tmp_path):
    model = _model()
    before = model.bn1.running_mean.clone()
    s, _, _ = _streams()
    train_stage1(model, dataclasses.replace(STAGE1, epochs=1), s, 4, _test_xy(), tmp_path, progress=False)
    assert not torch.equal(before, model.bn1.running_mean)


def test_bn_stays_frozen_in_stage2_even_under_train(tmp_path):
    model = _model()
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 32, 32))  # non-default running statistics
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    c, g, o = _streams()
    train_stage2(model, STAGE2, c, g, o, _test_xy(), tmp_path, progress=False)
    model.train()
    model(torch.rand(4, 3, 32, 32))
    for k, v in buffers.items():
        assert torch.equal(model.state_dict()[k], v), k
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not m.training for m in bns)  # the hook re-asserted eval mode during forward
    w0 = model.bn1.weight.clone()
    assert model.bn1.weight.requires_grad and torch.equal(w0, model.bn1.weight)


@pytest.mark.parametrize("lag", [0, 1])
def test_stage2_resume_equals_uninterrupted(tmp_path, lag):
    cfg = dataclasses.replace(STAGE2, sampler=dataclasses.replace(SAMPLER, curriculum_lag=lag))
    full = _model()
    c, g, o = _streams()
    r_full = train_stage2(full, cfg, c, g, o, _test_xy(), tmp_path / "full", progress=False)
    part = _model()
    c, g, o = _streams()
    train_stage2(part, cfg, c, g, o, _test_xy(), tmp_path / "part", checkpoint_every=1, stop_after=5, progress=False)
    resumed = _model()
    c, g, o = _streams()
    r_res = train_stage2(resumed, cfg, c, g, o, _test_xy(), tmp_path / "part", progress=False)
    assert _same_weights(full, resumed)
    assert r_full["T"] == r_res["T"] and [h["T"] for h in r_full["history"]] == [h["T"] for h in r_res["history"]]


def test_stage2_single_pass_gradients_equal_separate_passes():
    """The loss pass on cat([x_adv, x_hat, x_T]) gives the gradients of three separate passes."""
    model = freeze_bn(_model())
    c, g, o = _streams()
    x, y = next(c)
    x_hat, y_hat = next(g)
    x0, _ = next(o)
    grads = []
    for fused in (True, False):
        m = freeze_bn(_model())
        m.load_state_dict(model.state_dict())
        opt = torch.optim.SGD(m.parameters(), lr=0.0)  # lr 0: keep weights, read gradients
        cfg = dataclasses.replace(STAGE2, fused=fused)
        if fused:
            stage2_step(m, opt, cfg, (x, y, x_hat, y_hat, x0), T=3)
        else:  # reference: attack and sampler apart, three separate loss passes
            x_adv, x_T = pgd_ce(m, x, y, PLAIN), sample_conditional(m, x0, y_hat, 3, SAMPLER.step_size)
            opt.zero_grad()
            (at_ce(m(x_adv), y)[0] + bce_energy(m(x_hat), m(x_T))[0]).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = _model()
    s, _, _ = _streams()
    train_stage1(model, STAGE1, s, 4, _test_xy(), tmp_path, stop_after=4, progress=False)
    good = checkpoint.load(tmp_path / "last.pt")
    poisoned = _data()
    poisoned.tensors[0][:] = float("nan")  # the resumed run meets NaN inputs
    with pytest.raises(NonFiniteLoss, match="last good checkpoint"):
        s = BatchStream(poisoned, 8, 0)
        train_stage1(_model(), STAGE1, s, 4, _test_xy(), tmp_path, progress=False)
    after = checkpoint.load(tmp_path / "last.pt")
    assert after["step"] == good["step"] == 4
    assert all(torch.equal(good["model"][k], after["model"][k]) for k in good["model"])


def test_resume_with_other_settings_starts_afresh_and_keeps_the_old_run(tmp_path):
    out = tmp_path / "run"
    s, _, _ = _streams()
    train_stage1(_model(), STAGE1, s, 4, _test_xy(), out, stop_after=2, checkpoint_every=1, progress=False)
    old = checkpoint.load(out / "last.pt")
    s, _, _ = _streams()
    with pytest.warns(UserWarning, match=r"other settings.*stage1\.epochs: 2 -> 1"):
        result = train_stage1(_model(), dataclasses.replace(STAGE1, epochs=1), s, 4, _test_xy(), out, progress=False)
    assert result["steps"] == 4  # a full fresh run of the new settings, not a continuation
    (kept,) = (tmp_path / "run.superseded").iterdir()
    assert checkpoint.load(kept / "last.pt")["step"] == old["step"] == 2


def test_stage2_selects_best_fid_and_best_accuracy_of_the_ema_weights(tmp_path):
    cfg = dataclasses.replace(STAGE2, eval_fid_samples=5)
    fids, seen = iter([3.0, 5.0]), []  # the best FID is not the last one

    def fid_fn(model, n):
        seen.append((model, n))
        return next(fids)

    model = _model()
    c, g, o = _streams()
    result = train_stage2(model, cfg, c, g, o, _test_xy(), tmp_path, fid_fn=fid_fn, progress=False)
    history = result["history"]
    assert [h["step"] for h in history] == [4, 8] and [h["fid"] for h in history] == [3.0, 5.0]
    assert all(m is not model and n == 5 for m, n in seen)  # the EMA model, as the history says
    best_fid = checkpoint.load(tmp_path / "best_fid.pt")
    assert best_fid["step"] == 4 and best_fid["metrics"] == history[0]
    best_acc = max(history, key=lambda h: h["robust_acc"])  # the first of equals: a strict improvement
    assert checkpoint.load(tmp_path / "best_acc.pt")["metrics"] == best_acc
    assert result["best"] == {
        "fid": 3.0,
        "robust_acc": best_acc["robust_acc"],
        "fid_step": 4,
        "acc_step": best_acc["step"],
    }
    final = checkpoint.load(tmp_path / "final.pt")
    assert final["metrics"] == history[-1] and not torch.equal(
        final["model"]["fc.weight"], best_fid["model"]["fc.weight"]
    )


def test_stage1_best_is_the_record_with_the_best_robust_accuracy(tmp_path):
    cfg = dataclasses.replace(STAGE1, epochs=3)
    s, _, _ = _streams()
    result = train_stage1(_model(), cfg, s, 4, _test_xy(), tmp_path, progress=False)
    history = result["history"]
    assert [h["step"] for h in history] == [4, 8, 12] and [h["epoch"] for h in history] == [1.0, 2.0, 3.0]
    best = max(history, key=lambda h: h["robust_acc"])
    assert result["best"] == best and checkpoint.load(tmp_path / "best.pt")["metrics"] == best
    assert json.loads((tmp_path / "history.json").read_text()) == history


def test_training_records_a_few_progress_lines_when_not_watched(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DUALAT_PROGRESS", "lines")
    s, _, _ = _streams()
    train_stage1(_model(), STAGE1, s, 4, _test_xy(), tmp_path / "one", progress=True)
    c, g, o = _streams()
    train_stage2(_model(), STAGE2, c, g, o, _test_xy(), tmp_path / "two", progress=True)
    lines = capsys.readouterr().out.splitlines()
    stage1, stage2 = [x for x in lines if x.startswith("stage 1:")], [x for x in lines if x.startswith("stage 2:")]
    assert len(stage1) + len(stage2) == len(lines) and 2 <= len(stage1) <= 6 and 2 <= len(stage2) <= 6
    assert stage1[-1].startswith("stage 1: 8/8 (100%)") and "robust=" in stage1[-1]
    assert stage2[-1].startswith("stage 2: 8/8 (100%)") and "T=" in stage2[-1]


class _Killed(Exception):
    """Stands for a kill right after a checkpoint."""


def _kill_after_checkpoint_at(step, monkeypatch):
    """Make Run.checkpoint end the process (raise _Killed) once last.pt of `step` is written."""
    original = Run.checkpoint

    def checkpoint_then_die(self):
        original(self)
        if self.step == step:
            raise _Killed

    monkeypatch.setattr(Run, "checkpoint", checkpoint_then_die)


def _selected_metrics(folder):
    return {p.name: checkpoint.load(p)["metrics"] for p in sorted(folder.glob("*.pt")) if p.name != "last.pt"}


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_resumed_history_equals_uninterrupted(tmp_path, monkeypatch, stage):
    """Killed after a checkpoint between two evaluations (step 6; evaluations at 4 and 8), the
    resumed run logs the same history, byte for byte, and stores the same selected metrics: the
    batch statistics summed since the last evaluation are part of last.pt."""

    def train(out, **kw):
        c, g, o = _streams()
        if stage == "stage1":
            return train_stage1(_model(), STAGE1, c, 4, _test_xy(), out, progress=False, **kw)
        return train_stage2(_model(), STAGE2, c, g, o, _test_xy(), out, progress=False, **kw)

    full = train(tmp_path / "full")
    with monkeypatch.context() as m:
        _kill_after_checkpoint_at(6, m)
        with pytest.raises(_Killed):
            train(tmp_path / "part", checkpoint_every=3)
    assert checkpoint.load(tmp_path / "part" / "last.pt")["step"] == 6
    resumed = train(tmp_path / "part", checkpoint_every=3)
    assert [h["step"] for h in full["history"]] == [4, 8]
    assert (tmp_path / "part" / "history.json").read_bytes() == (tmp_path / "full" / "history.json").read_bytes()
    assert resumed["history"] == full["history"] and resumed["best"] == full["best"]
    assert _selected_metrics(tmp_path / "part") == _selected_metrics(tmp_path / "full")
