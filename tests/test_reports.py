"""The report (dualat.reports) on fake records written in a temporary folder: every paper row,
verdicts per profile, KID comparisons, footnotes, sources, AutoAttack warnings, figures."""

import csv
import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from dualat import paper_values, reports
from dualat.records import NotComputed

REPO = Path(__file__).resolve().parents[1]


WRN_10_1 = {"model": {"arch": "wrn", "depth": 10, "widen_factor": 1}, "profile": "quick"}


def _write(path: Path, metrics: dict, extra: dict | None = None, config: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": metrics, "extra": extra or {}, "config": config or WRN_10_1}))


def _kid(mean: float, std: float) -> dict:
    return {"mean": mean, "std": std, "subsets": 10, "subset_size": 100}


def _grid_png(path: Path, n: int, tile: int = 4) -> None:
    """A torchvision-like grid of n tiles (10 per row, padding 2); tile j is filled with j/255."""
    import matplotlib.image as mpimg

    cols, rows = min(10, n), -(-n // 10)
    img = np.ones((rows * (tile + 2) + 2, cols * (tile + 2) + 2, 3), dtype=np.float32)
    for j in range(n):
        r, c = divmod(j, 10)
        img[2 + r * (tile + 2) : 2 + r * (tile + 2) + tile, 2 + c * (tile + 2) : 2 + c * (tile + 2) + tile] = j / 255
    path.parent.mkdir(parents=True, exist_ok=True)
    mpimg.imsave(path, img)


OOD_SETS = ("cifar100", "svhn", "tinyimagenet32", "noise")  # the quick profile's CIFAR-10 OOD sets
N_ID, N_OOD = 60, 40


def _ood(res: Path, method: str, seed: int) -> None:
    """An OOD record of `method` and its scores.npz (the AUROCs computed from the saved scores)."""
    from dualat.metrics import auroc

    rng = np.random.default_rng(seed)
    scores = {f"id/{k}": rng.normal(1.0, 1.0, N_ID) for k in ("max_prob", "neg_energy")}
    sets = {}
    for name in OOD_SETS:
        cell = {"n": N_OOD}
        for k in ("max_prob", "neg_energy"):
            for inputs, shift in (("clean", 0.0), ("adversarial", 0.8)):
                scores[f"{name}/{k}/{inputs}"] = rng.normal(shift, 1.0, N_OOD)
            cell[k] = {i: auroc(scores[f"id/{k}"], scores[f"{name}/{k}/{i}"]) for i in ("clean", "adversarial")}
        sets[name] = cell
    folder = res / "cifar10" / method / "ood"
    extra = {"model_source": "external: ratio.pt"} if method == "ratio" else {}
    _write(folder / "ood.json", {"sets": sets, "n_id": N_ID, "ood_n": N_OOD}, extra)
    np.savez(folder / "scores.npz", **scores)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """CIFAR-10 records of all three methods (Dual-AT near the paper, KIDs chosen so that Dual-AT
    vs Standard AT exceeds the uncertainty and Dual-AT vs RATIO does not; WRN-10-1 in every
    record's config; RATIO an external file named by an absolute path; OOD records with their
    scores); CIFAR-100 accuracy of Dual-AT missing its data (a reason naming absolute paths)."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    res = tmp_path / "results"
    acc = {
        "dualat": (0.9190, 0.7560, ["it seems that the output is a probability distribution"]),
        "ratio": (0.9000, 0.7400, []),
        "standard_at": (0.9100, 0.7500, []),
    }
    kid = {"dualat": (0.010, 0.001), "standard_at": (0.020, 0.001), "ratio": (0.0115, 0.001)}
    for m, (clean, robust, warns) in acc.items():
        source = f"models/cifar10/{m}/best.pt (selected)"
        if m == "ratio":
            source = f"external: {tmp_path}/released/ratio.pt (sha256 abc)"
        extra = {
            "model_source": source,
            "model_file": f"{'best.pt' if m != 'dualat' else 'best_fid.pt'}: selected",
            "data_provenance": {"cifar10": f"local npz in {tmp_path}/data"},
        }
        aa = {"robust_acc": robust, "clean_acc": clean, "per_attack": {}, "n": 100, "warnings": warns}
        metrics = {"clean_acc": clean, "pgd_acc": robust, "autoattack": aa, "n_test": 1000}
        _write(res / "cifar10" / m / "accuracy" / "accuracy.json", metrics, extra)
        gen = {
            "fid_conditional": 9.5 if m == "dualat" else 30.0,
            "fid_conditional_std": 0.1,
            "kid_conditional": _kid(*kid[m]),
            "fid_unconditional": "not computed: unconditional sampling skipped in this test",
            "control": {"fid": 120.0, "kid": _kid(0.1, 0.002)},
            "inception_score": 9.9,
            "n_samples": 100,
            "fid_protocol": {"mode": "clean", "n": 100, "reference": "train"},
        }
        _write(res / "cifar10" / m / "generation" / "generation.json", gen, extra)
        (res / "cifar10" / m / "accuracy" / "reliability.png").write_bytes(b"png")
    for seed, m in enumerate(("ratio", "dualat")):
        _ood(res, m, seed)
    reason = f"cifar100: data not found (tried {tmp_path}/data/cifar100_test_00.npz, /work/data/b; see docs/data.md)"
    extra = {"model_source": "trained here (best_fid.pt: best FID during training)", "model_file": "best_fid.pt: x"}
    not_computed = {"clean_acc": f"not computed: {reason}", "autoattack": f"not computed: {reason}"}
    _write(res / "cifar100" / "dualat" / "accuracy" / "accuracy.json", not_computed, extra)
    return tmp_path


def _rows(number: int, profile: str) -> tuple[list[dict], list[str]]:
    return reports.finish_rows(reports.TABLES[number](), profile)


def test_every_paper_row_is_present(fake):
    t1 = {r["setting"] for r in reports.table1()}
    for name in [
        *paper_values.TABLE1_QUOTED,
        *paper_values.TABLE1_GENERATIVE["conditional"],
        *paper_values.TABLE1_GENERATIVE["unconditional"],
    ]:
        assert any(name in s for s in t1), name
    assert {"CIFAR-10 Dual-AT", "CIFAR-10 RATIO (external model)", "CIFAR-10 seed images x0 (control)"} <= t1
    t2 = {r["setting"] for r in reports.table2()}
    assert {"CIFAR-100 JEM [1]", "CIFAR-100 LeCAM + BigGAN", "RestrictedImageNet Standard AT"} <= t2
    t7 = {r["setting"] for r in reports.table7()}
    assert any("Reported in [14]" in s and "CIFAR-10 " in s for s in t7)
    assert any("Reproduced by the paper (mixed training)" in s for s in t7)
    assert any("Reported in [14] (mixed training)" in s for s in t7)
    t10 = [r for r in reports.table_ood("cifar10") if "JEM" in r["setting"]]
    assert len(t10) == 8 and all(r["ours"] == "quoted by the paper" for r in t10)
    assert {r["paper"] for r in t10 if r["setting"].startswith(reports.DATASET_NAMES["svhn"])} == {0.893, 0.073}
    quoted = [r for r in reports.table1() if r["kind"] == "quoted"]
    assert all(reports.verdict(r, "paper") == "quoted by the paper" for r in quoted)


def test_verdicts_paper_profile(fake):
    rows, fields = _rows(1, "paper")
    assert "difference" in fields and "verdict" in fields
    by = {(r["setting"], r["quantity"]): r for r in rows}
    clean = by["CIFAR-10 Dual-AT", reports.quantity("clean_acc")]  # 91.90 vs 91.86: within +-1 point
    assert clean["verdict"] == "within tolerance (±1)" and clean["difference"] == pytest.approx(0.04)
    fid_conditional = reports.quantity("fid", "conditional")
    fid = by["CIFAR-10 RATIO (external model)", fid_conditional]  # 30 vs 21.96: outside +-10%
    assert fid["verdict"] == "outside tolerance (±10%)"
    assert by["CIFAR-10 Dual-AT", fid_conditional]["verdict"] == "within tolerance (±10%)"
    assert by["CIFAR-10 Dual-AT", fid_conditional]["std"] == 0.1
    rows2, _ = _rows(2, "paper")
    nc = next(
        r for r in rows2 if r["setting"] == "CIFAR-100 Dual-AT" and r["quantity"] == reports.quantity("clean_acc")
    )
    assert nc["verdict"] == "not computed"


def test_quick_profile_not_comparable_and_no_difference_column(fake):
    for number in (1, 2, 7, 9, 10):
        rows, fields = _rows(number, "quick")
        assert "difference" not in fields, number
        judged = [r for r in rows if r["kind"] == "result" and r["paper"] is not None]
        assert judged and all(r["verdict"] == "quick profile, not comparable" for r in judged)
    _, fields = _rows(3, "quick")  # the paper profile's settings against the paper: still compared
    assert "difference" in fields
    _, html_path = reports.write_table(1, reports.table1(), "quick")
    page = html_path.read_text()
    assert "<th>difference</th>" not in page and "quick profile, not comparable" in page


def test_kid_rule():
    from dualat.metrics import exceeds_uncertainty

    assert exceeds_uncertainty(10.0, 1.0, 20.0, 1.0, reports.K_SIGMA)["exceeds"]  # 10 > 2*sqrt(2)
    assert not exceeds_uncertainty(10.0, 1.0, 11.5, 1.0, reports.K_SIGMA)["exceeds"]  # 1.5 < 2.83


def test_comparisons_follow_the_rule(fake):
    comps = reports.comparisons("cifar10")
    assert comps["dualat_vs_standard_at"]["exceeds"] is True
    assert "Dual-AT has the lower KID" in comps["dualat_vs_standard_at"]["statement"]
    assert comps["dualat_vs_ratio"]["exceeds"] is False
    assert "no conclusion" in comps["dualat_vs_ratio"]["statement"]
    assert (
        comps["dualat_vs_control"]["exceeds"] is True
        and "Dual-AT has the lower KID" in (comps["dualat_vs_control"]["statement"])
    )
    quick = reports.comparison_text("quick", comps)
    assert any("not evidence" in line for line in quick)
    assert not any("not evidence" in line for line in reports.comparison_text("paper", comps))
    metrics = json.loads(reports.write_metrics("quick", {"cifar10": comps}).read_text())
    assert metrics["comparisons"]["cifar10"]["dualat_vs_standard_at"]["exceeds"] is True
    assert metrics["cifar10"]["dualat"]["kid_x1e3"] == pytest.approx(10.0)


def test_missing_fields_read_not_in_this_record(fake):
    gen = reports.record("cifar10", "dualat", "generation")
    del gen["kid_conditional"]
    out = reports.compare_kid("a", reports.kid_of(gen), "b", (1.0, 0.1))
    assert out["exceeds"] is None and out["statement"] == "a vs b: not computed: not in this record"
    assert out["reason"] == "no value kid_conditional.mean in the record"
    assert reports.short_reason("no value kid_conditional.mean in the record") == "not in this record"


def test_footnotes_hold_a_code_and_one_sentence(fake):
    """The cell holds the short reason, its footnote the code and one sentence (no list of the
    paths tried: those stay in the record), the CSV the short reason alone."""
    _, html_path = reports.write_table(2, reports.table2(), "paper")
    page = html_path.read_text()
    mark = re.search(r"not computed: cifar100 data missing \[(\d+)\]", page)  # the short reason in the cell
    footnotes = page.split("</table>", 1)[1]
    assert mark and f"[{mark[1]}] cifar100 data missing: its files were not found under the data root" in footnotes
    assert "cifar100_test_00.npz" not in page
    csv_rows = list(csv.DictReader((fake / "reports" / "tables" / "table2.csv").open()))
    missing = [r["ours"] for r in csv_rows if r["setting"] == "CIFAR-100 Dual-AT" and "accuracy" in r["quantity"]]
    assert missing and all(cell == "not computed: cifar100 data missing" for cell in missing)
    note = reports.reason_note("model diverged at step 7 (loss nan); retrain it. Then more text follows")
    assert note == "model diverged at step 7: model diverged at step 7 (loss nan)."


def test_sources_and_autoattack_warnings(fake):
    _, html_path = reports.write_table(1, reports.table1(), "paper")
    page = html_path.read_text()
    assert (
        "CIFAR-10 Dual-AT: trained here (best_fid.pt); provenance in results/cifar10/dualat/accuracy/accuracy.json"
        in page
    )
    assert "CIFAR-10 RATIO: external model; provenance in results/cifar10/ratio/accuracy/accuracy.json" in page
    assert "AutoAttack warnings, CIFAR-10 Dual-AT: it seems that the output is a probability" in page
    assert "AutoAttack warnings, CIFAR-10 RATIO: none" in page
    assert "FID/KID protocol, CIFAR-10 RATIO: mode: clean; n: 100; reference: train" in page
    del_warnings = reports.record("cifar10", "ratio", "accuracy")
    del del_warnings["autoattack"]["warnings"]  # a record written before warnings were kept
    _write(fake / "results" / "cifar10" / "ratio" / "accuracy" / "accuracy.json", del_warnings)
    assert "AutoAttack warnings, CIFAR-10 RATIO: not computed: not in this record" in reports.autoattack_warnings()
    assert any("Dual-AT: it seems" in line for line in reports.autoattack_warnings())


def test_trained_here_only_where_a_model_was_evaluated(fake):
    """CIFAR-100's record holds no number (a record of an earlier version may still say "trained
    here"): its source reads that no model was evaluated, and why; an external model is marked in its rows."""
    assert reports.origin("cifar100", "dualat", "accuracy") == ("none", "no model evaluated: cifar100 data missing")
    assert reports.origin("cifar10", "dualat", "accuracy") == ("trained", "trained here (best_fid.pt)")
    assert reports.origin("cifar10", "ratio", "accuracy")[0] == "external"
    lines = reports.model_sources(reports.TABLE_RECORDS[2])
    assert lines == ["CIFAR-100 Dual-AT: no model evaluated: cifar100 data missing; provenance in "
                     "results/cifar100/dualat/accuracy/accuracy.json"]  # fmt: skip
    external = [r["setting"] for r in reports.table_ood("cifar10") if "RATIO" in r["setting"]]
    assert external and all("RATIO (external model)" in s for s in external)
    t7 = [r["setting"] for r in reports.table7() if "this run" in r["setting"]]
    assert t7[0].startswith("CIFAR-10 RATIO (external model), this run")


def test_table7_architecture_comes_from_the_record(fake):
    """The quick profile's WRN-10-1 reads WRN-10-1 (from the record's config), never the paper's
    WideResNet-34-10; a model without a record carries no architecture."""
    ours = {r["setting"] for r in reports.table7() if "this run" in r["setting"]}
    assert "CIFAR-10 RATIO (external model), this run (WRN-10-1)" in ours
    assert "CIFAR-100 RATIO, this run" in ours and not any("34-10" in s for s in ours)
    assert reports.architecture({"arch": "resnet50", "depth": 50, "widen_factor": 1}) == "ResNet-50"
    config = {"model": {"arch": "wrn", "depth": 34, "widen_factor": 10}}
    _write(fake / "results" / "rin" / "ratio" / "accuracy" / "accuracy.json", {"clean_acc": 0.5}, config=config)
    assert reports.record_architecture("rin", "ratio", "accuracy") == "WRN-34-10"


def test_table6_difference_compares_values(fake):
    rows, _ = reports.finish_rows(reports.table6(), "paper")
    assert all(r["difference"] != "differs" for r in rows)
    bce = next(r for r in rows if r["setting"] == "CIFAR-10/100" and r["quantity"] == reports.quantity("L_BCE"))
    assert bce["difference"] == "same" and bce["verdict"] == "same"
    assert reports.compare_augmentations("RandomCrop + Cutout + ToTensor", "random crop + flip") == (
        False,
        "ours adds cutout; ours lacks random horizontal flip",
    )


def test_index_links_images_and_sections(fake):
    rows = reports.record_images()
    linked = {(e["method"], e["what"]) for e in rows if e["dataset"] == "cifar10" and e["link"]}
    assert ("dualat", "calibration (reliability diagram)") in linked
    missing = next(
        e for e in rows if e["dataset"] == "cifar100" and e["method"] == "dualat" and e["what"].startswith("cal")
    )
    assert "data not found" in missing["reason"]
    tables = {1: reports.write_table(1, reports.table1(), "quick")}
    index = reports.write_index("quick", tables, {}, images=rows).read_text()
    for section in (
        "<h2>Comparisons</h2>",
        "<h2>AutoAttack warnings</h2>",
        "figures/records/cifar10_dualat_reliability",
    ):
        assert section in index
    assert "not evidence for or against the paper" in index
    mark = re.search(r"not computed: cifar100 data missing \[(\d+)\]", index)  # short in the cell
    assert mark and f"[{mark[1]}] cifar100 data missing: its files were not found" in index  # a sentence below
    assert "cifar100_test_00" not in index


def test_rows_by_class_regroups_a_label_sorted_grid(tmp_path):
    import matplotlib.image as mpimg

    _grid_png(tmp_path / "g.png", 100)
    img = mpimg.imread(tmp_path / "g.png")[..., :3]
    out = reports.rows_by_class(img, 100, 9, range(9))  # RIN: labels i mod 9, class 0 has 12 seeds
    assert out.shape[0] == 9 * 6 + 2 and out.shape[1] == 10 * 6 + 2
    labels = sorted(i % 9 for i in range(100))
    first_of_class_1 = labels.index(1)  # tile 12 -> row 1, column 0
    assert out[2 + 6, 2, 0] == pytest.approx(first_of_class_1 / 255, abs=1 / 255)
    cifar100 = reports.rows_by_class(img, 100, 100, range(10))  # one image per class, 10 rows
    assert cifar100.shape[:2] == (10 * 6 + 2, 1 * 6 + 2)


def test_figures_draw_with_records_missing(fake):
    _grid_png(fake / "results" / "rin" / "dualat" / "generation" / "seeds.png", 100)
    for number in (1, 6, 7):
        assert reports.FIGURES[number]().exists()


def test_value_of_not_computed_string():
    v = reports.value({"a": "not computed: CIFAR-100 data missing"}, "a", "b")
    assert isinstance(v, NotComputed) and v.reason == "CIFAR-100 data missing"


def test_autoattack_keeps_its_own_warnings():
    """A model that outputs probabilities trips AutoAttack's check_range_output; the warning
    reaches the result (and from there the accuracy record and the report)."""
    import torch
    from torch import nn

    from dualat.metrics import autoattack_accuracy

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10), nn.Softmax(-1))
    x, y = torch.rand(8, 3, 8, 8), torch.randint(0, 10, (8,))
    out = autoattack_accuracy(model, x, y, 0.5, version="custom", attacks=["apgd-ce"], batch_size=8, progress=False)
    assert any("probability distribution" in w for w in out["warnings"])
    logits = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    out = autoattack_accuracy(logits, x, y, 0.5, version="custom", attacks=["apgd-ce"], batch_size=8, progress=False)
    assert out["warnings"] == []


