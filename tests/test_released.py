"""Released checkpoints by name (dualat.released) and the T=50 variant of the paper profile.

The whole path runs offline: a file in the released state-dict layout (a quick-profile WRN saved
with DataParallel's `module.` prefix) is registered under a test name with a file:// URL, downloaded,
hash-recorded, resolved through `evaluate.checkpoints.dualat: released:<name>`, evaluated, and
compared with its reported numbers; a changed file is refused."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dualat import config, model_io, paper_values, released
from dualat.records import read_record, sha256_file
from tests.conftest import shared_data_root

REPO = Path(__file__).resolve().parents[1]
_ENV_DATA = Path(os.environ.get("DUALAT_DATA", "/nonexistent"))
ROOT = shared_data_root() or (_ENV_DATA if (_ENV_DATA / "cifar10_test_00.npz").exists() else None)


def _pooled(x: torch.Tensor) -> np.ndarray:
    """A stand-in for the Inception features: 4x4 average-pooled pixels (N, 48)."""
    return F.adaptive_avg_pool2d(x, 4).flatten(1).double().numpy()


def test_registry_holds_the_published_facts():
    reg = released.REGISTRY
    assert {f"dualat-cifar10-t40-seed{s}" for s in range(3)} | {"dualat-cifar10-t50", "ratio-cifar10"} <= set(reg)
    for name, e in reg.items():
        assert e.dataset in config.DATASETS and e.method in config.METHODS and e.published and e.file_name
        assert e.url == "", f"{name}: no direct URL was verified, so none may be listed"
        assert "191 entries" in e.layout and e.arch == ("wrn", 34, 10)
        if name.endswith(("t40-seed0", "-t45-seed0")) or name.startswith(("ratio", "standard-at")):
            assert e.sample_steps == paper_values.RELEASED_SAMPLE_STEPS[e.method][e.dataset]
    assert reg["dualat-cifar10-t50"].sample_steps == 35
    assert reg["dualat-cifar10-t50"].reported["authors' later report (T=50)"] == {
        "clean_acc": 90.72, "robust_acc": 74.65, "fid": 7.57,
    }  # fmt: skip
    ratio = reg["ratio-cifar10"]
    assert ratio.robustbench["id"] == "Augustin2020Adversarial_34_10"
    assert ratio.reported["RobustBench (Augustin2020Adversarial_34_10)"] == {"clean_acc": 92.23, "robust_acc": 76.25}


def test_missing_file_says_exactly_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv(released.RELEASED_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        released.resolve("dualat-cifar10-t40-seed0")
    text = str(err.value)
    assert str(tmp_path / "dualat-cifar10-t40-seed0" / "model_bestfid.pth") in text
    assert "run-20250506_140002-4oni26z2/files/model_bestfid.pth" in text and "Dropbox" in text
    assert "no public direct URL" in text
    with pytest.raises(KeyError, match="known: "):
        released.resolve("no-such-model")


@pytest.fixture
def tiny_release(tmp_path, monkeypatch):
    """A quick-profile WRN saved in the released layout (`module.` prefix, plain state dict),
    registered as "test-tiny" with a file:// URL; the working folder is a copy of the repository's
    params.yaml."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    cfg = config.load("params.yaml", dataset="cifar10", profile="quick")
    torch.manual_seed(0)
    model = model_io.new_model(cfg).eval()
    source = tmp_path / "published" / "model_bestfid.pth"
    source.parent.mkdir()
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, source)
    entry = released.Released(
        name="test-tiny", dataset="cifar10", method="dualat", file_name="files/model_bestfid.pth",
        published=("a test folder",), sample_steps=2, url=source.as_uri(), arch=("wrn", 10, 1),
        reported={"test report": {"clean_acc": 10.0, "robust_acc": 5.0, "fid": 300.0}},
    )  # fmt: skip
    monkeypatch.setitem(released.REGISTRY, "test-tiny", entry)
    monkeypatch.setenv(released.RELEASED_ENV, str(tmp_path / "released"))
    monkeypatch.setenv("DUALAT_DOWNLOAD", "1")
    return model, source


