"""The released checkpoints of the paper's models, by name: where each is published, its file
name, the state-dict layout it must have, the numbers reported for it and the sampling steps its
released evaluation uses; resolving a name to a local, hash-checked file; and one command that
evaluates a released model through every evaluation and prints paper against measured.

    python -m dualat.released list
    python -m dualat.released where dualat-cifar10-t40-seed0
    python -m dualat.released evaluate dualat-cifar10-t40-seed0 [--profile paper] [-S key=value ...]

In params.yaml, `evaluate.checkpoints.<method>: released:<name>` evaluates the named file instead
of the trained model (`model_io.selected_model` resolves it through `resolve`).

A file lives at models/released/<name>/<file name> ($DUALAT_RELEASED replaces models/released).
It is downloaded there when the registry has a public direct URL, downloads are on
($DUALAT_DOWNLOAD, data.download) and the host answers; otherwise `resolve` says exactly what to
put where. Its sha256 is recorded on first sight in <file>.sha256.json beside it (with where it
came from) and checked on every later use: a file that changed is refused.

Facts come from the authors' repository xuwangyin/DAT @fb2ffc7 (README: one Dropbox folder for
all checkpoints, no per-file links or hashes; model_configs/*.yaml: the file each config loads and
its `fid_num_steps`), RATIO's repository (M4xim4l/InNOutRobustness README: a Google Drive zip) and
RobustBench (model_info/cifar10/L2/Augustin2020Adversarial_34_10.json, model_zoo/cifar10.py). None of
these is a direct file URL that was verified, so no entry has one ("unverified"): put the file in
place by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dualat import paper_values
from dualat.config import Config
from dualat.records import atomic_open, sha256_file

RELEASED_ENV = "DUALAT_RELEASED"
DAT_DROPBOX = (
    "the Dropbox folder of github.com/xuwangyin/DAT's README ('Model checkpoints and FID data'): "
    "https://www.dropbox.com/scl/fo/81n3lxw5dvhds56guuegh/AN3sYMNamKQnCkkFXC3CKcg?rlkey=ih9m3rasrmuzeyxwe7qjcpue9 "
    "(a folder page; direct per-file URL unverified)"
)
RATIO_DRIVE = (
    "RATIO's release, the zip of github.com/M4xim4l/InNOutRobustness's README: "
    "https://drive.google.com/file/d/1qxHvb3DoVEtbFy0r1Lz6dp0qUa-_NrtI/view (a share page; extract the zip, "
    "the file is inside; direct URL unverified)"
)
ROBUSTBENCH_RATIO = (
    "RobustBench model zoo, id Augustin2020Adversarial_34_10 (CIFAR-10, L2): "
    "robustbench.utils.load_model(model_name='Augustin2020Adversarial_34_10', dataset='cifar10', "
    "threat_model='L2'); RobustBench's own module and file layout (not checked here)"
)
WRN_LAYOUT = (
    "WideResNet-34-10 state dict of the RATIO/DAT code: 191 entries (98 parameters, 93 buffers), keys conv1, "
    "block{1,2,3}.layer.{0..4}.{bn1,conv1,bn2,conv2}, convShortcut in layer.0, bn1, fc; prefixes module., "
    "base_model., module.module. stripped; normalisation (CIFAR-10 mean/std) not in the file "
    "(shared/wrn3410_state_dict_layout.json)"
)


@dataclass(frozen=True)
class Released:
    """One released checkpoint. `reported`: {source: {clean_acc %, robust_acc % (AutoAttack L2,
    eps 0.5), fid}} of numbers published for it; `sample_steps`: T of its released FID evaluation
    (model_configs/*.yaml `fid_num_steps`)."""

    name: str
    dataset: str
    method: str  # standard_at | ratio | dualat
    file_name: str  # the file's path inside its publication
    published: tuple[str, ...]  # where it is published, as text
    sample_steps: int
    reported: dict[str, dict[str, float | None]]
    config: str = ""  # the authors' config that loads it (xuwangyin/DAT model_configs/)
    url: str = ""  # a public direct URL; "" = none verified
    layout: str = WRN_LAYOUT
    arch: tuple[str, int, int] = ("wrn", 34, 10)
    note: str = ""
    robustbench: dict[str, Any] = field(default_factory=dict)


def _dualat(dataset: str, T: int, seed: int | None, run: str, steps: int, reported: dict, note: str = "") -> Released:
    tag = f"t{T}" + (f"-seed{seed}" if seed is not None else "")
    cfg = f"model_configs/{dataset}-dat-WideResNet34x10-T{T}{f'-seed{seed}' if seed is not None else ''}.yaml"
    return Released(
        name=f"dualat-{dataset}-{tag}", dataset=dataset, method="dualat",
        file_name=f"wandb/robust-ebms-2/wandb/{run}/files/model_bestfid.pth", published=(DAT_DROPBOX,),
        sample_steps=steps, reported=reported, config=cfg, note=note,
    )  # fmt: skip


_T1 = {k: paper_values.TABLE1["dualat"][k] for k in ("clean_acc", "robust_acc", "fid")}
_T2 = {k: paper_values.TABLE2["cifar100"]["dualat"][k] for k in ("clean_acc", "robust_acc", "fid")}
_LATER = paper_values.RELEASED_CIFAR10
PAPER_RUNS = "paper Table {n} (mean over the runs)"
_C10_T40 = {PAPER_RUNS.format(n=1): _T1, "authors' later report (T=40)": _LATER["t40"]}
REGISTRY: dict[str, Released] = {
    r.name: r
    for r in (
        _dualat("cifar10", 40, 0, "run-20250506_140002-4oni26z2", 33, _C10_T40),
        _dualat("cifar10", 40, 1, "run-20250502_142218-q4ccywk7", 32, _C10_T40),
        _dualat("cifar10", 40, 2, "run-20250506_135517-1z9i352y", 32, _C10_T40,
                note="the config's header names run-20250903_134724-i6n6av53; the file it loads is this one"),
        _dualat("cifar10", 50, None, "run-20250829_132206-uquegt42", 35, {"authors' later report (T=50)": _LATER["t50"]},
                note="AUC threshold 0.7 (T=40: 0.8); the paper_t50 profile reproduces it"),
        _dualat("cifar100", 45, 0, "run-20250508_214637-kls47cws", 32, {PAPER_RUNS.format(n=2): _T2}),
        _dualat("cifar100", 45, 1, "run-20250505_134944-pki61h9m", 32, {PAPER_RUNS.format(n=2): _T2}),
        _dualat("cifar100", 45, 2, "run-20250508_192314-6vqnaza7", 32, {PAPER_RUNS.format(n=2): _T2}),
        _dualat("cifar100", 50, None, "run-20250912_232324-he2g1mwx", 33, {},
                note="AUC threshold 0.75; no numbers published for it"),
        Released("standard-at-cifar10", "cifar10", "standard_at",
                 "checkpoints/Cifar10Models/WideResNet34x10/Adversarial Training_25-04-2025_21:24:11/best_avg.pth",
                 (DAT_DROPBOX,), 22, {"authors' later report (stage 1 alone)": _LATER["stage1"]},
                 config="model_configs/cifar10-at-WideResNet34x10.yaml"),
        Released("standard-at-cifar100", "cifar100", "standard_at",
                 "checkpoints/Cifar100Models/WideResNet34x10/Adversarial Training_02-05-2025_00:11:00/best_avg.pth",
                 (DAT_DROPBOX,), 15, {}, config="model_configs/cifar100-at-WideResNet34x10.yaml"),
        Released("ratio-cifar10", "cifar10", "ratio", "checkpoints/Cifar10Models/WideResNet34x10/cifar10_pgd/best_avg.pth",
                 (DAT_DROPBOX, RATIO_DRIVE, ROBUSTBENCH_RATIO), 31,
                 {"paper Table 1": {k: paper_values.TABLE1["ratio"][k] for k in ("clean_acc", "robust_acc", "fid")},
                  "RobustBench (Augustin2020Adversarial_34_10)": paper_values.ROBUSTBENCH["Augustin2020Adversarial_34_10"]},
                 config="model_configs/cifar10-ratio-WideResNet34x10.yaml",
                 robustbench={"id": "Augustin2020Adversarial_34_10", "threat_model": "L2", "eps": 0.5,
                              "gdrive_id": "1qPsKS546mKcs71IEhzOS-kLpQFSFhaKL"},
                 note="the paper's CIFAR-10 RATIO row is this official checkpoint (Table 7)"),
        Released("ratio-cifar100", "cifar100", "ratio",
                 "checkpoints/Cifar100Models/WideResNet34x10/_temp_AdvACET_05-05-2025_04:55:40/best_avg.pth",
                 (DAT_DROPBOX,), 14, {PAPER_RUNS.format(n=2): dict(paper_values.TABLE2["cifar100"]["ratio"])},
                 config="model_configs/cifar100-ratio-WideResNet34x10.yaml",
                 note="retrained by the authors (Table 7: reproduced); Table 8 says 12 sampling steps, the config 14"),
    )
}  # fmt: skip


def entry(name: str) -> Released:
    """The registry entry `name`; a KeyError listing the known names otherwise."""
    if name not in REGISTRY:
        raise KeyError(f"no released checkpoint named {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def local_path(name: str) -> Path:
    """Where the file of `name` is kept: models/released/<name>/<file's base name>."""
    root = Path(os.environ.get(RELEASED_ENV) or "models/released")
    return root / name / Path(entry(name).file_name).name


def hash_path(path: Path) -> Path:
    """<file>.sha256.json beside a released file: its sha256 recorded on first sight."""
    return path.with_name(path.name + ".sha256.json")


def where_to_put(name: str) -> str:
    """Exactly which file goes where, and where it is published."""
    e, path = entry(name), local_path(name)
    return (
        f"released checkpoint {name}: put the file {e.file_name!r} at {path} (published in: {' | '.join(e.published)})"
    )


def resolve(name: str) -> Path:
    """The local, hash-checked file of `name`: downloaded first when missing and a direct URL is
    known and reachable; FileNotFoundError saying what to put where when it is not here."""
    path = local_path(name)
    if not path.is_file():
        reason = _download(entry(name), path)
        if reason is not None:
            raise FileNotFoundError(f"{where_to_put(name)}; not downloaded: {reason}")
    check_hash(path, entry(name).url or "placed by hand")
    return path


def check_hash(path: Path, source: str) -> str:
    """The sha256 of `path`; recorded in <file>.sha256.json on first sight, compared afterwards
    (ValueError naming both digests when the file changed)."""
    digest, record = sha256_file(path), hash_path(path)
    if record.is_file():
        expected = json.loads(record.read_text())["sha256"]
        if digest != expected:
            raise ValueError(
                f"{path} has sha256 {digest}, but {expected} was recorded in {record} when it was first seen; "
                f"put the original file back, or delete {record} to accept this one"
            )
        return digest
    stamp = {"sha256": digest, "source": source, "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with atomic_open(record) as fh:
        fh.write(json.dumps(stamp, indent=1) + "\n")
    return digest


def _download(e: Released, path: Path) -> str | None:
    """Download e.url to `path` (atomically); None when done, else why not."""
    from dualat.data.download import READ_TIMEOUT_S, downloads_enabled, probe

    if not e.url:
        return "no public direct URL is known for it"
    if not downloads_enabled():
        return "downloads are off ($DUALAT_DOWNLOAD=0)"
    if e.url.startswith(("http://", "https://")) and (why := probe(e.url)) is not None:
        return why
    try:
        with urllib.request.urlopen(e.url, timeout=READ_TIMEOUT_S) as src, atomic_open(path, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    except OSError as err:
        return f"download of {e.url} failed ({err})"
    return None


def resolve_checkpoint(value: str) -> str:
    """A value of `evaluate.checkpoints.<method>`: "released:<name>" becomes the resolved file's
    path; any other value is returned as it is."""
    return str(resolve(value.split(":", 1)[1])) if value.startswith("released:") else value


# --- evaluation ---------------------------------------------------------------------------------------

GROUPS = ("accuracy", "generation", "counterfactuals", "ood")


def released_config(name: str, profile: str = "paper", overrides: dict | None = None, path: str = "params.yaml"):
    """The config that evaluates `name`: `profile`'s block of its dataset with the file as
    `evaluate.checkpoints.<method>` and its released sampling steps, then `overrides`."""
    from dualat import config

    e = entry(name)
    keys = {f"evaluate.checkpoints.{e.method}": f"released:{name}", f"sample.steps.{e.method}": e.sample_steps}
    cfg = config.load(path, dataset=e.dataset, profile=profile, overrides=keys | (overrides or {}))
    if (cfg.model.arch, cfg.model.depth, cfg.model.widen_factor) != e.arch:
        print(
            f"note: {name} is a {e.arch}; profile {profile} builds {cfg.model.arch}-{cfg.model.depth}-{cfg.model.widen_factor}"
        )
    return cfg


def evaluate(
    name: str, profile: str = "paper", overrides: dict | None = None, groups: Sequence[str] = GROUPS,
    out: str | Path = "results/released", features=None, progress: bool = True, cfg: Config | None = None,
) -> dict:  # fmt: skip
    """Evaluate the released file `name` through `groups` (records under out/<name>/<group>/);
    returns {group: metrics}. `features`: stand-in FID network(s), one or {FID mode: one} (tests);
    `cfg`: the Config of `released_config(name, profile, overrides)` when the caller has built it."""
    from dualat import artifacts, model_io
    from dualat.evaluation import classification, counterfactuals, generation, ood_detection

    e, cfg = entry(name), cfg or released_config(name, profile, overrides)
    path, out = model_io.selected_model(cfg, e.method)[0], Path(out) / name
    primary = features.get(cfg.sample.fid_mode) if isinstance(features, dict) else features  # counterfactual FID
    runs = {
        "accuracy": lambda: classification.accuracy(cfg, e.method, path, out / "accuracy", progress=progress),
        "generation": lambda: generation.generation(cfg, e.method, path, artifacts.fid_ref_path(e.dataset),
                                                    out / "generation", features=features, progress=progress),
        "counterfactuals": lambda: counterfactuals.counterfactuals(
            cfg, e.method, path, out / "counterfactuals", artifacts.real_features_path(e.dataset), features=primary,
            progress=progress),
        "ood": lambda: ood_detection.ood(cfg, e.method, path, out / "ood", progress=progress),
    }  # fmt: skip
    unknown = sorted(set(groups) - set(runs))
    if unknown:
        raise ValueError(f"unknown evaluation group {unknown[0]!r}; choose from {', '.join(GROUPS)}")
    return {group: runs[group]() for group in groups}


def measured(results: dict) -> dict[str, Any]:
    """Our numbers in the registry's units: clean_acc and robust_acc in %, fid (conditional)."""
    from dualat.reports.reading import percent, value

    acc, gen = results.get("accuracy", {}), results.get("generation", {})
    return {
        "clean_acc": percent(value(acc, "clean_acc")),
        "robust_acc": percent(value(acc, "autoattack", "robust_acc")),
        "fid": value(gen, "fid_conditional"),
    }


def comparison_rows(name: str, results: dict, profile: str) -> list[dict]:
    """One row per (published source, quantity): reported, measured, difference and verdict
    within the report's tolerance (verdicts.TOLERANCE); outside the paper profiles "not comparable"."""
    from dualat.reports.verdicts import row, verdict

    ours, rows = measured(results), []
    for source, numbers in entry(name).reported.items():
        for key, paper in numbers.items():
            if paper is None or key not in ours:
                continue
            r = row(source, key, paper, ours[key], tol=key)
            rows.append(r | {"verdict": verdict(r, profile)})
    return rows


def ood_rows(name: str, results: dict, profile: str) -> list[dict]:
    """AUROC rows of Tables 10-11 for an entry behind the paper's numbers (its Dual-AT runs of
    Tables 1-2, RATIO): per OOD set, score and input (clean / adversarial, L2 eps_o of the run)."""
    from dualat.reports.reading import value
    from dualat.reports.verdicts import row, verdict

    e = entry(name)
    columns = {
        "ratio": {"ratio": "max_prob"},
        "dualat": {"dualat_max_prob": "max_prob", "dualat_neg_energy": "neg_energy"},
    }
    if "ood" not in results or not any(source.startswith("paper") for source in e.reported):
        return []
    rows = []
    for ood_set, ref in paper_values.OOD.get(e.dataset, {}).items():
        for column, score in columns[e.method].items():
            for i, inputs in enumerate(("clean", "adversarial")):
                ours = value(results["ood"], "sets", ood_set, score, inputs)
                r = row(f"paper Table 10-11, {ood_set}, {score}", f"auroc_{inputs}", ref[column][i], ours, tol="auroc")
                rows.append(r | {"verdict": verdict(r, profile)})
    return rows


def table_text(name: str, rows: list[dict], cfg) -> str:
    """The paper-vs-measured table as text, with the threat model and FID protocol."""
    from dualat import protocol
    from dualat.reports.reading import cell_text

    e = entry(name)
    head = [
        f"{name}: {e.dataset} {e.method}, sampling steps T={e.sample_steps} (released evaluation config {e.config})",
        f"robust accuracy: {protocol.threat_model(cfg)}; FID: {protocol.fid_protocol(cfg, e.sample_steps)}; "
        f"adversarial OOD inputs: L2 PGD, eps_o={cfg.evaluate.ood_attack.eps:g}",
    ]
    lines = [f"{'source':46} {'quantity':16} {'reported':>9} {'measured':>9}  verdict"]
    for r in rows:
        ours = cell_text(r["ours"]) if not hasattr(r["ours"], "reason") else "not computed"
        lines.append(f"{r['setting']:46} {r['quantity']:16} {cell_text(r['paper']):>9} {ours:>9}  {r['verdict']}")
    return "\n".join(head + lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m dualat.released list | where NAME | evaluate NAME [--profile P] [-S key=value ...]`."""
    parser = argparse.ArgumentParser(prog="python -m dualat.released", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("list", "where", "evaluate"))
    parser.add_argument("name", nargs="?")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--groups", default=",".join(GROUPS), help="comma-separated evaluation groups")
    parser.add_argument("-S", dest="overrides", action="append", default=[], help="key=value inside the dataset block")
    args = parser.parse_args(argv)
    if args.command == "list":
        for n, e in sorted(REGISTRY.items()):
            print(f"{n:26} {e.dataset:8} {e.method:11} T={e.sample_steps:<3} {e.file_name}")
        return 0
    if args.name is None:
        parser.error(f"{args.command} needs a NAME (python -m dualat.released list)")
    if args.command == "where":
        print(where_to_put(args.name))
        return 0
    import yaml

    overrides = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in args.overrides)}
    cfg = released_config(args.name, args.profile, overrides)
    results = evaluate(args.name, args.profile, overrides, tuple(args.groups.split(",")), cfg=cfg)
    rows = comparison_rows(args.name, results, args.profile) + ood_rows(args.name, results, args.profile)
    print(table_text(args.name, rows, cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
