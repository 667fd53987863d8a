"""The code each kind of pipeline stage runs, as small files that dvc.yaml's stages list as deps.

DVC reruns a stage when a dependency's bytes change. Listing the whole `dualat` folder made every
stage rerun after any edit (a report template, a docstring). Instead the `code_hashes` stage (run
on every `dvc repro`, cheap: no torch) writes one file per kind of stage, `data/prepared/code/<kind>.json`,
holding `runs.code_hash` of the modules that kind runs, compared as syntax trees (comments,
docstrings and formatting do not count). A file is rewritten only when its hash changes, so:

* a comment or docstring edit reruns nothing;
* an edit of `dualat/reports/` changes report.json only: only the `report` stage reruns;
* an edit of `dualat/evaluation/` changes evaluation.json and report.json: the evaluation stages
  and the report rerun (the evaluation records are recomputed, as their key holds the same hash);
* an edit of training code changes all three.

The kinds use the same exclusions as the keys that decide reuse inside a stage (`dualat.runs`):
training runs resume on `runs.code_hash()` and evaluation records are reused on
`runs.code_hash(runs.evaluation_code_exclusions())`, so a stage DVC skips is one whose key would say "reuse".
`STAGE_KINDS` names the kind of every stage of dvc.yaml (tests/test_dvc_pipeline.py checks them).
Run as `python -m dualat.code_hashes OUT_DIR`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from dualat import runs

# The report imports every kind of code (records, config, evaluation results); only the
# interactive notebook's helpers (explore) and the GPU proxy chain (proxy, proxy_eval), which
# writes results/proxy/ outside the pipeline, are not run by it; nor is this module.
NOT_REPORT_CODE = ("code_hashes", "explore", "proxy", "proxy_eval")
KINDS: dict[str, Callable[[], tuple[str, ...]]] = {  # what each kind's hash leaves out
    "training": lambda: runs.NOT_TRAINING_CODE,
    "evaluation": runs.evaluation_code_exclusions,  # what dualat/evaluation/ does not import
    "report": lambda: NOT_REPORT_CODE,
}
# The kind of code each stage of dvc.yaml runs (stages not named run no package code of a kind:
# data_sources fingerprints files on every repro, code_hashes writes these files).
STAGE_KINDS = {
    "prepare": "training",  # data checks and the FID reference: the code training reads data with
    "standard_at": "training",
    "ratio": "training",
    "dualat": "training",
    "ablation": "training",
    "eval_accuracy": "evaluation",
    "eval_generation": "evaluation",
    "eval_counterfactuals": "evaluation",
    "eval_ood": "evaluation",
    "report": "report",
}
DIR = Path("data/prepared/code")  # relative to the repository root, as in dvc.yaml


def path(kind: str, out_dir: str | Path = DIR) -> Path:
    """The file of `kind` ("training" | "evaluation" | "report") in `out_dir`."""
    if kind not in KINDS:
        raise ValueError(f"code kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return Path(out_dir) / f"{kind}.json"


def hashes() -> dict[str, dict]:
    """{kind: {"sha256", "excluded"}} of the package as it is on disk now."""
    out = {}
    for kind, exclusions in KINDS.items():
        exclude = exclusions()
        out[kind] = {"sha256": runs.code_hash(exclude), "excluded": sorted(exclude)}
    return out


def write(out_dir: str | Path = DIR) -> dict[str, dict]:
    """Write out_dir/<kind>.json for every kind, each only when its content changes."""
    found = hashes()
    for kind, content in found.items():
        target = path(kind, out_dir)
        text = json.dumps({"kind": kind} | content, indent=1) + "\n"
        if target.is_file() and target.read_text() == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        tmp.replace(target)
    return found


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m dualat.code_hashes OUT_DIR")
    write(argv[0])


if __name__ == "__main__":
    main(sys.argv[1:])
