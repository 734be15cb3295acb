"""Long fuzz run: random architectures x random plans (see tests/fuzz_models.py).

    nice python benchmarks/fuzz.py --n 5000            # seeds 0..4999
    python benchmarks/fuzz.py --seed 1234 --n 1 -v     # replay one failure

Each example is reproducible from its seed. Prints the count, the plans executed and refused,
and every failure (grouped by signature) with the seeds that hit it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import torch  # noqa: E402

from fuzz_models import RandomDraw, run_example  # noqa: E402


def signature(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:160]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="number of examples")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each example's notes")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    failures: dict[str, list[int]] = {}
    examples: dict[str, str] = {}
    totals = {"executed": 0, "refused": 0, "empty": 0}
    t0 = time.time()
    for i in range(args.n):
        seed = args.seed + i
        d = RandomDraw(seed)
        try:
            stats = run_example(d)
            for k in totals:
                totals[k] += stats[k]
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            sig = signature(exc)
            failures.setdefault(sig, []).append(seed)
            if sig not in examples:
                examples[sig] = "\n".join(d.notes[-3:]) + "\n" + "".join(
                    traceback.format_exception(exc)[-3:])
        if args.verbose:
            print("\n".join(d.notes))
        if (i + 1) % 100 == 0:
            print(f"[{i + 1}/{args.n}] {time.time() - t0:.0f}s, "
                  f"{sum(map(len, failures.values()))} failing examples", flush=True)
    n_fail = sum(map(len, failures.values()))
    print(f"\n{args.n} examples in {time.time() - t0:.0f}s: {totals['executed']} plans executed, "
          f"{totals['refused']} refused cleanly, {totals['empty']} empty; "
          f"{n_fail} failing examples, {len(failures)} distinct failures")
    for sig, seeds in sorted(failures.items(), key=lambda kv: -len(kv[1])):
        print(f"\n== {len(seeds)}x {sig}\n   seeds: {seeds[:12]}")
        print("   " + examples[sig].replace("\n", "\n   ")[-3000:])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
