"""`d3p train CONFIG [--out DIR] [--resume]`; also `torchrun --nproc_per_node=N -m
d3p_model.train.cli CONFIG` for DDP training (gloo on CPU, nccl on CUDA)."""

import argparse
import os
import shlex
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML (path, or a name in d3p_model/configs/)")
    parser.add_argument("--out", default=None,
                        help="run directory (default: runs/<config name>/)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <out>/checkpoint.pt")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config entry, e.g. --set optim.epochs=4 (repeatable)")
    parser.add_argument("--stop-after-epochs", type=int, default=None,
                        help="end this call after N epochs (resumable later)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args) -> int:
    from .config import ConfigError, apply_overrides, read_config_file
    from .loop import train_from_config
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        command = (f"torchrun --nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', world)} "
                   f"-m d3p_model.train.cli {shlex.join(sys.argv[1:])}")
    else:
        command = shlex.join(["d3p", "train", *sys.argv[sys.argv.index("train") + 1:]]) \
            if "train" in sys.argv[1:2] else shlex.join(sys.argv)
    try:
        config = read_config_file(args.config)
        if args.overrides:
            config = apply_overrides(config, args.overrides)
        train_from_config(config, args.out, args.resume, command=command,
                          stop_after_epochs=args.stop_after_epochs,
                          progress=not args.no_progress)
    except (ConfigError, FileExistsError, FileNotFoundError) as err:
        print(f"d3p train: error: {err}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="d3p_model.train.cli", description=__doc__)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
