"""Tables 1-12 (CSV + HTML, the paper's value beside ours and the difference), Figures 1-8 (PNG)
and reports/index.html, built only from the records the pipeline wrote (results/, models/,
params.yaml, executed notebooks). A value that was not computed reads `not computed: <reason>`.
"""

from __future__ import annotations

import html
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

from dualat import paper_values as P
from dualat.config import DATASETS, METHODS, load
from dualat.records import NotComputed

REPORTS = Path("reports")
RESULTS = Path("results")
MODELS = Path("models")
METHOD_NAMES = {"standard_at": "Standard AT", "ratio": "RATIO", "dualat": "Dual-AT"}
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "rin": "RestrictedImageNet"}
TABLE_TITLES = {
    1: "CIFAR-10 classification and generative modeling",
    2: "CIFAR-100 and RestrictedImageNet classification and generation",
    3: "Training hyperparameters of both stages",
    4: "Adversarial training parameters of L_AT-CE",
    5: "Adversarial parameters of L_BCE (stage 2)",
    6: "Data augmentation of the two loss terms",
    7: "RATIO models: clean and robust accuracy",
    8: "Sample generation parameters (steps of Eq. 14)",
    9: "FID of conditional and unconditional generation (Dual-AT)",
    10: "OOD detection (AUROC), CIFAR-10 in-distribution",
    11: "OOD detection (AUROC), CIFAR-100 in-distribution",
    12: "OOD detection (AUROC), RestrictedImageNet in-distribution",
}
FIGURE_TITLES = {
    1: "Counterfactual FID against confidence p(t|x') over the eps grid",
    2: "Stage-2 curves under different augmentations of L_BCE (CIFAR-10)",
    3: "Calibration: reliability diagrams and ECE (CIFAR-10, no temperature scaling)",
    4: "Stage-2 training curves: robust accuracy (PGD) and FID of the EMA model",
    5: "CIFAR-10 class-conditional samples: seeds, Dual-AT, RATIO",
    6: "CIFAR-100 class-conditional samples (first 10 classes): seeds, Dual-AT, RATIO",
    7: "RestrictedImageNet class-conditional samples: seeds, Dual-AT, RATIO",
    8: "Unconditional samples of Dual-AT",
}


# --- reading records ------------------------------------------------------------------------------


def record(dataset: str, method: str, group: str) -> dict | NotComputed:
    """The metrics of results/<dataset>/<method>/<group>/<group>.json, or NotComputed."""
    path = RESULTS / dataset / method / group / f"{group}.json"
    if not path.exists():
        return NotComputed(f"{path} was not produced")
    metrics = json.loads(path.read_text())["metrics"]
    return metrics


def value(tree: Any, *keys: str) -> Any:
    """tree[k1][k2]...; a `not computed: ...` string or NotComputed anywhere on the way wins."""
    for key in keys:
        if isinstance(tree, NotComputed):
            return tree
        if isinstance(tree, str) and tree.startswith("not computed"):
            return NotComputed(tree.split(":", 1)[1].strip())
        if not isinstance(tree, dict) or key not in tree:
            return NotComputed(f"no value {'.'.join(keys)} in the record")
        tree = tree[key]
    if isinstance(tree, str) and tree.startswith("not computed"):
        return NotComputed(tree.split(":", 1)[1].strip())
    return tree


def _pct(v: Any) -> Any:
    return v * 100 if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _diff(ours: Any, paper: Any) -> Any:
    nums = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (ours, paper))
    if nums:
        return ours - paper
    if paper is None or isinstance(ours, NotComputed):
        return ""
    return "same" if ours == paper else "differs"


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


# --- tables ---------------------------------------------------------------------------------------


def _row(setting: str, quantity: str, paper: Any, ours: Any, note: str = "") -> dict:
    return {
        "setting": setting,
        "quantity": quantity,
        "paper": paper,
        "ours": ours,
        "difference": _diff(ours, paper),
        "note": note,
    }


