"""`d3p flops`: FLOPs of one PoseDenoiser call and of one K-step refinement, per window.

Counted with torch.utils.flop_counter.FlopCounterMode (matrix products and attention; one
multiply-add = 2 FLOPs). Element-wise work (norms, GELU, softmax) is not counted, as usual
for such tables; the paper's own convention is not stated.
"""

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="count a trained model directory "
                                                      "(otherwise: the architecture below)")
    parser.add_argument("--depth", type=int, nargs="+", default=[4, 6, 8],
                        help="denoising blocks (several values: one row each)")
    parser.add_argument("--width", type=int, default=None, help="token width d (default 32)")
    parser.add_argument("--heads", type=int, default=None, help="attention heads (default 1)")
    parser.add_argument("--window", type=int, default=27, help="frames per window T")
    parser.add_argument("--steps", type=int, default=2, help="DDIM steps K per refinement")


def count_flops(config, steps: int = 2) -> dict:
    """FLOPs for one window: one denoiser call, and a K-step refinement; parameter count."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .model import PoseDenoiser
    model = PoseDenoiser(config).eval()
    noisy = torch.zeros(1, config.window, 17, 3)
    keypoints = torch.zeros(1, config.window, 17, 2)
    t = torch.full((1,), config.timesteps, dtype=torch.long)
    # The CPU attention kernel is missing from torch's FLOP registry: count it like the
    # registered (CUDA) ones, from the query/key/value shapes.
    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
                     _attention_flops}
    counter = FlopCounterMode(display=False, custom_mapping=cpu_attention)
    with torch.no_grad(), counter:
        model(noisy, keypoints, t)
    per_call = counter.get_total_flops()
    return {"depth": config.depth, "width": config.width, "heads": config.heads,
            "window": config.window, "parameters": sum(p.numel() for p in model.parameters()),
            "flops_per_call": per_call, "flops_per_refinement": per_call * steps}


def count_stream_flops(config, steps: int = 2) -> int:
    """FLOPs of one causal stream step (denoiser/streaming.py): a K-step refinement of one
    new frame of one person from a full history, counted the same way."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..diffusion.schedule import cosine_alpha_bar
    from .model import PoseDenoiser
    from ..causal_stream import history_shape
    from .streaming import CausalStreamStep
    stream = CausalStreamStep(PoseDenoiser(config).eval(), torch.ones(17, 3),
                              cosine_alpha_bar(config.timesteps), steps)
    offsets = torch.arange(1, config.window).flip(0)[None]
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        stream(torch.zeros(1, 17, 2), torch.zeros(1, 17, 3),
               torch.zeros(1, *history_shape(config.to_dict(), steps)), offsets)
    return counter.get_total_flops()


def _attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def main(args) -> int:
    from .model import DenoiserConfig
    configs = []
    if args.model:
        from ..refiner import D3PModelError, D3PRefiner
        try:
            refiner = D3PRefiner.load(args.model)
        except D3PModelError as err:
            print(f"d3p flops: error: {err}", file=sys.stderr)
            return 2
        configs.append(refiner.denoiser.config)
        args.steps = refiner.steps
    else:
        base = DenoiserConfig(window=args.window)
        for depth in args.depth:
            configs.append(DenoiserConfig(window=args.window, depth=depth,
                                          width=args.width or base.width,
                                          heads=args.heads or base.heads))
    print(f"{'depth':>5} {'width':>5} {'heads':>5} {'T':>4} {'params':>8} "
          f"{'MFLOPs/call':>12} {f'MFLOPs/{args.steps} steps':>16}")
    for config in configs:
        row = count_flops(config, args.steps)
        print(f"{row['depth']:>5} {row['width']:>5} {row['heads']:>5} {row['window']:>4} "
              f"{row['parameters']:>8} {row['flops_per_call'] / 1e6:>12.2f} "
              f"{row['flops_per_refinement'] / 1e6:>16.2f}")
        if config.causal:
            print(f"causal: a stream step (one new frame, {args.steps} steps) "
                  f"{count_stream_flops(config, args.steps) / 1e6:.2f} MFLOPs; the rows above "
                  f"count a {config.window}-frame sequence")
    return 0
