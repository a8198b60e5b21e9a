"""``fastgp <command>``: the command-line entry point.

Commands:
    train    train a WGAN (GP by default) on a toy set, digits or your data; write a run folder
    sample   write samples of a trained run's generator to a .npy file or a PNG grid
    compare  gan, wgan-clip, wgan-gp and wgan-lp on 25 gaussians with one budget: table + figure
    profile  where a critic step with the gradient penalty spends its time, FLOPs, bytes and memory
    bench    the benchmark matrix: every penalty path vs the reference and vs no penalty
    explain  how the engine reads a critic: its operations, their rules, what blocks it, FLOPs
    info     versions, devices, and which op backends are usable here (and why not)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import typing
from pathlib import Path

import numpy as np
import torch

from fastgp.cli_errors import (
    EXPECTED,
    comma_list,
    describe_failure,
    require_seed,
)
from fastgp.devices import check_device
from fastgp.extras import INSTALL_TRAIN, require_train_extra
from fastgp.train.config import (
    COMPARED_LOSSES,
    LOSSES,
    TrainConfig,
)
from fastgp.train.distributed import ProcessGroup
from fastgp.train.run_contents import check_destination
from fastgp.validation import integer, real_number

_CONFIG_FIELDS = {field.name: field for field in dataclasses.fields(TrainConfig)}
_CONFIG_TYPES = typing.get_type_hints(TrainConfig)


def _option_type(name: str) -> type:
    """The type of ``TrainConfig.<name>``, without its ``None`` (``int | None`` → ``int``)."""
    hint = _CONFIG_TYPES[name]
    types = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
    if len(types) != 1 or types[0] not in (bool, int, float, str):
        raise TypeError(f"TrainConfig.{name}: no command-line flag for type {hint}")
    return types[0]


def _config_option(parser: argparse.ArgumentParser, name: str) -> None:
    """The flag ``--name-with-dashes`` of ``TrainConfig.<name>``: its type, choices and help
    from the field. The namespace holds the option only where the command line gives it
    (:func:`_config_options` reads them), so that a flag left out keeps the config's value;
    ``--help`` shows the field's default all the same."""
    field = _CONFIG_FIELDS[name]
    kind = _option_type(name)
    default = field.default
    help_text = field.metadata.get("help")
    if help_text is not None:  # as ArgumentDefaultsHelpFormatter shows the defaults of others
        help_text += f" (default: {default})"
    options = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
    if kind is bool:
        options["action"] = argparse.BooleanOptionalAction if default else "store_true"
    else:
        options.update(type=kind, choices=field.metadata.get("choices"))
    parser.add_argument("--" + name.replace("_", "-"), **options)


def _config_options(args: argparse.Namespace) -> dict:
    """The options of TrainConfig that the command line gives."""
    return {name: getattr(args, name) for name in _CONFIG_FIELDS if hasattr(args, name)}


def _config_file(path: str) -> dict:
    """The options of a config file (a run's ``config.json``); unknown keys are refused."""
    with open(path, encoding="utf-8") as file:
        try:
            values = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"--config {path} is not valid JSON: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"--config {path} must hold a JSON object of options, "
                         f"got {type(values).__name__}")
    unknown = sorted(set(values) - set(_CONFIG_FIELDS))
    if unknown:
        raise ValueError(f"--config {path}: unknown keys {', '.join(unknown)} (known: "
                         f"{', '.join(_CONFIG_FIELDS)})")
    for name, value in values.items():
        kind = _option_type(name)
        fits = (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
                or kind is float and type(value) is int
                or value is None and _CONFIG_FIELDS[name].default is None)
        if not fits:
            raise ValueError(f"--config {path}: {name} must be {kind.__name__}"
                             f"{' or null' if _CONFIG_FIELDS[name].default is None else ''}, "
                             f"got {value!r}")
    return values