def test_tables_speak_one_vocabulary(fake):
    """Every quantity cell of every table is a name of vocabulary.QUANTITIES (with a generation
    mode at most), never a raw record key, and CSV and HTML carry the same COLUMNS headers."""
    names = {reports.quantity(k, mode) for k in reports.QUANTITIES for mode in (None, "conditional", "unconditional")}
    for number, table in reports.TABLES.items():
        rows = table()
        assert rows, number
        assert {r["quantity"] for r in rows} <= names, number
        csv_path, html_path = reports.write_table(number, rows, "paper")
        header = next(csv.reader(csv_path.open()))
        assert header[: len(reports.FIELDS)] == [reports.COLUMNS[k] for k in reports.FIELDS], number
        assert header[len(reports.FIELDS) :] == ["ours (number)", "± (number)", "n"], number
        assert "".join(f"<th>{h}</th>" for h in header[: len(reports.FIELDS)]) in html_path.read_text(), number
    raw_keys = {
        k for k in [*paper_values.TABLE1["dualat"], *paper_values.TABLE3["cifar10"]] if reports.QUANTITIES[k] != k
    }
    assert "clean_acc" in raw_keys and "stage1_lr" in raw_keys
    assert not raw_keys & {r["quantity"] for n in (1, 3, 7) for r in reports.TABLES[n]()}
    accuracy = [q for q in reports.QUANTITIES.values() if "accuracy" in q]
    assert accuracy and all(q.endswith("(%)") for q in accuracy)  # units on every accuracy


