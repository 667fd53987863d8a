"""The pipeline's first stage: before any GPU-hour, check what each dataset of the selected profile
will need, and stop with one line per missing thing and what to do about it.

`python -m dualat.preflight` (dvc.yaml stage `preflight`, run on every `dvc repro`):
1. downloads the public datasets that no data folder holds (dualat.data.download; offline it gives
   up within seconds; DUALAT_DOWNLOAD=0 turns it off) and, for `sample.fid_mode: legacy_pytorch`,
   pytorch-fid's Inception weights into torch.hub's cache (dualat.fid_weights);
2. checks, for each dataset of params.yaml's profile: its training and test data, its p_ood source
   (`data.ood`), the FID network weights of its `sample.fid_mode` (and `sample.is_weights` when
   set), the packages its stages import, and the free disk against the profile's estimate;
3. writes `data/prepared/<dataset>/preflight.json` (what was found; stable content, so DVC reruns
   nothing when nothing changed) and prints a summary line.

A dataset without training data is reported ("missing: ...") and skipped: its stages run through
and end in "not computed: <reason>". The stage fails (exit status 1) when no dataset of the profile
has its training data, or when a dataset that has it lacks anything else it needs: that would
cost GPU-hours before failing. A missing OOD *test* set or the 80M Tiny Images exclusion list
are warnings (the evaluation reports that set as not computed; the exclusion is skipped with a note).

No torch import unless legacy_pytorch's weights are looked up (torch.hub's cache folder).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from importlib.util import find_spec
from pathlib import Path

from dualat import config, fid_weights
from dualat.data.catalog import DOWNLOADABLE, TINY_IMAGES_FILE, describe
from dualat.data.download import DOWNLOAD_ENV, fetch_missing
from dualat.data.fingerprint import source_names, write_json
from dualat.data.paths import Roots, data_roots, roots_text

OUT_DIR = Path("data/prepared")  # data/prepared/<dataset>/preflight.json
REPORT = "reports/index.html"

# Disk the stages of one dataset write (models/, results/, data/prepared/), in GB. paper: the disk
# column of docs/paper_profile.md (stage 1: last.pt 0.56 + best.pt and
# final.pt 0.37 each; RATIO as stage 1; stage 2 1.7; evaluations < 0.1 per method; prepare < 0.05;
# Figure 2's ablation, CIFAR-10 only: 4 stage-2 runs of 1.7). quick and proxy (ours, upper bounds):
# WRN-10-1 and WRN-16-4 checkpoints are 1-35 MB, the evaluation records and samples small.
_PAPER_GB = 0.05 + 2 * (0.56 + 2 * 0.37) + 1.7 + 3 * 0.1
DISK_GB = {
    "paper": {"cifar10": _PAPER_GB + 4 * 1.7, "cifar100": _PAPER_GB, "rin": _PAPER_GB},
    "quick": {"cifar10": 0.3, "cifar100": 0.3, "rin": 0.3},
    "proxy": {"cifar10": 1.0, "cifar100": 0.0, "rin": 0.0},
}
DISK_GB["paper_t50"] = DISK_GB["paper"]  # the paper's sizes

# Packages the stages import (module -> what to install); all are dependencies in pyproject.toml,
# but a hand-made environment (a bare GPU machine) may lack one, which would fail a stage late.
PACKAGES = {
    "papermill": "papermill",  # every stage runs its notebook through it (scripts/nb.py)
    "cleanfid": "clean-fid",  # FID/KID: prepare, stage 2's FID selection, generation, counterfactuals
    "pyautoattack": "pyautoattack",  # AutoAttack: eval_accuracy
    "sklearn": "scikit-learn",  # AUROC: stage 2's curriculum, eval_ood
}

# The split of each OOD test set that is read (dualat.evaluation.ood_sets.OOD_SPLITS, which imports
# torch; tests/test_preflight.py keeps the two equal).
OOD_TEST_SPLITS = {"tinyimagenet32": "val", "imagenet_od": "val"}

READY, MISSING, OUT_OF_PROFILE, BLOCKED = "ready", "missing", "not in profile", "blocked"


def check(cfg: config.Config, fetch: bool = True) -> dict:
    """What dataset `cfg.data.dataset` needs under its profile and whether it is there:
    {"dataset", "profile", "status", "problems", "warnings", "sources", "fid"}. `status`: ready,
    missing (no training data: skipped), not in profile, or blocked (training data but something
    else missing: `problems`, one line each with what to do). `fetch`: download legacy_pytorch's
    FID weights when missing (fid_weights.fetch_pytorch_fid)."""
    dataset, roots = cfg.data.dataset, data_roots(cfg.data_root)
    test_split = "val" if dataset == "rin" else "test"
    out = {"dataset": dataset, "profile": cfg.profile, "problems": [], "warnings": []}
    covered = config.PROFILE_DATASETS.get(cfg.profile)
    if covered is not None and dataset not in covered:
        return out | {"status": OUT_OF_PROFILE, "why": f"the {cfg.profile} profile is {', '.join(covered)} only"}
    train = describe(dataset, "train", roots)
    test, p_ood = describe(dataset, test_split, roots), describe(cfg.data.ood, "train", roots)
    out["sources"] = {"train": train, "test": test, "p_ood": p_ood, "p_ood_key": f"data.ood: {cfg.data.ood}"}
    if train.startswith("not found"):
        return out | {"status": MISSING, "why": train[len("not found: ") :], "todo": _how(dataset)}
    problems = out["problems"]
    for role, text in (("train", train), ("test", test)):
        if text.startswith("not found"):
            problems.append(f"{dataset}: {role} split: {text}; {_how(dataset)}")
        elif text.startswith("invalid"):  # the message names the file and what to do
            problems.append(f"{dataset}: {role} split: {text}")
    if p_ood.startswith(("not found", "invalid")):
        key = f"{cfg.profile}.{dataset}.data.ood"
        problems.append(f"{dataset}: p_ood ({key}: {cfg.data.ood}): {p_ood}; {_how(cfg.data.ood)}; {_ood_choices(key)}")
    out["warnings"] += _ood_warnings(cfg, roots)
    out["fid"] = _fid(cfg, fetch, problems)
    problems += [f"{dataset}: {line}" for line in missing_packages()]
    return out | {"status": BLOCKED if problems else READY}


def _how(name: str) -> str:
    """What to do about a missing source `name`."""
    if name in DOWNLOADABLE:
        return f"download it with `python -m dualat.data.download {name}` (needs a network and {DOWNLOAD_ENV} unset)"
    if name in ("rin", "imagenet_od"):
        return "put ImageNet (ILSVRC-2012) as imagenet/train/<wnid>/, imagenet/val/<wnid>/ there (docs/data.md)"
    if name == "tiny_images":
        return f"put {TINY_IMAGES_FILE} (80M Tiny Images, 227 GiB, withdrawn: docs/data.md) there"
    return "put it in a data folder (docs/data.md)"


def _ood_choices(key: str) -> str:
    return f"or set {key} to another p_ood source ({', '.join(config.OOD_SOURCES)}; docs/data.md)"


def _ood_warnings(cfg: config.Config, roots: Roots) -> list[str]:
    """Missing OOD test sets (their cells read "not computed") and a missing exclusion list."""
    dataset, lines = cfg.data.dataset, []
    for name in cfg.evaluate.ood_sets:
        text = describe(name, OOD_TEST_SPLITS.get(name, "test"), roots)
        if name != dataset and text.startswith(("not found", "invalid")):
            lines.append(
                f"{dataset}: OOD test set {name} (evaluate.ood_sets): {text}; its AUROC cells read not computed"
            )
    p_ood_there = not describe(cfg.data.ood, "train", roots).startswith(("not found", "invalid"))
    if cfg.data.ood == "tiny_images" and cfg.data.ood_exclude and p_ood_there:
        file = Path(cfg.data.ood_exclude)
        file = file if file.is_absolute() else data_roots(cfg.data_root)[0] / file
        if not file.is_file():
            lines.append(f"{dataset}: data.ood_exclude {file} not found: no CIFAR near-duplicates excluded from p_ood")
    return lines


def _fid(cfg: config.Config, fetch: bool, problems: list[str]) -> dict:
    """The FID network weights of sample.fid_mode (fetched for legacy_pytorch when `fetch`), and
    sample.is_weights when set; a missing one is added to `problems`."""
    mode, user = cfg.sample.fid_mode, cfg.sample.fid_weights or None
    key = f"{cfg.profile}.{cfg.data.dataset}.sample"
    try:
        if mode == "legacy_pytorch" and user is None and fetch:
            path = fid_weights.fetch_pytorch_fid()
        else:
            path = fid_weights.locate(mode, user)
    except fid_weights.WeightsMissing as err:
        problems.append(f"{cfg.data.dataset}: FID network ({key}.fid_mode: {mode}): {err}")
        path = None
    if cfg.sample.is_weights and not Path(cfg.sample.is_weights).is_file():
        problems.append(f"{cfg.data.dataset}: {key}.is_weights {cfg.sample.is_weights} not found; set it or ''")
    return {"mode": mode, "weights": None if path is None else Path(path).name}


def missing_packages() -> list[str]:
    """One line per package of PACKAGES that is not installed (found without importing it)."""
    return [
        f"package {pip} not installed: pip install {pip}" for mod, pip in PACKAGES.items() if find_spec(mod) is None
    ]


def disk_problem(statuses: list[dict], folder: str | Path = ".") -> str | None:
    """Free disk at `folder` (the project root: models/, results/) against the profile's estimate
    (DISK_GB) for the datasets that will run; None when it suffices."""
    ready = [s for s in statuses if s["status"] in (READY, BLOCKED)]
    need = sum(DISK_GB.get(s["profile"], {}).get(s["dataset"], 0.0) for s in ready)
    free = shutil.disk_usage(folder).free / 1e9
    if ready and free < need:
        names = ", ".join(s["dataset"] for s in ready)
        return f"disk: {free:.1f} GB free at {Path(folder).resolve()}, the {ready[0]['profile']} profile's {names} need about {need:.1f} GB (dualat.preflight.DISK_GB): free space or run from another disk"
    return None


def summary_line(statuses: list[dict], report: str | None = None, verb: str = "computed") -> str:
    """`computed: cifar10; missing: cifar100 (why), rin (why)` (+ `; report: <path>`), from the
    statuses of `check` (or their preflight.json files, `read_statuses`)."""
    done = [s["dataset"] for s in statuses if s["status"] == READY]
    parts = [f"{verb}: {', '.join(done) or 'nothing'}"]
    for label, kind in (("blocked", BLOCKED), ("missing", MISSING), ("not in profile", OUT_OF_PROFILE)):
        items = [f"{s['dataset']} ({_why(s)})" for s in statuses if s["status"] == kind]
        if items:
            parts.append(f"{label}: {', '.join(items)}")
    return "; ".join(parts) + (f"; report: {report}" if report else "")


def _why(status: dict) -> str:
    if status["status"] == BLOCKED:
        return f"{len(status['problems'])} missing, listed above"
    return status.get("why", "")


def read_statuses(out_dir: str | Path = OUT_DIR) -> list[dict]:
    """The preflight.json of every dataset (config.DATASETS) that has one."""
    files = [Path(out_dir) / d / "preflight.json" for d in config.DATASETS]
    return [json.loads(f.read_text()) for f in files if f.is_file()]


def run(params: str | Path = "params.yaml", out_dir: str | Path = OUT_DIR, fetch: bool = True) -> int:
    """The stage: download, check every dataset, write out_dir/<dataset>/preflight.json, print one
    line per problem and the summary to stderr; 0 when training can start, else 1."""
    try:
        cfgs = [config.load(params, dataset=d) for d in config.DATASETS]
    except config.ConfigError as e:  # a wrong key or profile stops the pipeline here, named
        _say(f"params.yaml: {e}")
        return 1
    if fetch:  # one data_root for all datasets (params.yaml's top level)
        fetch_missing([n for cfg in cfgs for n in source_names(cfg)], cfgs[0].data_root, log=_say)
    statuses = [check(cfg, fetch) for cfg in cfgs]
    disk = disk_problem(statuses)
    for status in statuses:
        if disk and status["status"] in (READY, BLOCKED):
            status["problems"].append(f"{status['dataset']}: {disk}")
            status["status"] = BLOCKED
        write_json(Path(out_dir) / status["dataset"] / "preflight.json", status)
    return _verdict(statuses, cfgs[0])


def _verdict(statuses: list[dict], cfg: config.Config) -> int:
    for status in statuses:
        for line in status["warnings"]:
            _say(f"preflight: warning: {line}")
        if status["status"] == MISSING:
            _say(f"preflight: missing: {status['dataset']} ({status['why']}; {status['todo']}): skipped")
        for line in status["problems"]:
            _say(f"preflight: {line}")
    _say(f"preflight ({cfg.profile} profile): {summary_line(statuses, verb='ready')}")
    if any(s["status"] == BLOCKED for s in statuses):
        _say("preflight: stopped before training: fix the lines above, then rerun `dvc repro`")
        return 1
    if not any(s["status"] == READY for s in statuses):
        where = roots_text(data_roots(cfg.data_root))
        _say(f"preflight: stopped: no dataset of the {cfg.profile} profile has its training data in {where}")
        return 1
    return 0


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m dualat.preflight [--out-dir DIR]`: the stage; `--summary REPORT`: print the
    summary line of the last preflight with the report's path (the report stage's last line)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=str(OUT_DIR))
    parser.add_argument("--summary", metavar="REPORT", help="print the summary line and the report's path")
    args = parser.parse_args(argv)
    if args.summary:
        print(summary_line(read_statuses(args.out_dir), args.summary), flush=True)
        return 0
    return run(out_dir=args.out_dir)


if __name__ == "__main__":
    sys.exit(main())
