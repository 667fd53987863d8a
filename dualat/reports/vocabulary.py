"""One vocabulary for every table, figure title and the index: the names of methods and data
sets, the quantity each record or paper key stands for (with its unit), the table columns, and the
titles of the paper's tables and figures. Tables name a quantity only through `quantity`."""

from __future__ import annotations

METHOD_NAMES = {"standard_at": "Standard AT", "ratio": "RATIO", "dualat": "Dual-AT"}
# In-distribution and OOD data sets (params.yaml keys -> the paper's names).
DATASET_NAMES = {
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "rin": "RestrictedImageNet",
    "svhn": "SVHN",
    "imagenet_od": "ImageNetOD",
    "tinyimagenet32": "Tiny ImageNet (32 px)",
    "noise": "uniform noise",
}

# Record keys (results/*.json, paper_values, results/proxy) -> the quantity a table shows, with its
# unit. Accuracies are stored as fractions and shown in percent; KID is shown times 10^3.
QUANTITIES = {
    # Tables 1, 2, 7 and the proxy section
    # Every robust accuracy names its threat model (norm and radius of images in [0, 1]), so an
    # L-infinity number is never read as an L2 one: CIFAR eps 0.5, RestrictedImageNet 3.5 (Table 4).
    "clean_acc": "clean accuracy (%)",
    "robust_acc": "robust accuracy, AutoAttack L2 eps=0.5 (%)",
    "robust_acc_rin": "robust accuracy, AutoAttack L2 eps=3.5 (%)",
    # rows the paper quotes from other work without their threat model (JEM: Grathwohl et al. give
    # PGD curves under both L-infinity and L2, no AutoAttack L2 eps 0.5 number)
    "robust_acc_unstated": "robust accuracy, threat model not stated by the paper (%)",
    "autoattack_acc": "robust accuracy, AutoAttack L2 eps=0.5 (%)",  # the proxy record's name (CIFAR-10)
    "pgd_acc": "robust accuracy, PGD L2 eps=0.5 (%)",
    "inception_score": "IS",
    "fid": "FID",
    # the same samples scored in each FID mode (sample.fid_mode and sample.fid_second_mode)
    "fid_legacy_pytorch": "FID, pytorch-fid legacy mode",
    "fid_clean": "FID, clean-fid clean mode",
    "kid": "KID ×10³",
    "n_samples": "samples (images)",
    "steps": "sampling PGD steps T",
    # Tables 10-12: AUROC of unmodified and of adversarially perturbed OOD inputs
    "clean": "AUROC, clean OOD inputs",
    "adversarial": "AUROC, adversarial OOD inputs (L2 PGD within eps_o)",
    # Table 3
    "architecture": "architecture",
    "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum",
    "weight_decay": "weight decay",
    "batch_size": "batch size (images per step)",
    "ema": "EMA of the weights",
    "stage1_lr": "stage-1 learning rate",
    "stage1_epochs": "stage-1 epochs",
    "stage1_schedule": "stage-1 learning-rate schedule",
    "stage2_lr": "stage-2 learning rate",
    # Tables 4, 5 (L2 norms of images in [0, 1])
    "pgd_steps": "PGD steps",
    "pgd_step_size": "PGD step size (L2)",
    "eps": "L2 perturbation bound eps",
    "max_pgd_steps": "max PGD steps T_max",
    "ood_source": "OOD data source",
    # Table 6
    "L_AT-CE": "augmentation of L_AT-CE",
    "L_BCE": "augmentation of L_BCE",
    # Table 8
    "sample_steps": "sampling PGD steps T (params, paper profile)",
    "sample_step_size": "sampling step size eta (L2)",
    "best_steps": "best T of our grid search (this run)",
}

# Row keys -> the column headers of every table (CSV and HTML).
COLUMNS = {
    "setting": "setting",
    "quantity": "quantity",
    "paper": "paper",
    "ours": "ours",
    "std": "± (ours)",
    "difference": "difference",
    "verdict": "verdict",
    "note": "note",
}

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
    1: "Counterfactual FID against confidence p(t|x') over the eps grid (stars: the paper's headline points)",
    2: "Stage-2 curves under different augmentations of L_BCE (CIFAR-10)",
    3: "Calibration: reliability diagrams and ECE (CIFAR-10, no temperature scaling)",
    4: "Stage-2 training curves: robust accuracy (PGD) and FID of the EMA model",
    5: "CIFAR-10 class-conditional samples: seeds, Dual-AT, RATIO",
    6: "CIFAR-100 class-conditional samples of the first 10 classes (one row per class): seeds, Dual-AT, RATIO",
    7: "RestrictedImageNet class-conditional samples (one row per class): seeds, Dual-AT, RATIO",
    8: "Unconditional samples of Dual-AT",
}


# history.json keys (training curves) -> (axis label, factor from the stored value). Fractions are
# drawn in percent.
HISTORY_LABELS = {
    "clean_acc": ("clean accuracy (%)", 100),
    "robust_acc": ("robust accuracy, PGD (%)", 100),
    "adv_acc": ("accuracy on the training attack (%)", 100),
    "fid": ("FID", 1),
    "T": ("PGD steps T of L_BCE", 1),
    "auc": ("AUC of L_BCE's real vs generated (batches)", 1),
    "bce": ("L_BCE", 1),
    "at_ce": ("L_AT-CE", 1),
    "loss": ("training loss", 1),
    "ood_ce": ("RATIO's OOD loss (CE to uniform)", 1),
    "ood_conf": ("max p(y|x) on attacked p_ood (%)", 100),
    "energy_pos": ("mean E(x) of real images", 1),
    "energy_neg": ("mean E(x) of generated images", 1),
}
# OOD score keys of the records -> the paper's names.
SCORE_NAMES = {"max_prob": "max p(y|x)", "neg_energy": "-E(x)"}


def history_label(key: str) -> tuple[str, float]:
    """(axis label, factor) of a history.json key; the key itself, factor 1, when it has no name."""
    return HISTORY_LABELS.get(key, (key, 1))


def quantity(key: str, mode: str | None = None) -> str:
    """The table name of a record key (QUANTITIES), with the generation mode in parentheses."""
    return QUANTITIES[key] + (f" ({mode})" if mode else "")


def dataset_name(key: str) -> str:
    """The paper's name of a data set key (the key itself when it has none)."""
    return DATASET_NAMES.get(key, key)


def model_name(dataset: str, method: str) -> str:
    """The name of a model in the tables, e.g. CIFAR-10 Dual-AT."""
    return f"{DATASET_NAMES[dataset]} {METHOD_NAMES[method]}"
