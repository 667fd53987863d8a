"""Tables 3-6 and 8: the paper profile's settings (params.yaml, `paper` block) against the
paper's, and Table 8's best sampling steps of this run's grid search."""

from __future__ import annotations

from typing import Any

from dualat import paper_values
from dualat.config import load
from dualat.data import classification_transform, generative_transform
from dualat.reports.reading import record, value
from dualat.reports.verdicts import row
from dualat.reports.vocabulary import DATASET_NAMES, model_name, quantity


def paper_config(dataset: str):
    """The typed config of the `paper` profile for `dataset` (whatever params.yaml's profile is)."""
    return load(dataset=dataset, profile="paper")


def settings_rows(name: str, paper: dict, ours: dict) -> list[dict]:
    """One "setting" row per key of the paper's `paper` dict, beside ours[key]."""
    return [row(name, quantity(key), v, ours[key], kind="setting") for key, v in paper.items()]


def table3() -> list[dict]:
    """Table 3: training hyperparameters of both stages."""
    rows = []
    for dataset, ref in paper_values.TABLE3.items():
        cfg = paper_config(dataset)
        model, optim = cfg.model, cfg.stage1.optim
        arch = f"wrn-{model.depth}-{model.widen_factor}" if model.arch == "wrn" else model.arch
        ours = {
            "architecture": arch, "momentum": optim.momentum, "nesterov": optim.nesterov,
            "weight_decay": optim.weight_decay, "batch_size": cfg.stage1.batch_size, "ema": cfg.stage1.ema.enabled,
            "stage1_lr": optim.lr, "stage1_epochs": cfg.stage1.epochs, "stage1_schedule": optim.schedule,
            "stage2_lr": cfg.stage2.optim.lr,
        }  # fmt: skip
        rows += settings_rows(DATASET_NAMES[dataset], ref, ours)
    return rows


def table4() -> list[dict]:
    """Table 4: the PGD attack of L_AT-CE (both stages)."""
    rows = []
    for dataset, ref in paper_values.TABLE4.items():
        attack = paper_config(dataset).stage1.attack
        ours = {"pgd_steps": attack.steps, "pgd_step_size": attack.step_size, "eps": attack.eps}
        rows += settings_rows(DATASET_NAMES[dataset], ref, ours)
    return rows


def table5() -> list[dict]:
    """Table 5: the sampler of L_BCE (stage 2) and its OOD source."""
    rows = []
    for dataset, ref in paper_values.TABLE5.items():
        cfg = paper_config(dataset)
        sampler = cfg.stage2.sampler
        ours = {"max_pgd_steps": sampler.T_max, "pgd_step_size": sampler.step_size, "ood_source": cfg.data.ood}
        rows += settings_rows(DATASET_NAMES[dataset], ref, ours)
    return rows


# Names of augmentation steps, ours (torchvision/our classes) and the paper's words, as one vocabulary.
_AUGMENT_WORDS = {
    "randomcrop": "random crop", "random crop": "random crop", "randomresizedcrop": "random crop",
    "randomhorizontalflip": "random horizontal flip", "random horizontal flip": "random horizontal flip",
    "flip": "random horizontal flip", "autoaugment": "autoaugment", "cutout": "cutout",
    "colorjitter": "colour jitter", "colour jitter": "colour jitter", "lighting": "lighting",
}  # fmt: skip
_NOT_AUGMENTATION = ("totensor", "compose", "identity", "normalize", "pilto", "convertimagedtype")


def augmentation_steps(text: str) -> set[str]:
    """The augmentations named in "A + B + C" (ours: class names; the paper's: words), normalised
    to one vocabulary; conversions (ToTensor, ...) are not augmentations."""
    steps = set()
    for part in text.split(":", 1)[-1].split("+"):
        word = part.strip().lower()
        if word and not word.startswith(_NOT_AUGMENTATION):
            steps.add(_AUGMENT_WORDS.get(word, word))
    return steps


def compare_augmentations(ours: str, paper: str) -> tuple[bool, str]:
    """(same, how): whether both name the same augmentations, and what ours adds or lacks."""
    a, b = augmentation_steps(ours), augmentation_steps(paper)
    how = "; ".join(
        f"{label} {', '.join(sorted(s))}" for label, s in (("ours adds", a - b), ("ours lacks", b - a)) if s
    )
    return a == b, how or "same"


TABLE6_NOTES = {
    ("cifar", "L_AT-CE"): "the paper's table names no crop; the released code crops (RandomCrop(32, pad 4), "
    "REFERENCE.md), and so do we",
}


def describe_transform(transform: Any) -> str:
    """The class names of a (composed) transform's steps, as A + B + C."""
    steps = getattr(transform, "transforms", [transform])
    return " + ".join(type(t).__name__ for t in steps)


def table6() -> list[dict]:
    """Table 6: the augmentations of L_AT-CE and L_BCE, compared step by step."""
    rows = []
    for family, dataset in (("cifar", "cifar10"), ("rin", "rin")):
        kind = paper_config(dataset).stage2.sampler.augmentation
        ours = {
            "L_AT-CE": describe_transform(classification_transform(dataset)),
            "L_BCE": f"{kind}: " + describe_transform(generative_transform(dataset, kind)),
        }
        name = DATASET_NAMES["rin"] if family == "rin" else "CIFAR-10/100"
        for key, paper in paper_values.TABLE6[family].items():
            same, how = compare_augmentations(ours[key], paper)
            note = TABLE6_NOTES.get((family, key), "")
            rows.append(row(name, quantity(key), paper, ours[key], note, kind="setting", same=same, how=how))
    return rows


def table8() -> list[dict]:
    """Table 8: sampling steps and step size (paper profile), and the best T of this run's grid."""
    rows = []
    for method, per in paper_values.TABLE8.items():
        for dataset, steps in per.items():
            sample = paper_config(dataset).sample
            name = model_name(dataset, method)
            rows.append(row(name, quantity("sample_steps"), steps, getattr(sample.steps, method), kind="setting"))
            rows.append(row(name, quantity("sample_step_size"), paper_values.TABLE8_STEP[dataset], sample.step_size,
                            kind="setting"))  # fmt: skip
            best = value(record(dataset, method, "generation"), "grid", "best_T")
            rows.append(row(name, quantity("best_steps"), steps, best, tol="steps"))
    return rows
