"""`d3p`: one command-line entry point, one thin subcommand per offline task.

Each subcommand lives in the module that does the work and exposes
`add_arguments(parser)` and `main(args)`. Modules are imported only when their
subcommand runs, so `d3p --help` works without torch or data present.
"""

import argparse
import importlib
import sys

# name -> (module, one-line description). Order is the pipeline's order.
COMMANDS = {
    "predict": ("d3p_model.lifter.predict",
                "run the base lifter's folds and write prediction files into the cache"),
    "train-lifter": ("d3p_model.lifter.train", "train one base-lifter fold"),
    "smooth": ("d3p_model.evaluate.smoother", "classical reference refiner (Savitzky-Golay)"),
    "fit-cnd": ("d3p_model.cnd.fit", "fit the conditional noisy-pose distribution"),
    "train": ("d3p_model.train.cli", "train a D3PRefiner from a config file"),
    "train-for-lifter": ("d3p_model.train.for_lifter",
                         "bring your own lifter: CND fit, training, calibration, do-no-harm "
                         "check and ONNX export from one predictions file"),
    "refine": ("d3p_model.refine", "refine a predictions file with a trained D3PRefiner"),
    "evaluate": ("d3p_model.evaluate.cli", "MPJPE / P-MPJPE / acceleration error per action"),
    "plot": ("d3p_model.evaluate.plots",
             "figures: error histograms and skeleton sequences before/after refinement"),
    "flops": ("d3p_model.denoiser.flops", "count the PoseDenoiser's FLOPs per window"),
    "export": ("d3p_model.export.cli", "export the K-step refinement to ONNX (checked against PyTorch)"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<14} {desc}" for name, (_, desc) in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="d3p",
        description="D3PRefiner: refine monocular 3D human poses with a diffusion model.",
        epilog=f"commands:\n{lines}\n\nRun `d3p COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    top.add_argument("command", nargs="?", choices=list(COMMANDS), metavar="COMMAND")
    if not argv or argv[0] not in COMMANDS:
        args = top.parse_args(argv[:1])  # prints help / a clear error for bad names
        top.print_help()
        return 0 if args.command is None and not argv else 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"d3p {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    return int(module.main(parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