def _train_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a WGAN-GP and write a run folder",
        description="Train a WGAN-GP (paper defaults) and write config.json, metrics.csv, "
                    "sample figures, curves.png, final_metrics.json and checkpoint.pt. A fresh run "
                    "needs a new or empty --out; --resume continues the run there, --overwrite "
                    "replaces it (removing only fastgp's own files).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", metavar="CONFIG_JSON",
                        help="start from the options in this file (a run's config.json, same "
                             "keys); options given on the command line override them")
    for field in dataclasses.fields(TrainConfig):
        _config_option(parser, field.name)
    parser.add_argument("--out", default="runs/latest",
                        help="run folder: new or empty, or holding the run to --resume or "
                             "--overwrite; locked while the run writes it")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its checkpoint (same options; --steps, "
                             "--eval-every, --keep-checkpoints may change)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in a folder holding an earlier fastgp run: removes that "
                             "run's files (only fastgp's own; other files make the run refuse)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _folder(text: str, option: str = "--out") -> Path:
    """``text`` as a folder path; an empty one is refused (``Path("")`` is the current folder)."""
    if not text.strip():
        raise ValueError(f"{option} is empty; name a folder (use . for the current one)")
    return Path(text)


def _sample_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample", help="write generated samples of a run to a .npy file or a PNG grid",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run", required=True, help="run folder written by train")
    parser.add_argument("--n", type=int, default=1000, help="number of samples")
    parser.add_argument("--out", type=Path, required=True,
                        help="output: .npy (raw samples; images in [-1, 1]) or .png (image grid)")
    parser.add_argument("--seed", type=int, default=0)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The config of ``fastgp train``: the options of ``--config`` (if given), overridden by
    those given on the command line; the rest take TrainConfig's defaults."""
    values = _config_file(args.config) if args.config is not None else {}
    return TrainConfig(**{**values, **_config_options(args)})


def _run_train(args: argparse.Namespace) -> int:
    require_train_extra()
    from fastgp.train.trainer import Trainer

    config = train_config(args)
    check_device(config.device, allow_auto=True)
    args.out = _folder(args.out)
    config.validate()  # before the data are loaded: a bad option fails in an instant
    group = ProcessGroup.from_environment(config.device)  # torchrun: one process per shard
    trainer = Trainer(config, args.out, progress=not args.no_progress, resume=args.resume,
                      group=group, overwrite=args.overwrite)
    if not group.is_main:  # rank 0 reports; the others train quietly
        try:
            trainer.run()
        except KeyboardInterrupt:
            return 130
        finally:
            group.close()
        return 0
    config = trainer.config
    processes = f", {group.world_size} processes" if group.distributed else ""
    print(f"fastgp train: {config.dataset}, {config.loss} (penalty {config.penalty}, "
          f"n_critic {config.n_critic}), {config.steps} generator steps on {config.device}"
          f"{processes} -> {args.out}; "
          f"critic step: {trainer.critic_step_name}")
    if trainer.stale_lock:
        print(f"took over the lock of {trainer.stale_lock}, which ended without releasing it")
    if trainer.replaced:
        print(f"--overwrite: removing the earlier run's files from {args.out}: "
              + ", ".join(trainer.replaced))
    try:
        final = trainer.run()
    except KeyboardInterrupt:
        print(f"interrupted: checkpoint and metrics saved in {args.out}", file=sys.stderr)
        return 130
    finally:
        group.close()
    summary = {key: final[key] for key in ("steps", "seconds") if key in final}
    if "modes_covered" in final:
        summary["modes"] = f"{final['modes_covered']}/{final['num_modes']}"
        summary["high_quality"] = f"{100 * final['high_quality_share']:.1f}%"
    if "emd" in final:
        summary["emd"] = f"{final['emd']:.4f} (real-vs-real {final['emd_floor']:.4f})"
    if "classes_present" in final:
        summary["classes"] = (f"{final['classes_present']}/10, shares "
                              f"{100 * final['min_class_share']:.1f}–{100 * final['max_class_share']:.1f}%")
        summary["frechet"] = (f"{final['frechet_distance']:.2f} "
                              f"(real-vs-real {final['frechet_floor']:.2f})")
    print("done: " + ", ".join(f"{key}={value:.1f}" if isinstance(value, float) else
                               f"{key}={value}" for key, value in summary.items()))
    print(f"run folder: {args.out} (report.md, samples.png, curves.png, metrics.csv, "
          "evaluations.csv, final_metrics.json)")
    return 0


