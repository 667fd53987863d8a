"""The report (dualat.reports) on fake records written in a temporary folder: every paper row,
verdicts per profile, KID comparisons, footnotes, sources, AutoAttack warnings, figures."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dualat import paper_values, reports
from dualat.records import NotComputed

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, metrics: dict, extra: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": metrics, "extra": extra or {}}))


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


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """CIFAR-10 records of all three methods (Dual-AT near the paper, KIDs chosen so that Dual-AT
    vs Standard AT exceeds the uncertainty and Dual-AT vs RATIO does not); CIFAR-100 accuracy of
    Dual-AT missing its data."""
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
        extra = {"model_source": f"models/cifar10/{m}/best.pt (selected)", "data_provenance": {"cifar10": "local npz"}}
        aa = {"robust_acc": robust, "clean_acc": clean, "per_attack": {}, "n": 100, "warnings": warns}
        _write(res / "cifar10" / m / "accuracy" / "accuracy.json", {"clean_acc": clean, "autoattack": aa}, extra)
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
    reason = "cifar100: data not found (tried /data/a/cifar100_test_00.npz, /data/b; see README, Data)"
    _write(res / "cifar100" / "dualat" / "accuracy" / "accuracy.json", {"clean_acc": f"not computed: {reason}"})
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
    assert {"CIFAR-10 Dual-AT", "CIFAR-10 RATIO", "CIFAR-10 seed images x0 (control)"} <= t1
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
    fid = by["CIFAR-10 RATIO", fid_conditional]  # 30 vs 21.96: outside +-10%
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


def test_footnotes_hold_full_reasons(fake):
    _, html_path = reports.write_table(2, reports.table2(), "paper")
    page = html_path.read_text()
    assert "not computed: cifar100 data missing [" in page  # the short reason in the cell
    assert "/data/a/cifar100_test_00.npz" in page.split("</table>", 1)[1]  # the full one in a footnote
    assert page.split("</table>", 1)[0].count("/data/a/cifar100_test_00.npz") == 0
    csv_rows = list(csv.DictReader((fake / "reports" / "tables" / "table2.csv").open()))
    assert any("/data/a/cifar100_test_00.npz" in r["ours"] for r in csv_rows)


def test_sources_and_autoattack_warnings(fake):
    _, html_path = reports.write_table(1, reports.table1(), "paper")
    page = html_path.read_text()
    assert "model models/cifar10/dualat/best.pt (selected); data cifar10: local npz" in page
    assert "AutoAttack warnings, CIFAR-10 Dual-AT: it seems that the output is a probability" in page
    assert "AutoAttack warnings, CIFAR-10 RATIO: none" in page
    assert "FID/KID protocol, CIFAR-10 RATIO: mode: clean; n: 100; reference: train" in page
    del_warnings = reports.record("cifar10", "ratio", "accuracy")
    del del_warnings["autoattack"]["warnings"]  # a record written before warnings were kept
    _write(fake / "results" / "cifar10" / "ratio" / "accuracy" / "accuracy.json", del_warnings)
    assert "AutoAttack warnings, CIFAR-10 RATIO: not computed: not in this record" in reports.autoattack_warnings()
    assert any("Dual-AT: it seems" in line for line in reports.autoattack_warnings())


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
    assert "not computed: cifar100 data missing [" in index  # short in the cell, full in a footnote
    cell, footnote = index.split("cifar100 data missing [", 1)
    assert "/data/a/cifar100_test_00.npz" not in cell and "/data/a/cifar100_test_00.npz" in footnote


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
        assert header == [reports.COLUMNS[k] for k in reports.FIELDS], number
        assert "".join(f"<th>{h}</th>" for h in header) in html_path.read_text(), number
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
    for name in ("train.py", "losses.py", "sampling.py", "data/streams.py", "metrics/ood.py"):
        assert not runs.excluded(PurePosixPath(name), runs.NOT_TRAINING_CODE), name
    assert runs.excluded(PurePosixPath("evaluation/runner.py"), runs.NOT_TRAINING_CODE)
    assert not runs.excluded(PurePosixPath("evaluate.py"), runs.NOT_EVALUATION_CODE)