def table_accuracy_generation(datasets: tuple[str, ...], paper: dict) -> list[dict]:
    rows = []
    for dataset in datasets:
        for method in METHODS:
            acc, gen = record(dataset, method, "accuracy"), record(dataset, method, "generation")
            ref = paper.get(dataset, paper).get(method, {}) if dataset in paper else paper.get(method, {})
            name = f"{DATASET_NAMES[dataset]} {METHOD_NAMES[method]}"
            rows.append(_row(name, "clean acc %", ref.get("clean_acc"), _pct(value(acc, "clean_acc"))))
            rows.append(
                _row(
                    name,
                    "robust acc % (AutoAttack)",
                    ref.get("robust_acc"),
                    _pct(value(acc, "autoattack", "robust_acc")),
                )
            )
            if "inception_score" in ref:
                rows.append(_row(name, "IS", ref.get("inception_score"), value(gen, "inception_score")))
            rows.append(_row(name, "FID", ref.get("fid"), value(gen, "fid_conditional")))
    return rows


def table1() -> list[dict]:
    rows = table_accuracy_generation(("cifar10",), P.TABLE1)
    for name, ref in P.TABLE1_QUOTED.items():
        for q, v in ref.items():
            rows.append(_row(name, q, v, NotComputed("quoted by the paper from other work; not reproduced"), "quoted"))
    return rows


def table2() -> list[dict]:
    return table_accuracy_generation(("cifar100", "rin"), P.TABLE2)


def _paper_cfg(dataset: str):
    return load(dataset=dataset, profile="paper")


def table3() -> list[dict]:
    rows = []
    for dataset, ref in P.TABLE3.items():
        c = _paper_cfg(dataset)
        arch = f"wrn-{c.model.depth}-{c.model.widen_factor}" if c.model.arch == "wrn" else c.model.arch
        ours = {
            "architecture": arch, "momentum": c.stage1.optim.momentum, "nesterov": c.stage1.optim.nesterov,
            "weight_decay": c.stage1.optim.weight_decay, "batch_size": c.stage1.batch_size, "ema": c.stage1.ema.enabled,
            "stage1_lr": c.stage1.optim.lr, "stage1_epochs": c.stage1.epochs, "stage1_schedule": c.stage1.optim.schedule,
            "stage2_lr": c.stage2.optim.lr,
        }  # fmt: skip
        rows += [_row(DATASET_NAMES[dataset], q, v, ours[q]) for q, v in ref.items()]
    return rows


def table4() -> list[dict]:
    rows = []
    for dataset, ref in P.TABLE4.items():
        a = _paper_cfg(dataset).stage1.attack
        ours = {"pgd_steps": a.steps, "pgd_step_size": a.step_size, "eps": a.eps}
        rows += [_row(DATASET_NAMES[dataset], q, v, ours[q]) for q, v in ref.items()]
    return rows


def table5() -> list[dict]:
    rows = []
    for dataset, ref in P.TABLE5.items():
        c = _paper_cfg(dataset)
        ours = {
            "max_pgd_steps": c.stage2.sampler.T_max,
            "pgd_step_size": c.stage2.sampler.step_size,
            "ood_source": c.data.ood,
        }
        rows += [_row(DATASET_NAMES[dataset], q, v, ours[q]) for q, v in ref.items()]
    return rows


def table6() -> list[dict]:
    from dualat.data import classification_transform, generative_transform

    rows = []
    for family, dataset in (("cifar", "cifar10"), ("rin", "rin")):
        kind = _paper_cfg(dataset).stage2.sampler.augmentation
        ours = {
            "L_AT-CE": _describe(classification_transform(dataset)),
            "L_BCE": f"{kind}: " + _describe(generative_transform(dataset, kind)),
        }
        rows += [
            _row(family.upper() if family == "rin" else "CIFAR-10/100", q, v, ours[q])
            for q, v in P.TABLE6[family].items()
        ]
    return rows


