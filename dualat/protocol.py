"""How a number was measured, as one string: the FID/KID protocol (`fid_protocol`) and the threat
model of a robust accuracy (`threat_model`). Records store these strings and every report shows
them beside the number, so a FID is never read without its protocol nor an AutoAttack accuracy
without its norm, radius, version and image count.
"""

from __future__ import annotations

from collections.abc import Sequence

from dualat.config import Config

# Implementation and mode of each FID mode of `sample.fid_mode` (metrics.generative's doc).
FID_MODE_NAMES = {"legacy_pytorch": "pytorch-fid legacy", "clean": "clean-fid clean"}
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "rin": "RestrictedImageNet"}
# Training-set sizes, to say what `sample.fid_ref_n: 0` (= the whole training set) means.
TRAIN_SIZES = {"cifar10": 50000, "cifar100": 50000}


def count_text(n: int) -> str:
    """50000 -> "50K", 10000 -> "10K", 500 -> "500"."""
    return f"{n // 1000}K" if n >= 1000 and n % 1000 == 0 else str(n)


def seeds_text(seeds: Sequence[int]) -> str:
    """(0, 1, 2) -> "seeds 0-2", (0,) -> "seed 0", (0, 5) -> "seeds 0, 5"."""
    seeds = list(seeds)
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


def fid_protocol_text(
    mode: str, n: int, dataset: str, n_ref: int, T: int | None, seeds: Sequence[int], conditional: bool = True
) -> str:
    """E.g. "pytorch-fid legacy, 50K class-balanced, vs CIFAR-10 train 50K, T=33, seeds 0-2".

    mode: an FID mode of metrics.generative; n: samples per seed; n_ref: training images of the
    reference (0 = all); T: sampling steps (None = not a sampler's output); conditional: labels
    i mod K (class-balanced) or unconditional samples."""
    ref = count_text(n_ref) if n_ref else count_text(TRAIN_SIZES[dataset]) if dataset in TRAIN_SIZES else "all"
    kind = "class-balanced" if conditional else "unconditional"
    parts = [
        FID_MODE_NAMES.get(mode, mode),
        f"{count_text(n)} {kind}",
        f"vs {DATASET_TITLES.get(dataset, dataset)} train {ref}",
    ]
    if T is not None:
        parts.append(f"T={T}")
    return ", ".join([*parts, seeds_text(seeds)])


def fid_protocol(cfg: Config, T: int | None, mode: str | None = None, conditional: bool = True) -> str:
    """The FID/KID protocol of `cfg`'s generation evaluation with T sampling steps, in `mode`
    (default `sample.fid_mode`), as one string (`fid_protocol_text`)."""
    s = cfg.sample
    return fid_protocol_text(mode or s.fid_mode, s.n_samples, cfg.data.dataset, s.fid_ref_n, T, s.seeds, conditional)


def threat_model_text(eps: float, version: str, n: int | None, norm: str = "L2") -> str:
    """E.g. "AutoAttack standard, L2, eps=0.5, n=10000" (n None: the count is unknown)."""
    return f"AutoAttack {version}, {norm}, eps={eps:g}" + (f", n={n}" if n is not None else "")


def threat_model(cfg: Config, n: int | None = None) -> str:
    """The threat model of `cfg`'s AutoAttack accuracy on n test images (default: the
    `evaluate.autoattack_n` of the config, None when that is 0 = the whole test set)."""
    e = cfg.evaluate
    return threat_model_text(e.autoattack_eps, e.autoattack_version, n if n is not None else e.autoattack_n or None)
