"""Time Inception pool3 features on this machine: one NCHW batch of 64 (the former path) against
`InceptionFeatures.pool3` (on a CPU: channels_last chunks of `CPU_CHUNK`). Prints the time per
image of each, their ratio and the largest feature difference; asserts nothing.

    PYTHONPATH=. python scripts/bench_inception.py [--images 64] [--rounds 3]
"""

import argparse
import time

import torch

from dualat.metrics.generative import CPU_CHUNK, InceptionFeatures


def seconds_per_image(forward, x: torch.Tensor, rounds: int) -> tuple[float, torch.Tensor]:
    with torch.no_grad():
        forward(x[:CPU_CHUNK])  # warm-up: allocations and oneDNN's kernel choice
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            out = forward(x)
            best = min(best, time.perf_counter() - t0)
    return best / len(x), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    features = InceptionFeatures()  # clean-fid's network; FileNotFoundError names the file when missing
    x = torch.rand(args.images, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
    before, a = seconds_per_image(features.net, x, args.rounds)
    after, b = seconds_per_image(features.pool3, x, args.rounds)
    print(f"threads {torch.get_num_threads()}, {args.images} images, best of {args.rounds}")
    print(f"NCHW batch of {args.images}: {1000 * before:.1f} ms/image")
    print(f"pool3 (channels_last, chunks of {CPU_CHUNK}): {1000 * after:.1f} ms/image")
    print(f"ratio: {before / after:.2f}x; largest feature difference {float((a - b).abs().max()):.2e}")


if __name__ == "__main__":
    main()
