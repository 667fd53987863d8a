"""Train one method on several GPUs with DistributedDataParallel, one process per GPU.

usage (from the repository root):
  torchrun --nproc_per_node=4 scripts/train_ddp.py --dataset cifar10 --method standard_at
  torchrun --nproc_per_node=4 scripts/train_ddp.py --dataset cifar10 --method dualat \\
      --init models/cifar10/standard_at/best.pt
The DVC pipeline itself runs single-process notebooks; a torchrun run is not recorded by DVC.
Use --out to keep it apart and evaluate its checkpoint with dualat.evaluation / explore.ipynb.

Batch sizes in params.yaml are per process: N processes train with N x batch_size images per
step. The output folder (default models/<dataset>/<method>/) is written by rank 0 only; a killed
run resumes from its last.pt with the same number of processes. Without torchrun the script
trains in one process, as the notebooks do.
"""

import argparse
import sys

from dualat import artifacts, config, distributed, model_io, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--method", required=True, choices=sorted(model_io.METHOD_STAGE))
    parser.add_argument("--profile", default=None, help="params.yaml profile (default: its `profile` key)")
    parser.add_argument("--out", default=None, help="output folder (default: models/<dataset>/<method>)")
    parser.add_argument("--init", default=None, help="dualat's stage-1 checkpoint (default: that of standard_at)")
    args = parser.parse_args()

    distributed.init_from_env()
    cfg = config.load(dataset=args.dataset, profile=args.profile)
    out = args.out or artifacts.model_dir(args.dataset, args.method)
    init, ref_path = None, None
    if args.method == "dualat":  # as notebooks/03_train_dualat.ipynb
        init = args.init or model_io.trained_model(cfg, "standard_at")[0]
        ref_path = artifacts.fid_ref_path(args.dataset)
    status = stages.train(cfg, args.method, out, init=init, ref_path=ref_path)
    if distributed.is_main():
        print(status)
    distributed.close()
    if not status["computed"]:  # e.g. the data is missing: a failed run, not a finished one
        sys.exit(f"train_ddp: {args.method} on {args.dataset} not computed: {status['reason']}")


if __name__ == "__main__":
    main()