@pytest.mark.parametrize("profile", ["quick", "proxy"])
def test_no_difference_to_the_paper_outside_the_paper_profile(fake, profile):
    """A quick or proxy number is never subtracted from the paper's: result rows carry no
    difference in any table, and tables of results have no difference column at all."""
    for number, table in reports.TABLES.items():
        rows, fields = reports.finish_rows(table(), profile)
        results = [r for r in rows if r["kind"] == "result"]
        assert all(r["difference"] == "" for r in results), number
        if not any(r["kind"] == "setting" for r in rows):
            assert "difference" not in fields, number
            _, html_path = reports.write_table(number, table(), profile)
            assert "<th>difference</th>" not in html_path.read_text(), number
    paper_rows, _ = reports.finish_rows(reports.table1(), "paper")  # the same rows do in the paper profile
    assert any(isinstance(r["difference"], float) for r in paper_rows if r["kind"] == "result")


def _package(root: Path, files: dict[str, str]) -> None:
    for name, src in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(src)


def test_report_package_is_outside_the_code_hashes(tmp_path, monkeypatch):
    """runs.code_hash excludes modules by their path in the package: a change inside reports/
    moves neither the training nor the evaluation hash; train.py moves both; a module of
    evaluation/ only the evaluation hash; a file named like an excluded module elsewhere still counts."""
    from dualat import runs

    pkg = tmp_path / "dualat"
    _package(pkg, {
        "train.py": "def step(x):\n    return x + 1\n", "evaluation/classification.py": "def acc():\n    return 1\n",
        "reports/__init__.py": "from .tables import table\n", "reports/tables.py": "def table():\n    return 1\n",
        "metrics/runs.py": "N = 1\n",
    })  # fmt: skip
    monkeypatch.setattr(runs, "PACKAGE", pkg)

    def hashes() -> tuple[str, str]:
        return runs.code_hash(), runs.code_hash(runs.NOT_EVALUATION_CODE)

    before = hashes()
    _package(pkg, {"reports/tables.py": "def table():\n    return 2\n", "reports/figures.py": "F = 1\n"})
    assert hashes() == before
    _package(pkg, {"evaluation/classification.py": "def acc():\n    return 2\n"})
    training, evaluation = hashes()
    assert training == before[0] and evaluation != before[1]
    _package(pkg, {"train.py": "def step(x):\n    return x + 2\n"})
    assert hashes()[0] != training and hashes()[1] != evaluation
    training, evaluation = hashes()
    _package(pkg, {"metrics/runs.py": "N = 2\n"})  # a path rule, not a file-name rule
    assert hashes()[0] != training and hashes()[1] != evaluation
    # a folder entry may be written "name", "name/" or as the module file "name.py"
    _package(pkg, {"evaluation/groups.py": "G = 1\n"})
    with_folder = runs.code_hash(("evaluation/",))
    _package(pkg, {"evaluation/groups.py": "G = 2\n"})
    assert runs.code_hash(("evaluation/",)) == with_folder == runs.code_hash(("evaluation",))
    assert runs.code_hash(("evaluation",)) != runs.code_hash(())


