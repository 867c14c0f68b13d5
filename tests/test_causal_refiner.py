"""A causal refiner end to end: offline over a whole sequence, its ONNX stream graph, and the
per-person streams (d3p_model/causal_stream.py) that the node's causal mode uses."""

import numpy as np
import pytest
import torch

from d3p_model.causal_stream import CausalStreams
from d3p_model.cnd import ConditionalNoiseModel
from d3p_model.data.synthetic import make_synthetic_predictions
from d3p_model.denoiser import DenoiserConfig, PoseDenoiser
from d3p_model.export.onnx import export_model_dir
from d3p_model.export.runtime import OnnxRefiner
from d3p_model.refiner import D3PRefiner
from d3p_model.trust import limit_corrections

torch.set_num_threads(1)
TOLERANCE_M = 1e-4   # 0.1 mm, as for the windowed graph


def _sequences(count=3, frames=30, seed=5):
    predictions = make_synthetic_predictions(num_sequences=count, num_frames=frames, seed=seed)
    return [(s.keypoints_normalised().astype(np.float32),
             (s.pose_3d - s.pose_3d[:, :1]).astype(np.float32), s.ground_truth_3d)
            for _, s in predictions.items()]


@pytest.fixture(scope="module")
def causal_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal_model")
    torch.manual_seed(0)
    net = PoseDenoiser(DenoiserConfig(window=6, depth=2, width=16, heads=2, pose_scale=4.0,
                                      bone_inputs=True, reprojection_inputs=True, causal=True))
    with torch.no_grad():   # an untrained net starts near the identity: make it move poses
        for param in net.parameters():
            param.add_(0.2 * torch.randn_like(param))
    refiner = D3PRefiner(net, ConditionalNoiseModel.fit_sequences(_sequences(2, 40, 3)),
                         correction_threshold=0.002)
    refiner.save(root / "model")
    return root / "model"


def test_offline_refinement_is_the_stream_of_the_whole_sequence(causal_model):
    refiner = D3PRefiner.load(causal_model)
    keypoints, pose, _ = _sequences(1, 33)[0]
    offline = refiner.refine_sequence(keypoints, pose)
    streams = CausalStreams(refiner.stream_step, refiner.history_shape())
    streamed = []
    for seq in range(len(pose)):
        frames = [(s, keypoints[s], pose[s], 0) for s in range(max(0, seq - 5), seq + 1)]
        (out,) = streams.refine([(7, frames)])
        streamed.append(limit_corrections(pose[seq], out, refiner.correction_threshold))
    np.testing.assert_allclose(np.stack(streamed), offline, atol=1e-5)
    assert np.abs(offline - pose).max() > 0.005     # it does refine


@pytest.mark.parametrize("people", [1, 4])
def test_the_onnx_stream_graph_matches_pytorch(causal_model, tmp_path, people):
    refiner = D3PRefiner.load(causal_model)
    path = export_model_dir(causal_model, path=tmp_path / "stream.onnx")
    runtime = OnnxRefiner(path, num_threads=1)
    assert runtime.causal and runtime.history_shape() == refiner.history_shape()
    data = _sequences(people, 20, seed=people)
    keypoints = np.stack([kp for kp, _, _ in data])
    pose = np.stack([p for _, p, _ in data])
    np.testing.assert_allclose(runtime.refine_windows(keypoints, pose),
                               refiner.refine_windows(keypoints, pose), atol=TOLERANCE_M)
    np.testing.assert_allclose(runtime.refine_sequence(keypoints[0], pose[0]),
                               refiner.refine_sequence(keypoints[0], pose[0]), atol=TOLERANCE_M)


def test_streams_catch_up_skipped_frames_restart_and_stay_apart(causal_model):
    refiner = D3PRefiner.load(causal_model)
    (kp_a, pose_a, _), (kp_b, pose_b, _) = _sequences(2, 30, seed=9)
    full_a = refiner.refine_sequence(kp_a, pose_a, correction_threshold=0)
    full_b = refiner.refine_sequence(kp_b, pose_b, correction_threshold=0)
    calls = []

    def counting_step(*arrays):
        calls.append(len(arrays[0]))
        return refiner.stream_step(*arrays)

    streams = CausalStreams(counting_step, refiner.history_shape())
    # frames seq counted from `base`, the track's segment (restart count) 1 when restarted
    recent = lambda kp, pose, seq, base=0: [(s - base, kp[s], pose[s], int(base > 0))  # noqa: E731
                                            for s in range(max(base, seq - 5), seq + 1)]
    for seq in range(12):
        if seq in (7, 8, 9):     # the caller fell behind for A: B alone
            (out_b,) = streams.refine([(2, recent(kp_b, pose_b, seq))])
            continue
        out_a, out_b = streams.refine([(1, recent(kp_a, pose_a, seq)),
                                       (2, recent(kp_b, pose_b, seq))])
        np.testing.assert_allclose(out_a, full_a[seq], atol=1e-5)
        np.testing.assert_allclose(out_b, full_b[seq], atol=1e-5)
    # at frame 10 A's three missed frames were fed first (3 calls of A alone, then both);
    # at frame 11 one call again
    assert calls[-5:] == [1, 1, 1, 2, 2] and streams.restarts_gap == 0
    # A restarts (its frames count from 0 again, from frame 14 of its motion): fresh history
    restarted = refiner.refine_sequence(kp_a[14:], pose_a[14:], correction_threshold=0)
    for seq in range(14, 20):
        (out_a,) = streams.refine([(1, recent(kp_a, pose_a, seq, base=14))])
        np.testing.assert_allclose(out_a, restarted[seq - 14], atol=1e-5)
    # more frames missed than the recent frames hold: the history restarts there, counted
    (out_b,) = streams.refine([(2, recent(kp_b, pose_b, 25))])
    assert streams.restarts_gap == 1
    tail = refiner.refine_sequence(kp_b[20:26], pose_b[20:26], correction_threshold=0)
    np.testing.assert_allclose(out_b, tail[-1], atol=1e-5)
    streams.keep_only([2])
    assert len(streams) == 1