def _describe(transform: Any) -> str:
    steps = getattr(transform, "transforms", [transform])
    return " + ".join(type(t).__name__ for t in steps)


def table7() -> list[dict]:
    rows = []
    for dataset, ref in P.TABLE7.items():
        acc = record(dataset, "ratio", "accuracy")
        rows.append(
            _row(f"{DATASET_NAMES[dataset]} RATIO", "clean acc %", ref["clean_acc"], _pct(value(acc, "clean_acc")))
        )
        rows.append(
            _row(
                f"{DATASET_NAMES[dataset]} RATIO",
                "robust acc %",
                ref["robust_acc"],
                _pct(value(acc, "autoattack", "robust_acc")),
            )
        )
    return rows


def table8() -> list[dict]:
    rows = []
    for method, per in P.TABLE8.items():
        for dataset, steps in per.items():
            c = _paper_cfg(dataset)
            name = f"{DATASET_NAMES[dataset]} {METHOD_NAMES[method]}"
            rows.append(_row(name, "PGD steps (params, paper profile)", steps, getattr(c.sample.steps, method)))
            rows.append(_row(name, "step size", P.TABLE8_STEP[dataset], c.sample.step_size))
            rows.append(
                _row(
                    name,
                    "best steps of our grid search (this run)",
                    steps,
                    value(record(dataset, method, "generation"), "grid", "best_T"),
                )
            )
    return rows


def table9() -> list[dict]:
    rows = []
    for mode, per in P.TABLE9.items():
        for dataset, fid in per.items():
            gen = record(dataset, "dualat", "generation")
            rows.append(_row(DATASET_NAMES[dataset], f"FID, {mode} generation", fid, value(gen, f"fid_{mode}")))
    return rows


def table_ood(dataset: str) -> list[dict]:
    rows = []
    columns = {
        "ratio": ("ratio", "max_prob"),
        "dualat_max_prob": ("dualat", "max_prob"),
        "dualat_neg_energy": ("dualat", "neg_energy"),
    }
    ours_sets = {m: record(dataset, m, "ood") for m in METHODS}
    cfg = load(dataset=dataset)
    for ood_set, ref in P.OOD[dataset].items():
        for column, (method, score) in columns.items():
            for i, kind in enumerate(("clean", "adversarial")):
                name = _ood_name(cfg, ood_set)
                ours = value(ours_sets[method], "sets", name, score, kind)
                label = f"{METHOD_NAMES[method]} ({'max p(y|x)' if score == 'max_prob' else '-E(x)'})"
                note = "" if name == ood_set else f"offline stand-in for {ood_set}: {name}"
                rows.append(_row(f"{ood_set} | {label}", kind, ref[column][i], ours, note))
    return rows


def _ood_name(cfg, paper_set: str) -> str:
    """The set this run used for a paper OOD set (Tiny-ImageNet stands in for ImageNetOD)."""
    if (
        paper_set == "imagenet_od"
        and "imagenet_od" not in cfg.evaluate.ood_sets
        and "tinyimagenet32" in cfg.evaluate.ood_sets
    ):
        return "tinyimagenet32"
    return paper_set


TABLES = {
    1: table1, 2: table2, 3: table3, 4: table4, 5: table5, 6: table6, 7: table7, 8: table8, 9: table9,
    10: lambda: table_ood("cifar10"), 11: lambda: table_ood("cifar100"), 12: lambda: table_ood("rin"),
}  # fmt: skip