def test_every_report_module_is_excluded_and_training_code_is_not():
    from pathlib import PurePosixPath

    from dualat import runs

    modules = sorted((runs.PACKAGE / "reports").glob("*.py"))
    assert len(modules) > 1
    for path in modules:
        relative = PurePosixPath(path.relative_to(runs.PACKAGE).as_posix())
        assert runs.excluded(relative, runs.NOT_TRAINING_CODE) and runs.excluded(relative, runs.NOT_EVALUATION_CODE)
    for name in ("train.py", "losses.py", "sampling.py", "data/streams.py", "metrics/generative.py"):
        assert not runs.excluded(PurePosixPath(name), runs.NOT_TRAINING_CODE), name
    assert runs.excluded(PurePosixPath("evaluation/runner.py"), runs.NOT_TRAINING_CODE)
    assert not runs.excluded(PurePosixPath("evaluate.py"), runs.NOT_EVALUATION_CODE)


PM_N = reports.uncertainty.PM_N  # "x ± s (n = N)"


def _measured_cells(csv_path: Path) -> list[str]:
    """The ours cells of accuracy and AUROC rows that hold a number (not "not computed", not quoted)."""
    rows = csv.DictReader(csv_path.open())
    return [
        r["ours"]
        for r in rows
        if ("accuracy" in r["quantity"] or "AUROC" in r["quantity"])
        and not r["ours"].startswith(("not computed", "quoted by the paper"))
    ]


