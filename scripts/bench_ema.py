"""Time one EMA update of a WRN-16-4: the old Python loop (one lerp_ kernel per tensor) against
`dualat.ema.EMA.update` (foreach kernels). Prints the times and their ratio; asserts nothing.

    PYTHONPATH=. python scripts/bench_ema.py [--device cuda] [--repeats 50] [--rounds 7]
"""

import argparse
import time

import torch

from dualat.ema import EMA
from dualat.models import WideResNet


@torch.no_grad()
def loop_update(ema: EMA, model: torch.nn.Module) -> None:
    """The former update: a Python loop with one kernel per tensor."""
    d = ema.current_decay()
    state = model.state_dict()
    for key, value in ema.module.state_dict().items():
        if value.dtype.is_floating_point:
            value.lerp_(state[key], 1 - d)
        else:
            value.copy_(state[key])
    ema.n += 1


def seconds_per_update(update, ema: EMA, model: torch.nn.Module, repeats: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        update(ema, model)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=50, help="updates per round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds; the fastest counts")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = WideResNet(depth=16, widen_factor=4).to(device)
    n_tensors = len(model.state_dict())
    emas = {"loop": EMA(model, 0.999), "foreach": EMA(model, 0.999)}
    updates = {"loop": loop_update, "foreach": EMA.update}
    best = {name: float("inf") for name in emas}
    for name, ema in emas.items():  # warm-up; also moves n past the first update's copy
        seconds_per_update(updates[name], ema, model, 10, device)
    for _ in range(args.rounds):  # alternate, and keep the fastest round: robust to shared cores
        for name, ema in emas.items():
            best[name] = min(best[name], seconds_per_update(updates[name], ema, model, args.repeats, device))
    print(f"WRN-16-4 on {device}, {n_tensors} state tensors, fastest of {args.rounds} rounds x {args.repeats}")
    for name, t in best.items():
        print(f"{name:8s}{t * 1e3:8.3f} ms / update")
    print(f"loop / foreach time ratio: {best['loop'] / best['foreach']:.2f}")


if __name__ == "__main__":
    main()