def write_table(number: int, rows: list[dict], out: Path = REPORTS / "tables") -> tuple[Path, Path]:
    import csv

    out.mkdir(parents=True, exist_ok=True)
    csv_path, html_path = out / f"table{number}.csv", out / f"table{number}.html"
    fields = ["setting", "quantity", "paper", "ours", "difference", "note"]
    with csv_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fields)
        w.writeheader()
        w.writerows({k: _fmt(r[k]) for k in fields} for r in rows)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"nc" if isinstance(r[k], NotComputed) else ""}">{html.escape(_fmt(r[k]))}</td>'
            for k in fields
        )
        + "</tr>"
        for r in rows
    )
    head = "".join(f"<th>{k}</th>" for k in fields)
    html_path.write_text(_page(f"Table {number}: {TABLE_TITLES[number]}", f"<table><tr>{head}</tr>{body}</table>"))
    return csv_path, html_path


# --- figures --------------------------------------------------------------------------------------


def _save(fig, number: int) -> Path:
    import matplotlib.pyplot as plt

    out = REPORTS / "figures"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"figure{number}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _not_computed_axes(ax, reason: str) -> None:
    ax.text(
        0.5,
        0.5,
        "not computed:\n" + _wrap(reason),
        ha="center",
        va="center",
        fontsize=8,
        wrap=True,
        transform=ax.transAxes,
    )
    ax.set_axis_off()


def _wrap(text: str, width: int = 60) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:6])


def figure1() -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(DATASETS), figsize=(5 * len(DATASETS), 4))
    for ax, dataset in zip(axes, DATASETS):
        drawn = False
        for method in METHODS:
            cf = record(dataset, method, "counterfactuals")
            fid, conf, eps = value(cf, "fid"), value(cf, "confidence"), value(cf, "eps")
            if isinstance(fid, list):
                pts = [
                    (c, f, e)
                    for c, f, e in zip(conf, fid, eps)
                    if isinstance(f, (int, float)) and isinstance(c, (int, float))
                ]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=METHOD_NAMES[method])
                    for c, f, e in pts:
                        ax.annotate(f"{e:g}", (c, f), fontsize=7, textcoords="offset points", xytext=(3, 3))
                    drawn = True
        if drawn:
            ax.set(title=DATASET_NAMES[dataset], xlabel="confidence p(t|x')", ylabel="class-wise FID")
            ax.legend()
        else:
            _not_computed_axes(
                ax, f"{DATASET_NAMES[dataset]}: " + str(value(record(dataset, "dualat", "counterfactuals"), "fid"))
            )
    return _save(fig, 1)


def _history(folder: Path) -> list[dict] | NotComputed:
    path = folder / "history.json"
    status = folder / "status.json"
    if status.exists() and not json.loads(status.read_text())["computed"]:
        return NotComputed(json.loads(status.read_text())["reason"])
    if not path.exists():
        return NotComputed(f"{path} was not produced")
    return json.loads(path.read_text())


def _curves(axes, runs: dict[str, list[dict] | NotComputed], keys: tuple[str, ...]) -> None:
    for ax, key in zip(axes, keys):
        for label, hist in runs.items():
            if isinstance(hist, list):
                pts = [(h.get("images", h["step"]), h[key]) for h in hist if key in h]
                if pts:
                    ax.plot(*zip(*pts), "o-", label=label, markersize=3)
        ax.set(xlabel="training images", ylabel=key)
        ax.legend(fontsize=7)


def figure2() -> Path:
    import matplotlib.pyplot as plt

    kinds = load(dataset="cifar10").stage2.ablation_kinds
    runs = {k: _history(MODELS / "cifar10" / "ablation" / k) for k in kinds}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    if all(isinstance(r, NotComputed) for r in runs.values()):
        for ax in axes:
            _not_computed_axes(ax, str(next(iter(runs.values()))))
    else:
        _curves(axes, runs, ("robust_acc", "fid"))
    return _save(fig, 2)


def figure3() -> Path:
    import matplotlib.pyplot as plt

    from dualat.metrics import plot_reliability

    fig, axes = plt.subplots(1, len(METHODS), figsize=(4.5 * len(METHODS), 4))
    for ax, method in zip(axes, METHODS):
        acc = record("cifar10", method, "accuracy")
        data, ece = value(acc, "reliability"), value(acc, "ece")
        if isinstance(data, dict) and isinstance(ece, (int, float)):
            plot_reliability(ax, data, f"{METHOD_NAMES[method]}  ECE {100 * ece:.2f}%")
        else:
            _not_computed_axes(ax, str(data if isinstance(data, NotComputed) else ece))
    return _save(fig, 3)


