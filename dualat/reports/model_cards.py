"""Model cards of every evaluated model: reports/models/<dataset>-<method>/ holds

  README.md          a model card: a YAML `model-index` block as the Hugging Face hub reads it
                     (task, dataset with split, metrics as "value ± std" strings), then the threat
                     model of every robust number, the protocol of every FID, the profile, the
                     params keys the model was trained and evaluated with, the data provenance and
                     the sha256 of the weights;
  robustbench.json   the fields of RobustBench's model_info files, filled from the records: an entry
                     candidate, not a RobustBench result (its footnote says so);
  model.safetensors  the evaluated weights as a plain state dict (normalisation in the metadata;
                     read back with `model_io.load_safetensors`);
  SHA256SUMS         sha256sum lines of the checkpoint the records name and of model.safetensors
                     (check with `cd reports/models/<name> && sha256sum -c SHA256SUMS`).

Everything is read from the evaluation records (results/<dataset>/<method>/<group>/<group>.json),
never recomputed, except the hashes, which are taken again from the files.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

from dualat import config, model_io, protocol
from dualat.config import DATASETS, METHODS, Config
from dualat.records import NotComputed, atomic_open, sha256_file
from dualat.reports.paths import public_text
from dualat.reports.reading import REPORTS, is_number, record_full, record_path, value
from dualat.reports.uncertainty import binomial_se
from dualat.reports.vocabulary import DATASET_NAMES, METHOD_NAMES

CANDIDATE_NOTE = (
    "Entry candidate written by dualat from its own evaluation records; not a RobustBench result "
    "(RobustBench has neither run nor accepted it)."
)
# Params sections each method's weights were trained with (dvc.yaml's stage params).
TRAINING_KEYS = {
    "standard_at": ("data", "model", "stage1"),
    "ratio": ("data", "model", "stage1", "ratio"),
    "dualat": ("data", "model", "stage1", "stage2"),
}
EVALUATION_KEYS = ("evaluate", "sample")
PAPERS = {  # (title, authors, link) of the method, for RobustBench's name/authors/link fields
    "dualat": ("Joint Discriminative-Generative Modeling via Dual Adversarial Training",
               "Xuwang Yin, Claire Zhang, Julie Steele, Tony T. Wang", "https://github.com/xuwangyin/DAT"),
    "ratio": ("Adversarial Robustness on In- and Out-Distribution Improves Explainability",
              "Maximilian Augustin, Alexander Meinke, Matthias Hein", "https://arxiv.org/abs/2003.09461"),
    "standard_at": ("Standard L2 adversarial training (stage 1 of Dual-AT)", "", ""),
}  # fmt: skip
ARCHITECTURES = {"wrn": "WideResNet-{depth}-{widen}", "resnet50": "ResNet-50"}


def full_record(dataset: str, method: str, group: str) -> dict | NotComputed:
    """The whole record (metrics, config, checkpoint, extra), or why there is none."""
    return record_full(dataset, method, group) or NotComputed(f"{record_path(dataset, method, group)} was not produced")


def record_config(rec: dict) -> Config | NotComputed:
    """The Config a record was computed under, rebuilt from its `config` block."""
    raw = rec.get("config")
    if not isinstance(raw, dict):
        return NotComputed("the record holds no config")
    try:
        sections = {name: config.build(cls, raw[name], name) for name, cls in config.SECTIONS.items()}
        return Config(profile=raw["profile"], data_root=raw["data_root"], **sections)
    except (KeyError, config.ConfigError) as err:
        return NotComputed(f"the record's config does not fit this version of dualat ({err})")


def pm(v: Any, std: Any, digits: int = 2) -> str:
    """The text "value ± std" with `digits` decimals ("value" alone without a std)."""
    if is_number(std) and math.isfinite(std):
        return f"{v:.{digits}f} ± {std:.{digits}f}"
    return f"{v:.{digits}f}"


def percent(p: float, n: int) -> str:
    """An accuracy p of n images in percent, ± its binomial standard error."""
    se = binomial_se(p, n)
    return pm(100 * p, None if se is None else 100 * se)


def architecture(cfg: Config) -> str:
    """WideResNet-34-10, ResNet-50, ... of `cfg.model`."""
    return ARCHITECTURES[cfg.model.arch].format(depth=cfg.model.depth, widen=cfg.model.widen_factor)


def _accuracy_metrics(acc: dict, cfg: Config) -> tuple[list[dict], list[str]]:
    """The model-index metrics of the accuracy record, and the card's lines about them."""
    metrics, lines = [], []
    clean, n_test = value(acc, "clean_acc"), value(acc, "n_test")
    if is_number(clean) and is_number(n_test):
        text = percent(clean, n_test)
        metrics.append({"type": "accuracy", "name": f"clean accuracy (%), n={n_test}", "value": text})
        lines.append(f"clean accuracy {text} %: n={n_test} test images")
    else:
        lines.append(f"clean accuracy: not computed: {getattr(clean, 'reason', clean)}")
    robust, n_aa = value(acc, "autoattack", "robust_acc"), value(acc, "autoattack", "n")
    if is_number(robust) and is_number(n_aa):
        threat = protocol.threat_model(cfg, n_aa)
        args = {"attack": "AutoAttack", "version": cfg.evaluate.autoattack_version, "norm": "L2",
                "eps": cfg.evaluate.autoattack_eps, "n": n_aa}  # fmt: skip
        text = percent(robust, n_aa)
        metrics.append({"type": "robust_accuracy", "name": f"robust accuracy (%), {threat}",
                        "value": text, "args": args})  # fmt: skip
        lines.append(f"robust accuracy {text} %: {threat}")
    else:
        lines.append(f"robust accuracy (L2 AutoAttack): not computed: {getattr(robust, 'reason', robust)}")
    lines.append("± of an accuracy: the binomial standard error over its n test images (one trained model).")
    return metrics, lines