def test_download_records_the_hash_and_refuses_a_changed_file(tiny_release, tmp_path, monkeypatch):
    _, source = tiny_release
    path = released.resolve("test-tiny")
    assert path == tmp_path / "released" / "test-tiny" / "model_bestfid.pth"
    assert path.read_bytes() == source.read_bytes()
    stamp = json.loads(released.hash_path(path).read_text())
    assert stamp["sha256"] == sha256_file(source) and stamp["source"] == source.as_uri()
    assert released.resolve("test-tiny") == path  # hash checked again, no second download
    cfg = config.load("params.yaml", dataset="cifar10", profile="quick",
                      overrides={"evaluate.checkpoints.dualat": "released:test-tiny"})  # fmt: skip
    assert model_io.selected_model(cfg, "dualat")[0] == path
    st = path.stat()
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a replaced file has a new mtime
    with pytest.raises(ValueError, match="sha256 .* recorded"):
        released.resolve("test-tiny")
    monkeypatch.setenv("DUALAT_DOWNLOAD", "0")
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"downloads are off"):
        released.resolve("test-tiny")


@pytest.mark.skipif(ROOT is None, reason="offline CIFAR-10 shards not found")
def test_released_file_evaluated_end_to_end_offline(tiny_release, tmp_path, monkeypatch, capsys):
    model, _ = tiny_release
    # AutoAttack itself is tested in test_evaluate; here it returns the images unchanged (seconds, not minutes)
    monkeypatch.setattr("pyautoattack.AutoAttack.run_standard_evaluation", lambda self, x, y, **kw: (x, y))
    monkeypatch.setenv("DUALAT_DATA", str(ROOT))
    small = {
        "data.n_test": 8, "evaluate.autoattack_n": 4, "evaluate.pgd.steps": 1, "sample.n_samples": 6,
        "sample.n_grid_samples": 2, "sample.steps_grid": [1], "sample.fid_ref_n": 8, "sample.batch_size": 6,
        "sample.seeds": [0, 1], "sample.kid_subsets": 2, "stage2.eval_fid_samples": 2, "data.n_ood": 10,
    }  # fmt: skip
    results = released.evaluate(
        "test-tiny", "quick", small, ("accuracy", "generation"), features=_pooled, progress=False
    )
    record = read_record(tmp_path / "results" / "released" / "test-tiny" / "accuracy" / "accuracy.json")
    assert record["checkpoint"]["sha256"] == sha256_file(tmp_path / "released" / "test-tiny" / "model_bestfid.pth")
    assert "released:test-tiny" in record["extra"]["model_file"]
    assert record["config"]["sample"]["steps"]["dualat"] == 2  # the released evaluation's sampling steps
    assert results["generation"]["steps"] == 2 and results["generation"]["fid_conditional"] > 0
    x, y = (torch.as_tensor(v) for v in _test_images(released.released_config("test-tiny", "quick", small)))
    with torch.no_grad():  # the released file is the model: its clean accuracy is recomputed here
        assert results["accuracy"]["clean_acc"] == pytest.approx((model(x).argmax(1) == y).float().mean().item())
    ours = released.measured(results)
    rows = released.comparison_rows("test-tiny", results, "paper")
    by = {r["quantity"]: r for r in rows}
    assert set(by) == {"clean_acc", "robust_acc", "fid"}
    for key, paper in {"clean_acc": 10.0, "robust_acc": 5.0, "fid": 300.0}.items():
        limit = 1.0 if key != "fid" else 30.0
        expected = "within" if abs(ours[key] - paper) <= limit else "outside"
        assert by[key]["verdict"].startswith(expected), (key, ours[key], by[key]["verdict"])
    assert all(
        r["verdict"] == "quick profile, not comparable" for r in released.comparison_rows("test-tiny", results, "quick")
    )
    # the documented command: records are reused, the table printed
    assert released.main(["evaluate", "test-tiny", "--profile", "quick", "--groups", "accuracy"]
                         + [f"-S{k}={json.dumps(v)}" for k, v in small.items()]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "AutoAttack standard, L2, eps=0.5, n=4" in out and "test report" in out and "clean_acc" in out


def _test_images(cfg):
    from dualat import datasets

    return datasets.stack(datasets.test_set(cfg))


# --- the T=50 variant ---------------------------------------------------------------------------------


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def test_paper_t50_is_the_paper_profile_with_the_t50_values():
    """paper_t50 holds the T=50 configuration's values; every other key equals the paper profile's
    (a change of the paper block must be made in paper_t50 too)."""
    t50_values = {
        "cifar10": {"stage2.sampler.T_max": 100, "stage2.sampler.auc_threshold": 0.7, "sample.steps.dualat": 35},
        "cifar100": {"stage2.sampler.T_max": 50, "stage2.sampler.auc_threshold": 0.75, "sample.steps.dualat": 33},
        "rin": {},
    }
    for dataset, values in t50_values.items():
        paper, t50 = (_flat(config.to_dict(config.load(REPO / "params.yaml", dataset=dataset, profile=p)))
                      for p in ("paper", "paper_t50"))  # fmt: skip
        assert {k: t50[k] for k in values} == values, dataset
        diff = {k for k in paper if paper[k] != t50[k] and k != "profile"}
        assert diff <= set(values), (dataset, diff)


def _write(path: Path, metrics: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": metrics, "extra": {}}))


def test_verdicts_read_against_the_variant_that_ran(tmp_path, monkeypatch):
    from dualat.reports import tables_results, verdicts

    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    acc = {"clean_acc": 0.9070, "autoattack": {"robust_acc": 0.7465, "n": 10000}}
    _write(tmp_path / "results/cifar10/dualat/accuracy/accuracy.json", acc)
    _write(tmp_path / "results/cifar10/dualat/generation/generation.json", {"fid_conditional": 7.6})
    for profile, (clean, fid_ref, verdict) in {
        "paper_t50": (90.72, 7.57, "within"),  # T=50: 90.72 / 74.65 / 7.57
        "paper": (91.86, 9.07, "outside"),  # the paper's Table 1: 9.07 is 19% above 7.6
    }.items():
        rows, _ = verdicts.finish_rows(tables_results.table1(profile), profile)
        dual = {r["quantity"]: r for r in rows if r["setting"] == "CIFAR-10 Dual-AT"}
        assert dual["clean accuracy (%)"]["paper"] == clean
        assert dual["clean accuracy (%)"]["verdict"].startswith("within" if profile == "paper_t50" else "outside")
        fid = dual["FID (conditional)"]
        assert fid["paper"] == fid_ref and fid["verdict"].startswith(verdict), (profile, fid)
    assert "T=50" in verdicts.verdict_rule("paper_t50") and "T=50" not in verdicts.verdict_rule("paper")


# --- both FID modes -----------------------------------------------------------------------------------


@pytest.mark.skipif(ROOT is None, reason="offline CIFAR-10 shards not found")
def test_paper_profile_records_both_fid_modes_from_the_same_samples(tiny_wrn, tmp_path, monkeypatch):
    """The paper profile's generation record holds FID in legacy_pytorch (the paper's) and clean
    mode, mean ± std over seeds. Stand-in extractors where the real weights are absent: the clean
    one is 2x the legacy one, so on the same samples and reference each clean FID is exactly 4x
    (FID is homogeneous of degree 2 in the features)."""
    from dualat import checkpoint
    from dualat.evaluation import generation

    monkeypatch.setattr(model_io, "new_model", lambda cfg: tiny_wrn)
    small = {
        "data.ood": "tinyimagenet32", "data.n_test": 8, "data.n_ood": 10, "data.ood_exclude": "",
        "model.depth": 10, "model.widen_factor": 1, "sample.n_samples": 6, "sample.n_grid_samples": 2,
        "sample.steps_grid": [1], "sample.steps.dualat": 1, "sample.fid_ref_n": 8, "sample.batch_size": 6,
        "sample.seeds": [0, 1], "sample.kid_subsets": 2, "stage2.eval_fid_samples": 2,
    }  # fmt: skip
    cfg = config.load(REPO / "params.yaml", dataset="cifar10", profile="paper", overrides=small)
    cfg = dataclasses.replace(cfg, data_root=str(ROOT))
    assert (cfg.sample.fid_mode, cfg.sample.fid_second_mode) == ("legacy_pytorch", "clean")
    path = checkpoint.save(tmp_path / "model" / "final.pt", {"model": tiny_wrn.state_dict()})
    features = {"legacy_pytorch": _pooled, "clean": lambda x: 2 * _pooled(x)}
    m = generation.generation(cfg, "dualat", path, tmp_path / "ref" / "stats.npz", tmp_path / "eval",
                              features=features, progress=False)  # fmt: skip
    legacy, clean = m["fid_modes"]["legacy_pytorch"], m["fid_modes"]["clean"]
    assert (
        legacy["fid_conditional"] == m["fid_conditional"] and legacy["fid_conditional_std"] == m["fid_conditional_std"]
    )
    for kind in ("conditional", "unconditional"):
        assert clean[f"fid_{kind}"] == pytest.approx(4 * legacy[f"fid_{kind}"], rel=1e-6)
        assert clean[f"fid_{kind}_std"] == pytest.approx(4 * legacy[f"fid_{kind}_std"], rel=1e-6)
        per_seed = [r[f"fid_{kind}"] for r in m["per_seed"]]
        assert legacy[f"fid_{kind}"] == pytest.approx(np.mean(per_seed))
        assert legacy[f"fid_{kind}_std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert legacy["protocol"] == "pytorch-fid legacy, 6 class-balanced, vs CIFAR-10 train 8, T=1, seeds 0-1"
    assert clean["protocol"].startswith("clean-fid clean, 6 class-balanced")
    assert m["fid_protocol"]["text"] == legacy["protocol"]
    assert (tmp_path / "ref" / "clean" / "stats.npz").is_file()  # the second mode's own reference


def test_tables_show_both_fid_modes_with_their_protocols(tmp_path, monkeypatch):
    from dualat.reports import tables, tables_results

    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    modes = {
        "legacy_pytorch": {"fid_conditional": 9.1, "fid_conditional_std": 0.03, "protocol": "pytorch-fid legacy, 50K"},
        "clean": {"fid_conditional": 10.2, "fid_conditional_std": 0.04, "protocol": "clean-fid clean, 50K"},
    }
    gen = {"fid_conditional": 9.1, "fid_conditional_std": 0.03, "fid_modes": modes}
    _write(tmp_path / "results/cifar10/dualat/generation/generation.json", gen)
    rows = {r["quantity"]: r for r in tables_results.table1("paper") if r["setting"] == "CIFAR-10 Dual-AT"}
    assert rows["FID (conditional)"]["paper"] == 9.07  # the paper's own mode carries the verdict
    clean = rows["FID, clean-fid clean mode (conditional)"]
    assert (clean["ours"], clean["std"], clean["note"], clean["kind"]) == (10.2, 0.04, "clean-fid clean, 50K", "info")
    assert rows["FID, pytorch-fid legacy mode (conditional)"]["ours"] == 9.1
    notes = tables.fid_protocols((("cifar10", "dualat", "generation"),))
    assert "FID protocol, CIFAR-10 Dual-AT, clean: clean-fid clean, 50K" in notes


def test_ood_rows_judge_the_papers_auroc_within_tolerance():
    res = {"ood": {"sets": {"svhn": {"max_prob": {"clean": 0.9609 + 0.019, "adversarial": 0.8334 - 0.021}}}}}
    rows = {(r["setting"], r["quantity"]): r for r in released.ood_rows("dualat-cifar10-t40-seed0", res, "paper")}
    assert rows["paper Table 10-11, svhn, max_prob", "auroc_clean"]["verdict"].startswith("within")
    assert rows["paper Table 10-11, svhn, max_prob", "auroc_adversarial"]["verdict"].startswith("outside")
    assert rows["paper Table 10-11, svhn, neg_energy", "auroc_clean"]["verdict"] == "not computed"
    assert released.ood_rows("dualat-cifar10-t50", res, "paper") == []  # no published AUROC for T=50
