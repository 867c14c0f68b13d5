"""A refiner model directory's file names and its model.json reader, without torch, so the
ONNX Runtime path (d3p_model/export/runtime.py) reads models the same way D3PRefiner does."""

import json
import pathlib

FORMAT = "d3p-refiner"
VERSION = 1
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
CND_FILE = "cnd.pt"


class D3PModelError(ValueError):
    """A missing or corrupt model directory; the message names the file and the problem."""


def read_model_spec(model_dir) -> dict:
    """model_dir/model.json, checked for format and version; D3PModelError naming the file."""
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        raise D3PModelError(f"{model_dir}: model directory does not exist")
    model_path = model_dir / MODEL_FILE
    try:
        spec = json.loads(model_path.read_text())
    except FileNotFoundError:
        raise D3PModelError(f"{model_path}: file is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise D3PModelError(f"{model_path}: not readable JSON ({err})") from err
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise D3PModelError(f"{model_path}: 'format' is not {FORMAT!r}")
    if spec.get("version") != VERSION:
        raise D3PModelError(f"{model_path}: version {spec.get('version')!r}, "
                            f"this d3p reads version {VERSION}")
    return spec