def test_build_writes_no_machine_path_and_every_accuracy_shows_n_and_pm(fake):
    """reports.build on the fake records: no file under reports/ names the temporary folder or
    /work (records name both); every measured accuracy and AUROC of Tables 1, 2, 7, 10-12 reads
    "x ± s (n = N)", in the CSV and in the HTML."""
    index = reports.build("quick")
    assert index == Path("reports/index.html")
    files = [p for p in (fake / "reports").rglob("*") if p.is_file() and p.suffix != ".png"]
    assert len(files) >= 26  # 12 tables x 2, index, metrics
    for path in files:
        text = path.read_text()
        assert str(fake) not in text and "/work" not in text and "/tmp" not in text, path
    for number in (1, 2, 7, 10, 11, 12):
        csv_path = fake / "reports" / "tables" / f"table{number}.csv"
        cells = _measured_cells(csv_path)
        assert all(PM_N.match(c) for c in cells), (number, [c for c in cells if not PM_N.match(c)])
        page = csv_path.with_suffix(".html").read_text()
        assert all(html.escape(c) in page for c in cells), number
    for number, n in ((1, 3 * 2), (10, 4 * 3 * 2)):  # every model's two accuracies; 4 sets x 3 columns x 2
        assert len(_measured_cells(fake / "reports" / "tables" / f"table{number}.csv")) == n
    metrics = json.loads((fake / "reports" / "metrics.json").read_text())["cifar10"]["dualat"]
    assert metrics["n_test"] == 1000 and metrics["clean_acc_se"] == pytest.approx((0.919 * 0.081 / 1000) ** 0.5)
    assert metrics["n_autoattack"] == 100 and metrics["autoattack_acc_se"] == pytest.approx(
        (0.756 * 0.244 / 100) ** 0.5
    )