def fid_texts(gen: dict, cfg: Config, mode_kind: str) -> dict[str, str]:
    """{FID mode: protocol string} of the record's `mode_kind` ("conditional"/"unconditional") FIDs."""
    steps = value(gen, "steps")
    T = steps if is_number(steps) else None
    modes = value(gen, "fid_modes")
    names = list(modes) if isinstance(modes, dict) else [cfg.sample.fid_mode]
    return {m: protocol.fid_protocol(cfg, T, m, conditional=mode_kind == "conditional") for m in names}


def fid_values(gen: dict, cfg: Config, kind: str) -> dict[str, tuple[Any, Any]]:
    """{FID mode: (mean, std over seeds)} of the record's `kind` FID in every mode it holds."""
    modes = value(gen, "fid_modes")
    if isinstance(modes, dict):
        return {m: (value(r, f"fid_{kind}"), value(r, f"fid_{kind}_std")) for m, r in modes.items()}
    return {cfg.sample.fid_mode: (value(gen, f"fid_{kind}"), value(gen, f"fid_{kind}_std"))}


def _generation_results(gen: Any, cfg: Config, dataset_entry: dict) -> tuple[list[dict], list[str]]:
    """The model-index results of the generation record (conditional, unconditional), and lines."""
    results, lines = [], []
    if isinstance(gen, NotComputed):
        return [], [f"FID: not computed: {gen.reason}"]
    tasks = {"conditional": ("image-generation", "class-conditional image generation"),
             "unconditional": ("unconditional-image-generation", "unconditional image generation")}  # fmt: skip
    for kind, (task_type, task_name) in tasks.items():
        metrics, texts = [], fid_texts(gen, cfg, kind)
        for mode, (mean, std) in fid_values(gen, cfg, kind).items():
            if is_number(mean):
                metrics.append({"type": "fid", "name": f"FID, {texts[mode]}", "value": pm(mean, std)})
                over = " (± std over seeds)" if is_number(std) else ""
                lines.append(f"{kind} FID {pm(mean, std)}: {texts[mode]}{over}")
            else:
                lines.append(f"{kind} FID ({texts[mode]}): not computed: {getattr(mean, 'reason', mean)}")
        if metrics:
            ref = dataset_entry | {"split": "train", "args": {"reference": "training set, Inception pool3 statistics"}}
            results.append({"task": {"type": task_type, "name": task_name}, "dataset": ref, "metrics": metrics})
    score = value(gen, "inception_score")
    if is_number(value(score, "mean")) and results:
        results[0]["metrics"].append({"type": "inception_score", "name": "Inception Score (first seed's samples)",
                                      "value": pm(score["mean"], score["std"])})  # fmt: skip
    return results, lines


def model_facts(dataset: str, method: str) -> dict | NotComputed:
    """What the card and the RobustBench JSON say of one model, from its records."""
    acc, gen = full_record(dataset, method, "accuracy"), full_record(dataset, method, "generation")
    rec = acc if not isinstance(acc, NotComputed) else gen
    if isinstance(rec, NotComputed):
        return rec
    cfg = record_config(rec)
    if isinstance(cfg, NotComputed):
        return cfg
    ckpt = rec.get("checkpoint") or {}
    path = Path(ckpt.get("path", ""))
    if not ckpt.get("path") or not path.is_file():
        return NotComputed(f"the evaluated checkpoint {path} is not here (records name it; rerun its stage)")
    name = f"dualat-{dataset}-{method}".replace("_", "-")
    entry = {"type": dataset, "name": DATASET_NAMES[dataset]}
    metrics, lines = _accuracy_metrics(acc["metrics"], cfg) if not isinstance(acc, NotComputed) else ([], [])
    results = [{"task": {"type": "image-classification", "name": "image classification"},
                "dataset": entry | {"split": "test"}, "metrics": metrics}] if metrics else []  # fmt: skip
    gen_results, gen_lines = _generation_results(gen["metrics"] if isinstance(gen, dict) else gen, cfg, entry)
    return {
        "name": name, "dataset": dataset, "method": method, "cfg": cfg, "checkpoint": path,
        "sha256_recorded": ckpt.get("sha256"), "sha256": sha256_file(path), "extra": rec.get("extra", {}),
        "model_index": [{"name": name, "results": results + gen_results}], "lines": lines + gen_lines,
        "accuracy": acc["metrics"] if isinstance(acc, dict) else acc,
    }  # fmt: skip


