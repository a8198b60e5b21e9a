"""``fastgp <command>``: the command-line entry point.

Commands:
    train    train a WGAN-GP on a toy set and write a run folder
    sample   write samples of a trained run's generator to a .npy file
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fastgp.train.data import TOY_DATASETS
from fastgp.train.trainer import TrainConfig, Trainer, sample


def _train_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = TrainConfig()
    parser = subparsers.add_parser(
        "train", help="train a WGAN-GP and write a run folder",
        description="Train a WGAN-GP (paper defaults) and write config.json, metrics.csv, "
                    "sample figures, curves.png, final_metrics.json and checkpoint.pt.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", choices=sorted(TOY_DATASETS), default=defaults.dataset)
    parser.add_argument("--out", type=Path, default=Path("runs/latest"), help="run folder")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="generator steps")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--n-critic", type=int, default=defaults.n_critic,
                        help="critic steps per generator step")
    parser.add_argument("--gp-weight", type=float, default=defaults.gp_weight, help="λ")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--hidden", type=int, default=defaults.hidden)
    parser.add_argument("--depth", type=int, default=defaults.depth)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _sample_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample", help="write generated samples of a run to a .npy file",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run", type=Path, required=True, help="run folder written by train")
    parser.add_argument("--n", type=int, default=1000, help="number of samples")
    parser.add_argument("--out", type=Path, required=True, help="output .npy file")
    parser.add_argument("--seed", type=int, default=0)


def _run_train(args: argparse.Namespace) -> int:
    config = TrainConfig(
        dataset=args.dataset, steps=args.steps, batch_size=args.batch_size,
        n_critic=args.n_critic, gp_weight=args.gp_weight, lr=args.lr, hidden=args.hidden,
        depth=args.depth, seed=args.seed, eval_every=args.eval_every, device=args.device,
    )
    print(f"fastgp train: {config.dataset}, {config.steps} generator steps -> {args.out}")
    try:
        final = Trainer(config, args.out, progress=not args.no_progress).run()
    except KeyboardInterrupt:
        print(f"interrupted: checkpoint and metrics saved in {args.out}", file=sys.stderr)
        return 130
    summary = {key: final[key] for key in ("steps", "seconds") if key in final}
    if "modes_covered" in final:
        summary["modes"] = f"{final['modes_covered']}/{final['num_modes']}"
        summary["high_quality"] = f"{100 * final['high_quality_share']:.1f}%"
    print("done: " + ", ".join(f"{key}={value:.1f}" if isinstance(value, float) else
                               f"{key}={value}" for key, value in summary.items()))
    print(f"run folder: {args.out} (samples.png, curves.png, metrics.csv, final_metrics.json)")
    return 0


def _run_sample(args: argparse.Namespace) -> int:
    if args.out.suffix != ".npy":
        raise ValueError(f"--out must end in .npy, got {args.out}")
    samples = sample(args.run, args.n, seed=args.seed).numpy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, samples)
    print(f"wrote {samples.shape[0]} samples of shape {samples.shape[1:]} to {args.out}")
    return 0


COMMANDS = {"train": _run_train, "sample": _run_sample}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastgp", description=__doc__.split("\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    _train_parser(subparsers)
    _sample_parser(subparsers)
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as error:
        print(f"fastgp {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
