"""`d3p evaluate FILE.npz [FILE2.npz ...]`: MPJPE / P-MPJPE / acceleration error per action,
one or several prediction files side by side, as a markdown table (stdout, --markdown) and
JSON (--json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..data.predictions import PredictionsFormatError, load_predictions
from .report import EvaluationError, compare_predictions, markdown_table


def add_arguments(parser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE.npz", help="prediction files")
    parser.add_argument("--labels", nargs="+", metavar="LABEL",
                        help="one column label per file (default: the file names)")
    parser.add_argument("--subjects", nargs="+", metavar="SUBJECT",
                        help="evaluate only these subjects (first key component), e.g. S9 S11")
    parser.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    parser.add_argument("--markdown", metavar="OUT.md", help="write the markdown table")


def _default_labels(files: list[str]) -> list[str]:
    stems = [Path(name).stem for name in files]
    return stems if len(set(stems)) == len(stems) else [str(name) for name in files]


def main(args) -> int:
    labels = args.labels or _default_labels(args.files)
    if len(labels) != len(args.files):
        print(f"d3p evaluate: {len(labels)} labels for {len(args.files)} files", file=sys.stderr)
        return 2
    try:
        predictions = [load_predictions(name) for name in args.files]
        comparison = compare_predictions(predictions, labels, sources=args.files,
                                         subjects=args.subjects)
    except (PredictionsFormatError, EvaluationError) as err:
        print(f"d3p evaluate: {err}", file=sys.stderr)
        return 1
    table = markdown_table(comparison)
    print(table, end="")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table)
    if args.json:
        document = {
            "files": [{"label": label, "path": str(name), "meta": pred.meta}
                      for label, name, pred in zip(labels, args.files, predictions)],
            "subjects": args.subjects,
            **comparison,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    return 0