def card_text(facts: dict, weights_sha256: str) -> str:
    """The model card: YAML front matter (model-index) and the Markdown body."""
    cfg, dataset, method = facts["cfg"], facts["dataset"], facts["method"]
    front = {"library_name": "pytorch", "tags": ["adversarial-robustness", "energy-based-model", "dualat"],
             "datasets": [dataset], "model-index": facts["model_index"]}  # fmt: skip
    keys = ", ".join(f"{cfg.profile}.{dataset}.{s}" for s in TRAINING_KEYS[method])
    eval_keys = ", ".join(f"{cfg.profile}.{dataset}.{s}" for s in EVALUATION_KEYS)
    provenance = facts["extra"].get("data_provenance", "not in the record")
    source = facts["extra"].get("model_source") or facts["extra"].get("model_file", "not in the record")
    mismatch = facts["sha256_recorded"] not in (None, facts["sha256"])
    body = [
        f"# {DATASET_NAMES[dataset]} {METHOD_NAMES[method]} ({architecture(cfg)})", "",
        f"- profile: `{cfg.profile}` (params.yaml); numbers of a profile other than paper are not comparable with the paper's",
        f"- training settings: params.yaml keys {keys}", f"- evaluation settings: params.yaml keys {eval_keys}",
        f"- model: {source}",
        f"- checkpoint `{facts['checkpoint'].as_posix()}` sha256 `{facts['sha256']}`"
        + (f" (the records name sha256 `{facts['sha256_recorded']}`: the file changed since its evaluation)" if mismatch else ""),
        f"- weights `model.safetensors` sha256 `{weights_sha256}`; {model_io.normalisation_text(cfg)}",
        f"- data provenance: {json.dumps(provenance)}", "", "## Measured", "",
        *(f"- {line}" for line in facts["lines"]), "",
        "Load: `dualat.model_io.load_safetensors(config.load(profile=..., dataset=...), 'model.safetensors')`.", "",
    ]  # fmt: skip
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(body)


def robustbench_entry(facts: dict) -> dict:
    """The fields of a RobustBench model_info file (cifar10/L2/<id>.json) filled from the records."""
    cfg, acc = facts["cfg"], facts["accuracy"]
    clean, robust, n = (value(acc, *k) for k in (("clean_acc",), ("autoattack", "robust_acc"), ("autoattack", "n")))

    def pct(v: Any) -> str:
        return f"{100 * v:.2f}" if is_number(v) else str(v)

    title, authors, link = PAPERS[facts["method"]]
    n_text = f"{n}" if is_number(n) else "unknown"
    footnote = (
        f"{CANDIDATE_NOTE} Profile {cfg.profile}; {protocol.threat_model(cfg, n if is_number(n) else None)}"
        f" on the first {n_text} test images (RobustBench evaluates all of them); checkpoint sha256 {facts['sha256']}."
    )
    return {
        "link": link, "name": title, "authors": authors, "additional_data": cfg.data.ood != "noise",
        "number_forward_passes": 1, "dataset": facts["dataset"], "venue": "", "architecture": architecture(cfg),
        "eps": f"{cfg.evaluate.autoattack_eps:g}", "clean_acc": pct(clean), "reported": pct(robust),
        "autoattack_acc": pct(robust), "footnote": footnote, "unreliable": False,
    }  # fmt: skip


def write_model_card(facts: dict, out: Path) -> dict:
    """reports/models/<name>/: model.safetensors, README.md, robustbench.json, SHA256SUMS."""
    folder = out / facts["name"]
    weights = model_io.save_safetensors(
        model_io.selected_state_dict(facts["checkpoint"]), folder / "model.safetensors", facts["cfg"]
    )
    digest = sha256_file(weights)
    with atomic_open(folder / "README.md") as fh:
        fh.write(public_text(card_text(facts, digest)))  # no machine folders in report files
    with atomic_open(folder / "robustbench.json") as fh:
        fh.write(public_text(json.dumps(robustbench_entry(facts), indent=2)) + "\n")
    ckpt = Path(os.path.relpath(facts["checkpoint"].resolve(), folder.resolve())).as_posix()
    with atomic_open(folder / "SHA256SUMS") as fh:
        fh.write(f"{facts['sha256']}  {ckpt}\n{digest}  model.safetensors\n")
    return {"name": facts["name"], "folder": folder}


def write_model_cards(out: Path = REPORTS / "models") -> list[dict]:
    """A card folder for every evaluated (dataset, method); one entry each: its links or why not."""
    entries = []
    for dataset in DATASETS:
        for method in METHODS:
            facts = model_facts(dataset, method)
            entry = {"dataset": dataset, "method": method, "folder": None, "reason": None}
            if isinstance(facts, NotComputed):
                entry["reason"] = facts.reason
            else:
                entry |= write_model_card(facts, out)
            entries.append(entry)
    return entries