def test_a_failing_or_non_finite_stream_costs_only_its_track(causal_model):
    refiner = D3PRefiner.load(causal_model)
    (kp, pose, _), = _sequences(1, 10)

    def step(keypoints, poses, history, offsets):
        if np.any(keypoints[:, 0, 0] > 100):
            raise RuntimeError("bad person")
        refined, new = refiner.stream_step(keypoints, poses, history, offsets)
        refined[poses[:, 0, 0] > 100] = np.nan
        return refined, new

    streams = CausalStreams(step, refiner.history_shape())
    bad_kp = kp.copy()
    bad_kp[3, 0, 0] = 1000.0
    bad_pose = pose.copy()
    bad_pose[3, 0, 0] = 1000.0
    for seq in range(5):
        out = streams.refine([(1, [(seq, kp[seq], pose[seq], 0)]),
                              (2, [(seq, bad_kp[seq], pose[seq], 0)]),
                              (3, [(seq, kp[seq], bad_pose[seq], 0)])])
        np.testing.assert_allclose(out[0], refiner.refine_sequence(
            kp[:seq + 1], pose[:seq + 1], correction_threshold=0)[-1], atol=1e-5)
        if seq == 3:
            assert isinstance(out[1], RuntimeError) and not np.isfinite(out[2]).all()
            assert set(streams._states) == {1}      # both restart at their next frame
        else:
            assert np.isfinite(out[1]).all() and np.isfinite(out[2]).all()


def test_a_stream_graph_from_older_code_is_stale_even_from_the_same_weights(causal_model,
                                                                           tmp_path):
    import shutil

    import onnx

    from d3p_model.export.graph_file import META_STREAM, onnx_file_name

    model_dir = tmp_path / "model"
    shutil.copytree(causal_model, model_dir)
    shipped = export_model_dir(model_dir)
    assert shipped == model_dir / onnx_file_name(2)
    graph = onnx.load(str(shipped))
    for entry in graph.metadata_props:
        if entry.key == META_STREAM:
            entry.value = "1"               # as an export by the first stream interface
    onnx.save(graph, str(shipped))
    warnings = []
    runtime = OnnxRefiner.load(model_dir, warn=warnings.append)
    assert runtime.onnx_file != shipped and "older code" in warnings[0]
    keypoints, pose, _ = _sequences(1, 8)[0]
    np.testing.assert_allclose(runtime.refine_sequence(keypoints, pose),
                               D3PRefiner.load(model_dir).refine_sequence(keypoints, pose),
                               atol=TOLERANCE_M)


@pytest.fixture(scope="module")
def tiny_causal():
    torch.manual_seed(4)
    net = PoseDenoiser(DenoiserConfig(window=4, depth=1, width=8, heads=1, causal=True))
    with torch.no_grad():
        for param in net.parameters():
            param.add_(0.3 * torch.randn_like(param))
    return D3PRefiner(net, ConditionalNoiseModel.fit_sequences(_sequences(2, 20, 3)))


def test_streams_equal_offline_whatever_the_caller_skips_or_restarts(tiny_causal):
    """Property (hypothesis): for any schedule of calls, each call handing a track its
    recent frames (at most the window) ending at a newer frame, the output is the causal
    model's offline output over the track since its (re)start, or since the oldest frame
    handed in when more were missed than that (a counted restart)."""
    from hypothesis import given, settings, strategies as st

    refiner = tiny_causal
    window = refiner.window
    keypoints, pose, _ = _sequences(1, 40, seed=12)[0]

    @settings(max_examples=25, deadline=None)
    @given(st.lists(st.tuples(st.integers(1, 6), st.booleans()), min_size=1, max_size=12))
    def check(schedule):
        streams = CausalStreams(refiner.stream_step, refiner.history_shape())
        start, seq, history_from, restarts, segment = 0, -1, 0, 0, 0
        for advance, restart in schedule:
            if restart and seq >= 0:          # the track restarts at the next frame
                start, history_from = start + seq + 1, start + seq + 1
                seq, segment = -1, segment + 1
            newest = seq + advance
            if start + newest >= len(pose):
                break
            first = max(0, newest - window + 1)
            if seq < 0:                       # a new track: its history starts at frames[0]
                history_from = start + first
            elif first > seq + 1:             # more missed than the frames handed in
                history_from, restarts = start + first, restarts + 1
            frames = [(s, keypoints[start + s], pose[start + s], segment)
                      for s in range(first, newest + 1)]
            (out,) = streams.refine([(5, frames)])
            expected = refiner.refine_sequence(keypoints[history_from:start + newest + 1],
                                               pose[history_from:start + newest + 1],
                                               correction_threshold=0)[-1]
            np.testing.assert_allclose(out, expected, atol=1e-5)
            seq = newest
        assert streams.restarts_gap == restarts

    check()