def _run_sample(args: argparse.Namespace) -> int:
    if args.out.suffix not in (".npy", ".png"):
        raise ValueError(f"--out must end in .npy or .png, got {args.out}")
    args.run = _folder(args.run, "--run")
    require_seed("--seed", args.seed)
    require_train_extra()
    from fastgp.train.checkpoint import sample
    from fastgp.train.plots import save_image_grid

    samples = sample(args.run, args.n, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix == ".png":
        if samples.dim() != 4:
            raise ValueError(f"a PNG grid needs an image run; {args.run} generates samples of "
                             f"shape {tuple(samples.shape[1:])}: write .npy instead")
        save_image_grid(args.out, samples)
        print(f"wrote a grid of {samples.shape[0]} images to {args.out}")
        return 0
    np.save(args.out, samples.numpy())
    print(f"wrote {samples.shape[0]} samples of shape {tuple(samples.shape[1:])} to {args.out}")
    return 0


def _compare_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="the same budget for gan, wgan-clip, wgan-gp, wgan-lp on a toy set",
        description="Train each loss with its published defaults for the same number of "
                    "generator steps and seed; write compare.md/.csv (modes, high-quality share, "
                    "EMD, wall time) and compare.png. Rerunning skips finished runs and resumes "
                    "an interrupted one.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", choices=["8gaussians", "25gaussians"], default="25gaussians")
    parser.add_argument("--steps", type=int, default=None,
                        help="generator steps per loss (default: the data set's, 6000 on 25gaussians)")
    parser.add_argument("--losses", default=",".join(COMPARED_LOSSES), help="comma-separated")
    for name in ("hidden", "seed", "eval_every", "device"):  # as fastgp train has them
        _config_option(parser, name)
    parser.add_argument("--out", default="runs/compare",
                        help="one run folder per loss in it, and the table and figure")
    parser.add_argument("--no-progress", action="store_true")


def _run_compare(args: argparse.Namespace) -> int:
    require_train_extra()
    from fastgp.train.compare import compare

    args.out = _folder(args.out)
    losses = tuple(name.strip() for name in args.losses.split(",") if name.strip())
    unknown = [name for name in losses if name not in LOSSES]
    if unknown or not losses:
        raise ValueError(f"--losses takes names from {LOSSES}, got {args.losses!r}")
    base = TrainConfig(**_config_options(args))  # --dataset, --steps and the shared flags
    check_device(base.device, allow_auto=True)
    base.validate()
    compare(base, args.out, losses, progress=not args.no_progress)
    print((args.out / "compare.md").read_text(), end="")
    print(f"table: {args.out / 'compare.md'}, figure: {args.out / 'compare.png'}")
    return 0


def _critic_arguments(parser: argparse.ArgumentParser) -> None:
    """``--critic`` and ``--shape``, as profile and explain read them (:func:`_critic_and_shape`)."""
    from fastgp.perf.bench import CRITICS

    parser.add_argument("--critic", default="dcgan32",
                        help=f"one of {sorted(CRITICS)} or package.module:factory")
    parser.add_argument("--shape", help="sample shape without the batch, e.g. 3,32,32")


def _profile_parser(subparsers: argparse._SubParsersAction) -> None:
    from fastgp.perf.profile import PATHS

    parser = subparsers.add_parser(
        "profile", help="profile the GP overhead of a critic step",
        description="Time the phases of a WGAN-GP critic step, compare it with the step without "
                    "the penalty, count its ops, FLOPs, bytes and peak memory, and model its GPU "
                    "time. --critic takes a built-in name or package.module:factory (a callable "
                    "returning the critic; give --shape then).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _critic_arguments(parser)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--path", choices=PATHS, default="reference")
    parser.add_argument("--weight", type=float, default=10.0, help="λ")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")


