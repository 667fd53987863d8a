"""The index's section on the proxy run (scripts/gpu_proxy.sh, evaluated by `dualat.proxy.ingest`
into results/proxy/proxy.json): one row per method, and Dual-AT's differences to the other two
methods with their spreads. It compares methods of one run with each other, never with the paper."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from dualat.reports.reading import RESULTS
from dualat.reports.uncertainty import binomial_se, pm_text
from dualat.reports.vocabulary import METHOD_NAMES, QUANTITIES

# Columns of the proxy table after the method, in order (their headers: vocabulary.QUANTITIES).
PROXY_COLUMNS = ("clean_acc", "pgd_acc", "autoattack_acc", "fid", "kid", "n_samples", "steps")


def _pm(v: Any, spread: Any = None, scale: float = 1.0) -> str:
    """ "v ± s" of a number and its spread (both times `scale`); the text of anything else."""
    if not isinstance(v, (int, float)):
        return html.escape(str(v))
    return f"{v * scale:.2f}" + (f" ± {spread * scale:.2f}" if isinstance(spread, (int, float)) else "")


def _method_row(method: str, metrics: dict) -> str:
    """One row of PROXY_COLUMNS: accuracies ± their binomial s.e., FID ± the bootstrap s.d. of the
    samples, KID ×10³ ± the s.d. over subsets."""

    def accuracy(key: str, n: str) -> str:  # "x ± s (n = N)", as in every table
        se = binomial_se(metrics[key], metrics[n])
        return pm_text(100 * metrics[key], 100 * se, metrics[n]) if se is not None else _pm(metrics[key], None, 100)

    cells = [
        accuracy("clean_acc", "n_test"),
        accuracy("pgd_acc", "n_test"),
        accuracy("autoattack_acc", "n_autoattack"),
        _pm(metrics["fid"], metrics["fid_boot_std"]),
        _pm(metrics["kid"], metrics["kid_std"], 1000),
        str(metrics["n_samples"]),
        str(metrics["steps"]),
    ]
    return f"<tr><td>{METHOD_NAMES[method]}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _proxy_claim(methods: dict, a: str, b: str) -> str:
    """The paper's ordering of `a` against `b`: differences of FID, KID and AutoAttack accuracy
    with the spreads combined as independent (an upper bound for the paired accuracy difference)."""
    ma, mb = methods[a], methods[b]
    parts = []
    for key, spread, scale in (("fid", "fid_boot_std", 1), ("kid", "kid_std", 1000)):
        if isinstance(ma[key], (int, float)) and isinstance(mb[key], (int, float)):
            s = math.hypot(ma[spread] or 0, mb[spread] or 0) * scale
            parts.append(f"{QUANTITIES[key]} {(ma[key] - mb[key]) * scale:+.2f} ± {s:.2f}")
    se = [binomial_se(m["autoattack_acc"], m["n_autoattack"]) for m in (ma, mb)]
    if None not in se:
        diff = (ma["autoattack_acc"] - mb["autoattack_acc"]) * 100
        parts.append(f"AutoAttack accuracy {diff:+.2f} ± {math.hypot(*se) * 100:.2f} points")
    return f"{METHOD_NAMES[a]} minus {METHOD_NAMES[b]}: " + ", ".join(parts)


def proxy_section(path: Path = RESULTS / "proxy" / "proxy.json") -> str:
    """HTML of the proxy run (scripts/gpu_proxy.sh, evaluated by `dualat.proxy.ingest`); "" without one."""
    if not path.exists():
        return ""
    metrics = json.loads(path.read_text())["metrics"]
    run, hw = metrics["run"], metrics["run"]["hardware"]
    rows = "".join(_method_row(method, m) for method, m in metrics["methods"].items())
    secs = " · ".join(f"{k} {v:.0f} s" for k, v in run["seconds"].items())
    claims = "".join(
        f"<li>{html.escape(_proxy_claim(metrics['methods'], 'dualat', other))}</li>"
        for other in ("standard_at", "ratio")
    )
    head = "<th>method</th>" + "".join(f"<th>{html.escape(QUANTITIES[key])}</th>" for key in PROXY_COLUMNS)
    return (
        "<h2>Proxy profile (one GPU, CIFAR-10)</h2>"
        f"<p>trained on {html.escape(str(hw.get('gpu') or 'CPU'))} ({html.escape(str(hw.get('torch')))}) on "
        f"{html.escape(str(hw.get('date')))}: {html.escape(secs)}; stage-2 steps {run['steps']['dualat']}, final T "
        f"{run['final_T']}{' (cut short by the time budget)' if run.get('stage2_cut_short') else ''}. Evaluated here "
        f"(accuracy ± binomial s.e., FID ± bootstrap s.d. of the samples, {html.escape(QUANTITIES['kid'])} ± s.d. "
        f"over subsets).</p><table><tr>{head}</tr>{rows}</table><ul>{claims}</ul>"
        f"<p>{html.escape(_sizing(run))}</p>"
    )


def _sizing(run: dict) -> str:
    """How far the run got against its plan, and what a shortened run can show."""
    done = []
    if isinstance(run.get("stage1_epochs"), dict):
        done.append(f"stage 1 and RATIO ran {run['stage1_epochs']['run']} of {run['stage1_epochs']['planned']} epochs")
    if run.get("stage2_steps_planned"):
        done.append(f"stage 2 ran {run['steps']['dualat']} of {run['stage2_steps_planned']} iterations")
    return (
        (("; ".join(done) + ". ") if done else "")
        + "A difference reads as an ordering only where it exceeds its ±; a run cut short by its time budget "
        "shows that the chain runs on a GPU and how fast (docs/gpu_measurements.md), not the paper's claims."
    )