def figure4() -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(DATASETS), figsize=(5 * len(DATASETS), 7), squeeze=False)
    for j, dataset in enumerate(DATASETS):
        hist = _history(MODELS / dataset / "dualat")
        if isinstance(hist, NotComputed):
            for ax in axes[:, j]:
                _not_computed_axes(ax, f"{DATASET_NAMES[dataset]}: {hist.reason}")
            continue
        _curves(axes[:, j], {DATASET_NAMES[dataset]: hist}, ("robust_acc", "fid"))
    return _save(fig, 4)


def _image_or_reason(path: Path, status_of: dict | NotComputed) -> Any:
    if path.exists():
        import matplotlib.image as mpimg

        return mpimg.imread(path)
    return status_of if isinstance(status_of, NotComputed) else NotComputed(f"{path} was not produced")


def figure_samples(number: int, dataset: str) -> Path:
    import matplotlib.pyplot as plt

    panels = {
        "seeds": RESULTS / dataset / "dualat" / "generation" / "seeds.png",
        "Dual-AT": RESULTS / dataset / "dualat" / "generation" / "samples_conditional.png",
        "RATIO": RESULTS / dataset / "ratio" / "generation" / "samples_conditional.png",
    }
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, (title, path) in zip(axes, panels.items()):
        method = "ratio" if title == "RATIO" else "dualat"
        img = _image_or_reason(path, value(record(dataset, method, "generation"), "fid_conditional"))
        if isinstance(img, NotComputed):
            _not_computed_axes(ax, f"{DATASET_NAMES[dataset]}: {img.reason}")
        else:
            ax.imshow(img)
            ax.set_title(title)
            ax.set_axis_off()
    return _save(fig, number)


def figure8() -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(DATASETS), figsize=(5 * len(DATASETS), 5))
    for ax, dataset in zip(axes, DATASETS):
        path = RESULTS / dataset / "dualat" / "generation" / "samples_unconditional.png"
        img = _image_or_reason(path, value(record(dataset, "dualat", "generation"), "fid_unconditional"))
        if isinstance(img, NotComputed):
            _not_computed_axes(ax, f"{DATASET_NAMES[dataset]}: {img.reason}")
        else:
            ax.imshow(img)
            ax.set_title(DATASET_NAMES[dataset])
            ax.set_axis_off()
    return _save(fig, 8)


FIGURES = {
    1: figure1, 2: figure2, 3: figure3, 4: figure4, 5: lambda: figure_samples(5, "cifar10"),
    6: lambda: figure_samples(6, "cifar100"), 7: lambda: figure_samples(7, "rin"), 8: figure8,
}  # fmt: skip


# --- notebook-side plots ----------------------------------------------------------------------------


def plot_training(folder: str | Path, keys: list[str]):
    """Curves of history.json in a training folder, one panel per key (or the not-computed reason)."""
    import matplotlib.pyplot as plt

    hist = _history(Path(folder))
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    if isinstance(hist, NotComputed):
        _not_computed_axes(axes[0, 0], hist.reason)
        for ax in axes[0, 1:]:
            ax.set_axis_off()
        return fig
    _curves(axes[0], {Path(folder).name: hist}, tuple(keys))
    fig.tight_layout()
    return fig