def _bench_parser(subparsers: argparse._SubParsersAction) -> None:
    from fastgp.perf.bench import STANDARD_MATRIX
    from fastgp.perf.profile import PATHS

    parser = subparsers.add_parser(
        "bench", help="run the benchmark matrix and write CSV, Markdown and a chart",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up (about 1–2 min)")
    parser.add_argument("--cases", default=",".join(case.name for case in STANDARD_MATRIX),
                        help="comma-separated CRITIC-bBATCH cases")
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated penalty paths")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/bench", help="folder for bench.csv/.md/.png")
    parser.add_argument("--no-progress", action="store_true")


def load_critic_factory(spec: str):
    """``package.module:factory`` → the factory callable, with errors that say what is wrong."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--critic must be a built-in name or package.module:factory, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        # The console script puts its own folder on sys.path, not the current one.
        missing = getattr(error, "name", None)
        if missing is not None and (module_name + ".").startswith(missing + "."):
            hint = ("; add the folder that holds it to PYTHONPATH (PYTHONPATH=. when it is in "
                    "the current folder)")
        else:
            hint = ""
        raise ValueError(f"cannot import {module_name!r} for --critic: {error}{hint}") from error
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ValueError(f"{module_name} has no callable {attribute!r} for --critic")
    return factory


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise ValueError(f"--shape must be positive integers separated by commas, got {text!r}")
    return shape


def _check_shape_fits(critic: torch.nn.Module, name: str, shape: tuple[int, ...],
                      device: torch.device) -> None:
    """One forward on a batch of 1 (eval mode: batch norm refuses one sample in training) so
    that a shape the critic cannot take is one line, not a traceback from inside its layers."""
    training = critic.training
    critic.eval()
    try:
        with torch.no_grad():
            critic(torch.zeros(1, *shape, device=device))
    except RuntimeError as error:  # what torch's layers raise for mismatched shapes
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        size = ",".join(map(str, shape))
        raise ValueError(f"--shape {size} does not fit the critic {name}: {first_line}") from error
    finally:
        critic.train(training)


def _critic_and_shape(args: argparse.Namespace, device: torch.device,
                      shape_required: bool = True) -> tuple[torch.nn.Module, tuple[int, ...] | None]:
    """The critic of ``--critic`` (built-in or package.module:factory, seeded) on ``device``,
    and its sample shape (``--shape``, or the built-in's), checked by one forward."""
    from fastgp.perf.bench import CRITICS

    if args.critic in CRITICS:
        build, shape = CRITICS[args.critic].build, CRITICS[args.critic].sample_shape
    else:
        build, shape = load_critic_factory(args.critic), None
    if args.shape:
        shape = _parse_shape(args.shape)
    if shape is None and shape_required:
        raise ValueError("--shape is required with a package.module:factory critic")
    torch.manual_seed(0)
    critic = build()
    if not isinstance(critic, torch.nn.Module):
        raise ValueError(f"the critic factory must return an nn.Module, got {type(critic).__name__}")
    critic = critic.to(device)
    if shape is not None:
        _check_shape_fits(critic, args.critic, shape, device)
    return critic, shape


def _run_profile(args: argparse.Namespace) -> int:
    from fastgp.perf.profile import profile_gp

    integer("--batch", args.batch, minimum=1)
    integer("--repeats", args.repeats, minimum=1)
    integer("--warmup", args.warmup, minimum=0)
    real_number("--weight", args.weight, minimum=0.0)
    check_device(args.device)
    device = torch.device(args.device)
    critic, shape = _critic_and_shape(args, device)
    real = torch.randn(args.batch, *shape, device=device)
    fake = torch.randn(args.batch, *shape, device=device)
    result = profile_gp(critic, real, fake, path=args.path, weight=args.weight,
                        repeats=args.repeats, warmup=args.warmup)
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.format_table())
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    from fastgp.perf.bench import CRITICS, Case, run_matrix, write_outputs
    from fastgp.perf.profile import PATHS

    cases = []
    names = comma_list("--cases", args.cases, "comma-separated CRITIC-bBATCH cases, e.g. mlp-b64")
    paths = comma_list("--paths", args.paths, f"comma-separated paths from {', '.join(PATHS)}")
    integer("--repeats", args.repeats, minimum=1)
    integer("--warmup", args.warmup, minimum=0)
    check_device(args.device)
    args.out = _folder(args.out)
    check_destination(args.out)  # before the minutes of timing, not after
    for name in names:
        critic, _, batch = name.rpartition("-b")
        if critic not in CRITICS or not batch.isdigit() or int(batch) < 1:
            raise ValueError(f"bad case {name!r}: expected CRITIC-bBATCH with CRITIC in "
                             f"{sorted(CRITICS)}, e.g. dcgan32-b64")
        cases.append(Case(critic, int(batch)))
    repeats, warmup = (3, 1) if args.quick else (args.repeats, args.warmup)
    rows = run_matrix(cases, paths, repeats, warmup,
                      torch.device(args.device), progress=not args.no_progress)
    written = write_outputs(args.out, rows)
    print((args.out / "bench.md").read_text())
    print("wrote " + ", ".join(str(path) for path in written))
    if args.out / "bench.png" not in written:
        print(f"bench.png not drawn: matplotlib is not installed ({INSTALL_TRAIN})")
    return 0