def test_accuracy_cell_reads_binomial_se_and_n(fake):
    rows, _ = _rows(1, "quick")
    robust = next(r for r in rows if r["setting"] == "CIFAR-10 Dual-AT" and "AutoAttack" in r["quantity"])
    assert robust["n"] == 100 and robust["std"] == pytest.approx(100 * (0.756 * 0.244 / 100) ** 0.5)
    assert reports.ours_text(robust) == "76 ± 4 (n = 100)"  # 1 significant digit of a ± from 3 up
    csv_path, _ = reports.write_table(1, reports.table1(), "quick")
    row = next(r for r in csv.DictReader(csv_path.open()) if r["ours"] == "76 ± 4 (n = 100)")
    assert float(row["ours (number)"]) == pytest.approx(75.6) and row["n"] == "100"
    assert float(row["± (number)"]) == pytest.approx(robust["std"])
    assert reports.pm_text(16.0, 100 * reports.binomial_se(0.16, 25), 25) == "16 ± 7 (n = 25)"
    assert reports.pm_text(91.9, 0.273, 10000) == "91.90 ± 0.27 (n = 10000)"
    assert reports.pm_text(100.0, 0.0, 8) == "100 ± 0 (n = 8)"
    assert reports.binomial_se(0.5, 0) is None and reports.binomial_se(1.5, 10) is None


