"""Evaluation of one trained model: one module per group of the paper's results.

    classification   accuracy(): clean, PGD and AutoAttack accuracy, ECE (Tables 1, 2, 7; Figure 3)
    generation       generation(): FID of conditional / unconditional samples, IS, grid over T
                     (Tables 1, 2, 8, 9)
    counterfactuals  counterfactuals(): class-wise FID and confidence of targeted L2 PGD images
                     (Figure 1, A.3)
    ood_detection    ood(): AUROC of max_y p(y|x) and -E(x), clean and adversarial (Tables 10-12, A.4)
    ood_sets         the OOD test sets and the seeded draw of their images
    runner           run(): what every group shares (the record, its reuse key, "not computed")

Each group takes the `Config`, the method name, the model checkpoint and an output folder, writes
the record `out_dir/<group>.json` (metrics, config, checkpoint hash, wall-clock seconds) through
`runner.run` and returns the metrics. When the model's folder says "not computed"
(`artifacts.read_status`) or a data source is missing, every metric is that `NotComputed` and
nothing raises, unless the record holds computed numbers of an earlier run: then they are kept
and `artifacts.StageRefused` says what is missing (docs/checkpoint_files.md). Images are float
tensors in [0, 1], NCHW, kept on the CPU; batches run on the model's device (`model_io.device()`).

This file holds no code: the training code hash (`runs.code_hash`) covers it, so it must not
change what an evaluation computes. The module names are unique in the package because
`runs.NOT_TRAINING_CODE` names files.
"""