def _explain_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain", help="how the engine reads a critic, and what blocks it",
        description="List the operations of a critic's forward as the engine traces them, the "
                    "rule each maps to, what blocks the explicit passes if anything, and (with "
                    "a shape) the FLOP ratio of a critic step with the penalty over one without, "
                    "for autograd and for the explicit passes. --critic takes a built-in name or "
                    "package.module:factory (a callable returning the critic; give --shape then).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _critic_arguments(parser)
    parser.add_argument("--batch", type=int, default=4, help="example batch for the FLOP count")
    parser.add_argument("--no-flops", action="store_true", help="only read the critic")


def _run_explain(args: argparse.Namespace) -> int:
    from fastgp.perf.explain import explain

    integer("--batch", args.batch, minimum=1)
    critic, shape = _critic_and_shape(args, torch.device("cpu"), shape_required=not args.no_flops)
    example = None if args.no_flops else torch.randn(args.batch, *shape)
    print(explain(critic, example))
    return 0


def _info_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="versions, devices and usable backends")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _run_info(args: argparse.Namespace) -> int:
    from fastgp._version import __version__
    from fastgp.ops.backend import environment_report
    from fastgp.perf.profile import describe_float32_precision, float32_precision

    # The TF32 settings decide how exact fp32 results are on Ampere and later GPUs; fastgp
    # reads them and never changes them.
    report = {"fastgp": __version__, **environment_report(),
              "float32_precision": float32_precision()}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"fastgp {report['fastgp']}  torch {report['torch']} (CUDA {report['torch_cuda']})  "
          f"triton {report['triton'] or 'not installed'}"
          + ("  [TRITON_INTERPRET=1]" if report["triton_interpret"] else ""))
    print(f"global backend: {report['global_backend']}")
    print(f"fp32 precision: {describe_float32_precision(report['float32_precision'])} "
          "(torch's global flags; fastgp never changes them)")
    for device, name in report["devices"].items():
        print(f"\n{device}: {name}  (auto -> {report['auto'][device]})")
        for backend, status in report["backends"][device].items():
            print(f"  {backend:<7} {status}")
    return 0


COMMANDS = {"train": _run_train, "sample": _run_sample, "compare": _run_compare,
            "explain": _run_explain,
            "profile": _run_profile, "bench": _run_bench, "info": _run_info}


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``fastgp`` and its commands."""
    parser = argparse.ArgumentParser(prog="fastgp", description=__doc__.split("\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    _train_parser(subparsers)
    _sample_parser(subparsers)
    _compare_parser(subparsers)
    _profile_parser(subparsers)
    _bench_parser(subparsers)
    _explain_parser(subparsers)
    _info_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except EXPECTED as error:
        failure = describe_failure(error, writing_to=getattr(args, "out", None))
        if failure is None:  # not an expected failure: a bug, and its traceback is the report
            raise
        status, message = failure
        print(f"fastgp {args.command}: error: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
