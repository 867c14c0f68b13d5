"""`d3p fit-cnd PREDICTIONS.npz -o cnd.pt`: fit the CND on held-out lifter outputs.

`d3p train` fits its own CND on its training split; this command is for inspecting the
error model of a predictions file (how much of the error the condition explains) or for
fitting one by hand.
"""

import argparse
import sys

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predictions", help="predictions .npz with ground_truth_3d "
                                            "(held-out outputs on the training subjects)")
    parser.add_argument("-o", "--output", required=True, help="CND statistics file to write (.pt)")
    parser.add_argument("--ridge", type=float, default=1e-6,
                        help="relative ridge on the condition covariance (default 1e-6)")
    parser.add_argument("--temporal-lags", type=int, default=0, metavar="N",
                        help="also measure the residual's autocorrelation at lags 0..N-1 "
                             "(what cnd_temporal trains with) and print it (default 0: off)")


def main(args) -> int:
    from ..data.predictions import PredictionsFormatError, load_predictions
    from .gaussian import ConditionalNoiseModel
    try:
        predictions = load_predictions(args.predictions)
    except PredictionsFormatError as err:
        print(f"d3p fit-cnd: error: {err}", file=sys.stderr)
        return 2
    missing = [k for k, s in predictions.items() if s.ground_truth_3d is None]
    if missing:
        print(f"d3p fit-cnd: error: {args.predictions}: sequence {missing[0]!r} has no "
              f"ground_truth_3d (the CND models the error against ground truth)", file=sys.stderr)
        return 2
    def sequences():
        return ((s.keypoints_normalised(), s.pose_3d - s.pose_3d[:, :1],
                 s.ground_truth_3d - s.ground_truth_3d[:, :1]) for _, s in predictions.items())
    model = ConditionalNoiseModel.fit_sequences(sequences(), ridge=args.ridge)
    if args.temporal_lags:
        model = model.with_temporal_correlation(sequences(), lags=args.temporal_lags)
    model.save(args.output)
    rms = 1000 * np.sqrt(np.mean(model.error_scale ** 2))
    cond_rms = 1000 * np.sqrt(np.trace(model.cond_cov) / model.cond_cov.shape[0])
    print(f"fitted on {model.num_frames} frames of {len(predictions)} sequences -> {args.output}")
    print(f"error RMS per coordinate {rms:.1f} mm; conditional std {cond_rms:.1f} mm; "
          f"the condition explains {100 * model.explained_fraction():.1f}% of the error variance")
    if model.temporal_acf is not None:
        acf = model.temporal_acf.mean(axis=0)
        shown = [k for k in (1, 2, 5, 10, 25, 50) if k < len(acf)]
        print("residual autocorrelation (mean over dimensions) at lag " +
              ", ".join(f"{k}: {acf[k]:.3f}" for k in shown))
    return 0
