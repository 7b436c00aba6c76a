"""``speq-search`` command line: parses arguments and calls one library function per command.

Bad input ends with one line naming the field and what is accepted, and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from speq_search.errors import ConfigError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and still exit code 2)."""

    def error(self, message: str):  # noqa: D102
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


# (flag, dotted config key, type, help)
_TRAIN_FLAGS = [
    ("--dataset", "data.dataset", str, "data set name (see `speq-search datasets`)"),
    ("--data-dir", "data.data_dir", str, "folder holding the data set files (torchvision layout)"),
    ("--train-size", "data.train_size", int, "train on a stratified, seeded subset of N examples"),
    ("--batch-size", "data.batch_size", int, "training batch size"),
    ("--model", "model.name", str, "model name (see `speq-search models`)"),
    ("--width", "model.width", float, "width multiplier of the model"),
    ("--method", "speq.method", str, "fp | qat | kd-kl | speq | kd-fp"),
    ("--w-bits", "quant.w_bits", int, "weight bits: 2-8, or 32"),
    ("--a-bits", "quant.a_bits", int, "activation bits: 2-8, or 32"),
    ("--first-last-bits", "quant.first_last_bits", int, "weight bits of the first and last layer"),
    ("--weight-quantizer", "quant.weight_quantizer", str, "lsq (learned clip) | sawb (statistics)"),
    ("--p-high", "speq.p_high", float, "probability that a teacher layer takes --high-bits"),
    ("--high-bits", "speq.high_bits", int, "the teacher's high activation precision (32: no rounding)"),
    ("--kd-weight", "speq.kd_weight", float, "weight of the distillation loss (0: plain QAT)"),
    ("--ce-weight", "speq.ce_weight", float, "weight of the cross-entropy loss"),
    ("--temperature", "speq.temperature", float, "softmax temperature of the distillation loss"),
    ("--kd-loss", "speq.kd_loss", str, "cosine | cosine-logits | kl (default: the method's)"),
    ("--epochs", "optim.epochs", int, "epochs of quantized training"),
    ("--fp-epochs", "optim.fp_epochs", int, "epochs of the full-precision model (cached)"),
    ("--optimizer", "optim.optimizer", str, "sgd | adam"),
    ("--lr", "optim.lr", float, "learning rate of quantized training (cosine schedule)"),
    ("--fp-lr", "optim.fp_lr", float, "learning rate of the full-precision phase"),
    ("--seed", "seed", int, "seed of everything (the data split is fixed)"),
    ("--device", "device", str, "auto | cpu | cuda"),
    ("--fp-checkpoint", "fp_checkpoint", str, "start from this full-precision checkpoint"),
    ("--fp-cache-dir", "fp_cache_dir", str, "where trained full-precision models are cached"),
]


def _parse_set(items: Sequence[str]) -> dict:
    changes = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", item, "key=value, e.g. optim.epochs=2")
        try:
            changes[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}", value, "a YAML scalar, list or mapping") from None
    return changes


def build_parser() -> argparse.ArgumentParser:
    """The full ``speq-search`` parser (also used to render --help in the README)."""
    parser = _Parser(
        prog="speq-search",
        description="Find how few bits a neural network can run on: quantization-aware training with "
        "SPEQ (stochastic precision ensemble self-distillation) and searches over bit-widths.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    train = sub.add_parser("train", help="train one quantized network (QAT, KD or SPEQ)",
                           description="Train one network: a full-precision model first (cached), then "
                           "quantization-aware training with the chosen method. Writes OUT/config.yaml, "
                           "metrics.csv, metrics.json and checkpoint.pt.")
    train.add_argument("--config", help="YAML config (e.g. a run's config.yaml); flags override it")
    for flag, key, typ, help_text in _TRAIN_FLAGS:
        train.add_argument(flag, dest=key, type=typ, default=None, help=help_text)
    train.add_argument("--download", dest="data.download", action="store_true", default=None,
                       help="let torchvision download the data set into --data-dir")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="set any config field, e.g. quant.overrides='{features.4: {w_bits: 4}}'")
    train.add_argument("--out", required=True, help="run folder to write (must be new unless --resume)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    sub.add_parser("models", help="list the registered models")
    sub.add_parser("datasets", help="list the registered data sets")
    return parser


def _train(args: argparse.Namespace) -> int:
    from speq_search.config import TrainConfig
    from speq_search.train import run

    out = Path(args.out)
    if args.resume:
        cfg = TrainConfig.load(out / "config.yaml") if (out / "config.yaml").exists() else None
        if cfg is None:
            raise ConfigError("resume", str(out), "a run folder holding config.yaml and checkpoint.pt")
    else:
        cfg = TrainConfig.load(args.config) if args.config else TrainConfig()
        changes = {key: getattr(args, key) for _, key, _, _ in _TRAIN_FLAGS if getattr(args, key) is not None}
        if getattr(args, "data.download"):
            changes["data.download"] = True
        changes.update(_parse_set(args.set))
        if args.quiet:
            changes["progress"] = False
        cfg = cfg.replace(**changes)
    run(cfg, out, resume=args.resume)
    print(f"wrote {out}/metrics.json")
    return 0


def _listing(entries: dict[str, str]) -> int:
    width = max(len(k) for k in entries)
    for name, desc in entries.items():
        print(f"{name:<{width}}  {desc}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``speq-search`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "models":
            from speq_search.models import list_models

            return _listing(list_models())
        if args.command == "datasets":
            from speq_search.data import list_datasets

            return _listing(list_datasets())
    except ConfigError as err:
        print(f"speq-search {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"speq-search {args.command}: interrupted; results written so far are kept "
              "(train: continue with --resume)", file=sys.stderr)
        return 130
    except RuntimeError as err:  # e.g. TrainingDiverged
        print(f"speq-search {args.command}: failed: {err}", file=sys.stderr)
        return 1
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