def test_auroc_se_is_delong_from_the_saved_scores(fake):
    """DeLong's standard error from scores.npz equals the float64 brute-force one (every pair's
    comparison, ties one half); without scores the row falls back to Hanley-McNeil and says so."""
    with np.load(fake / "results" / "cifar10" / "dualat" / "ood" / "scores.npz") as f:
        s_in, s_out = f["id/neg_energy"], f["svhn/neg_energy/adversarial"]
    s_out = np.concatenate([s_out, s_in[:5]])  # ties
    psi = (s_in[:, None] > s_out[None, :]) + 0.5 * (s_in[:, None] == s_out[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    expected = np.sqrt(v10.var(ddof=1) / len(s_in) + v01.var(ddof=1) / len(s_out))
    assert reports.delong_se(s_in, s_out) == pytest.approx(expected, rel=1e-12)
    rows = [r for r in reports.table_ood("cifar10") if r["setting"] == "SVHN | Dual-AT (-E(x))"]
    assert [r["n"] for r in rows] == [f"{N_ID} test + {N_OOD} OOD"] * 2 and all(r["std"] > 0 for r in rows)
    (fake / "results" / "cifar10" / "dualat" / "ood" / "scores.npz").unlink()
    rows = [r for r in reports.table_ood("cifar10") if r["setting"] == "SVHN | Dual-AT (-E(x))"]
    auc = rows[0]["ours"]
    assert (
        rows[0]["std"] == pytest.approx(reports.hanley_mcneil_se(auc, N_ID, N_OOD))
        and "Hanley-McNeil" in rows[0]["note"]
    )
    # Hanley-McNeil at AUROC 0.5 with m = n: sqrt((0.25 + 2 (m - 1)(1/3 - 1/4)) / m^2)
    assert reports.hanley_mcneil_se(0.5, 10, 10) == pytest.approx(np.sqrt((0.25 + 18 / 12) / 100))


def test_verdict_uses_our_uncertainty():
    """Outside the tolerance only beyond K_SIGMA of our standard error; in between, undecided."""
    assert reports.judged(91.5, 91.86, "clean_acc", 4.0) == "within tolerance (±1)"
    assert reports.judged(89.0, 91.86, "clean_acc", 0.3) == "outside tolerance (±1)"  # 2.86 - 0.6 > 1
    assert reports.judged(89.0, 91.86, "clean_acc", 1.0).startswith("undecided")  # 2.86 - 2 < 1
    assert reports.judged(89.0, 91.86, "clean_acc") == "outside tolerance (±1)"  # no std: as before


def test_accuracy_comparisons_between_models(fake):
    comps = reports.comparisons("cifar10")
    robust = comps["dualat_vs_standard_at_robust_acc"]
    se = 100 * np.hypot((0.756 * 0.244 / 100) ** 0.5, (0.75 * 0.25 / 100) ** 0.5)
    assert robust["threshold"] == pytest.approx(reports.K_SIGMA * se) and robust["exceeds"] is False
    assert "76 ± 4 (n = 100) vs 75 ± 4 (n = 100), difference +0.6" in robust["statement"]
    gen = reports.record("cifar10", "dualat", "accuracy")
    gen["n_test"] = "not computed: no test set"
    out = reports.compare_accuracy("clean_acc", "a", reports.accuracy_of(gen, "clean_acc"), "b", (1.0, 0.1, 10))
    assert out["exceeds"] is None and out["statement"].endswith("not computed: no test set")


def test_git_revision_ignores_what_the_pipeline_rewrites(tmp_path):
    """dvc.lock, reports/metrics.json and DVC's .gitignore files under its output folders changing
    is not "-dirty"; a source file is, and git_changes names it."""
    import subprocess

    from dualat.records import git_changes, git_revision, revision_text

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    files = ["dvc.lock", "reports/metrics.json", "results/cifar10/.gitignore", "a.py", ".gitignore"]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    for name in files[:3]:
        (tmp_path / name).write_text("1\n")
    assert not git_revision(tmp_path).endswith("-dirty") and git_changes(tmp_path) == []
    (tmp_path / "a.py").write_text("1\n")
    (tmp_path / ".gitignore").write_text("1\n")  # the repository's own .gitignore is source
    assert git_revision(tmp_path).endswith("-dirty") and git_changes(tmp_path) == [".gitignore", "a.py"]
    assert revision_text(tmp_path).endswith("(differs from the commit in: .gitignore, a.py)")


def test_figures_carry_their_profile_and_title_empty_panels(fake):
    """A panel without data is titled with the short reason and holds no text; the profile is
    written under every figure; curves are labelled in the vocabulary, in percent."""
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2)
    long_reason = "cifar100: data not found (tried /data/x.npz; see docs/data.md)"
    reports.plotting.not_computed_axes(ax, NotComputed(long_reason), "CIFAR-100")
    assert ax.get_title() == "CIFAR-100: not computed: cifar100 data missing" and not ax.texts
    one = [{"step": 5, "images": 640, "robust_acc": 0.25}]
    two = one + [{"step": 10, "images": 1280, "robust_acc": 0.5}]
    reports.plotting.curves([ax2], {"short": one, "long": two}, ("robust_acc",))
    assert ax2.get_ylabel() == "robust accuracy, PGD (%)" and list(ax2.lines[1].get_ydata()) == [25.0, 50.0]
    labels = [t.get_text() for t in ax2.get_legend().get_texts()]
    assert labels == ["short (one evaluation: the run ended before a second)", "long"]
    reports.plotting.save_figure(fig, 9, "quick")
    assert any(t.get_text().startswith("profile: quick (other settings") for t in fig.texts)


def test_notebook_list_in_pipeline_order_with_readable_times(fake):
    folder = fake / "reports" / "notebooks"
    folder.mkdir(parents=True)
    names = ["20_report", "10_eval_accuracy-cifar10-dualat", "10_eval_accuracy-cifar10-standard_at",
             "01_train_standard_at-rin", "01_train_standard_at-cifar10", "00_prepare_data-cifar100"]  # fmt: skip
    for name in names:
        meta = {"papermill": {"duration": 3725.2, "start_time": "2026-11-25T10:11:12.5"}}
        (folder / f"{name}.ipynb").write_text(json.dumps({"metadata": meta}))
    times = reports.stage_times()
    assert [t["notebook"] for t in times] == [
        "00_prepare_data-cifar100", "01_train_standard_at-cifar10", "01_train_standard_at-rin",
        "10_eval_accuracy-cifar10-standard_at", "10_eval_accuracy-cifar10-dualat", "20_report",
    ]  # fmt: skip
    assert [reports.duration_text(s) for s in (4.4, 65, 3725.2)] == ["4 s", "1 min 05 s", "1 h 02 min"]
    index = reports.write_index("quick", {}, {}, comps={}, images=[]).read_text()
    assert "<td>1 h 02 min</td><td>2026-11-25 10:11 UTC</td>" in index


def test_public_text_relativises_paths():
    root = "/tmp/repo"
    text = "tried /tmp/repo/data/a.npz and /work/shared/b.npz; see https://x.org/a/b </td> 0.5/0.7"
    assert reports.public_text(text, root) == "tried data/a.npz and b.npz; see https://x.org/a/b </td> 0.5/0.7"


def test_nb_runs_quietly_without_machine_paths(tmp_path):
    """scripts/nb.py: no ipykernel TCP notice on the console, no absolute path of the working
    folder in the executed notebook or its HTML."""
    import subprocess
    import sys

    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os, warnings\nprint(os.getcwd() + '/results/x.json')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "20_report.ipynb")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "nb.py"), "20_report", ""], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "without encryption" not in out.stderr, out.stderr
    for suffix in (".ipynb", ".html"):
        text = (tmp_path / "reports" / "notebooks" / f"20_report{suffix}").read_text()
        assert str(tmp_path) not in text and "results/x.json" in text, suffix


def test_check_reports_finds_machine_paths_and_cells_without_n(fake):
    """scripts/check_reports.py (run by CI after the pipeline) passes on the built report and
    names a machine path and an accuracy without ± and n once they appear."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_reports", REPO / "scripts" / "check_reports.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    reports.build("quick")
    assert check.uncertainty_cells() == [] and check.machine_paths() == []
    assert check.main() == 0
    (fake / "reports" / "notebooks").mkdir(parents=True, exist_ok=True)
    (fake / "reports" / "notebooks" / "x.html").write_text(f"<pre>{fake}/results/a.json</pre>")
    table = fake / "reports" / "tables" / "table7.csv"
    table.write_text(table.read_text().replace("90.0 ± 0.9 (n = 1000)", "90.0"))
    assert check.machine_paths() == [f"reports/notebooks/x.html names the machine folder {fake}"]
    assert [p.split(":")[0] for p in check.uncertainty_cells()] == ["tables/table7.csv"]