def plot_ablation(folder: str | Path, kinds: tuple[str, ...]):
    """Figure 2 from the ablation runs in folder/<kind>/history.json."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    _curves(axes, {k: _history(Path(folder) / k) for k in kinds}, ("robust_acc", "fid"))
    return fig


# --- index ----------------------------------------------------------------------------------------


def _page(title: str, body: str) -> str:
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}.nc{color:#a33}img{max-width:100%}"
    )
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"


def stage_times() -> list[dict]:
    """Wall-clock seconds of every executed notebook (papermill's own record)."""
    rows = []
    for path in sorted((REPORTS / "notebooks").glob("*.ipynb")):
        meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
        rows.append(
            {
                "notebook": path.stem,
                "seconds": meta.get("duration"),
                "start": meta.get("start_time"),
                "html": f"notebooks/{path.stem}.html",
            }
        )
    return rows


def hardware() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def _pm(value: Any, spread: Any = None, scale: float = 1.0) -> str:
    """ "v ± s" of a number and its spread (both times `scale`); the text of anything else."""
    if not isinstance(value, (int, float)):
        return html.escape(str(value))
    return f"{value * scale:.2f}" + (f" ± {spread * scale:.2f}" if isinstance(spread, (int, float)) else "")


def _binomial_se(p: Any, n: Any) -> float | None:
    return math.sqrt(p * (1 - p) / n) if isinstance(p, (int, float)) and isinstance(n, int) and n > 0 else None


def proxy_section(path: Path = RESULTS / "proxy" / "proxy.json") -> str:
    """HTML of the proxy run (scripts/gpu_proxy.sh, evaluated by `dualat.proxy.ingest`); "" without one."""
    if not path.exists():
        return ""
    metrics = json.loads(path.read_text())["metrics"]
    run = metrics["run"]
    hw = run["hardware"]

    rows = ""
    for method, m in metrics["methods"].items():
        cells = [
            _pm(m["clean_acc"], _binomial_se(m["clean_acc"], m["n_test"]), 100),
            _pm(m["pgd_acc"], _binomial_se(m["pgd_acc"], m["n_test"]), 100),
            _pm(m["autoattack_acc"], _binomial_se(m["autoattack_acc"], m["n_autoattack"]), 100),
            _pm(m["fid"], m["fid_boot_std"]),
            _pm(m["kid"], m["kid_std"], 1000),
            str(m["n_samples"]),
            str(m["steps"]),
        ]
        rows += f"<tr><td>{METHOD_NAMES[method]}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    secs = " · ".join(f"{k} {v:.0f} s" for k, v in run["seconds"].items())
    claims = "".join(
        f"<li>{html.escape(_proxy_claim(metrics['methods'], 'dualat', other))}</li>"
        for other in ("standard_at", "ratio")
    )
    return (
        "<h2>Proxy profile (one GPU, CIFAR-10)</h2>"
        f"<p>trained on {html.escape(str(hw.get('gpu') or 'CPU'))} ({html.escape(str(hw.get('torch')))}) on "
        f"{html.escape(str(hw.get('date')))}: {html.escape(secs)}; stage-2 steps {run['steps']['dualat']}, final T "
        f"{run['final_T']}{' (cut short by the time budget)' if run.get('stage2_cut_short') else ''}. Evaluated here "
        "(accuracy ± binomial s.e., FID ± bootstrap s.d. of the samples, KID x 1000 ± s.d. over subsets).</p>"
        "<table><tr><th>method</th><th>clean %</th><th>PGD %</th><th>AutoAttack %</th><th>FID</th>"
        f"<th>KID x1000</th><th>samples</th><th>steps</th></tr>{rows}</table><ul>{claims}</ul>"
    )


def _proxy_claim(methods: dict, a: str, b: str) -> str:
    """The paper's ordering of `a` against `b`: differences of FID, KID and AutoAttack accuracy
    with the spreads combined as independent (an upper bound for the paired accuracy difference)."""
    ma, mb = methods[a], methods[b]
    parts = []
    for key, spread, scale, name in (("fid", "fid_boot_std", 1, "FID"), ("kid", "kid_std", 1000, "KID x1000")):
        if isinstance(ma[key], (int, float)) and isinstance(mb[key], (int, float)):
            s = math.hypot(ma[spread] or 0, mb[spread] or 0) * scale
            parts.append(f"{name} {(ma[key] - mb[key]) * scale:+.2f} ± {s:.2f}")
    se = [_binomial_se(m["autoattack_acc"], m["n_autoattack"]) for m in (ma, mb)]
    if None not in se:
        diff = (ma["autoattack_acc"] - mb["autoattack_acc"]) * 100
        parts.append(f"AutoAttack accuracy {diff:+.2f} ± {math.hypot(*se) * 100:.2f} points")
    return f"{METHOD_NAMES[a]} minus {METHOD_NAMES[b]}: " + ", ".join(parts)


def write_index(profile: str, tables: dict[int, tuple[Path, Path]], figures: dict[int, Path]) -> Path:
    from dualat.records import git_revision

    times = stage_times()
    total = sum(t["seconds"] or 0 for t in times)
    items = "".join(
        f"<li><a href='tables/{h.name}'>Table {n}</a> (<a href='tables/{c.name}'>csv</a>): {html.escape(TABLE_TITLES[n])}</li>"
        for n, (c, h) in sorted(tables.items())
    )
    figs = "".join(
        f"<li><a href='figures/{p.name}'>Figure {n}</a>: {html.escape(FIGURE_TITLES[n])}<br><img src='figures/{p.name}' width='600'></li>"
        for n, p in sorted(figures.items())
    )
    rows = "".join(
        f"<tr><td><a href='{html.escape(t['html'])}'>{html.escape(t['notebook'])}</a></td><td>{_fmt(t['seconds'])}</td><td>{html.escape(str(t['start']))}</td></tr>"
        for t in times
    )
    body = (
        f"<p>profile <b>{html.escape(profile)}</b> · code revision <code>{html.escape(git_revision())}</code> · "
        f"built {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} · {html.escape(hardware())} · "
        f"notebooks' wall-clock total {total / 60:.1f} min</p>"
        f"{proxy_section()}<h2>Tables</h2><ul>{items}</ul><h2>Figures</h2><ul>{figs}</ul>"
        f"<h2>Executed notebooks (pipeline stages)</h2><table><tr><th>stage</th><th>seconds</th><th>started</th></tr>{rows}</table>"
    )
    path = REPORTS / "index.html"
    path.write_text(_page("Dual-AT reproduction report", body))
    return path


def build(profile: str | None = None) -> Path:
    """Write every table, figure, reports/metrics.json and reports/index.html; return the index."""
    from dualat.config import read_params

    profile = profile or read_params()["profile"]
    tables = {n: write_table(n, fn()) for n, fn in TABLES.items()}
    figures = {n: fn() for n, fn in FIGURES.items()}
    write_metrics()
    return write_index(profile, tables, figures)


def write_metrics() -> Path:
    """Headline numbers for `dvc metrics show`."""
    out = {}
    for dataset in DATASETS:
        for method in METHODS:
            acc, gen = record(dataset, method, "accuracy"), record(dataset, method, "generation")
            entry = {
                "clean_acc": value(acc, "clean_acc"),
                "autoattack_acc": value(acc, "autoattack", "robust_acc"),
                "fid": value(gen, "fid_conditional"),
            }
            out.setdefault(dataset, {})[method] = {
                k: (v if isinstance(v, (int, float)) else str(v)) for k, v in entry.items()
            }
    path = REPORTS / "metrics.json"
    path.write_text(json.dumps(out, indent=1))
    return path


def show_tables(numbers=tuple(TABLES)):
    """Display the tables in a notebook."""
    from IPython.display import HTML, display

    for n in numbers:
        path = REPORTS / "tables" / f"table{n}.html"
        if path.exists():
            display(
                HTML(f"<h3>Table {n}: {html.escape(TABLE_TITLES[n])}</h3>" + path.read_text().split("</h1>", 1)[-1])
            )
