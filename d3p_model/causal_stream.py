"""Per-person streams of a causal refiner: each person's cached history, kept across calls.

A causal model (denoiser/streaming.py) refines a person's new frame from the keys and values
its earlier frames left in each attention layer. `CausalStreams` holds that history per
track and feeds each track the frames it has not seen, so the output of every frame is the
causal model's output over the track so far, whatever the caller skipped:
- a track seen for the first time, or restarted (a new `segment`: the caller's count of
  the track's restarts; its frames count again from seq 0), starts from an empty history;
- frames the caller did not hand in (a worker that fell behind) are fed first, from the
  track's recent frames, before its newest one; when more are missing than those recent
  frames hold, the history restarts at the oldest of them (counted in `restarts_gap`).
All tracks due in a call share one model call per frame position (one call when each has
one new frame, as in steady state). numpy only: the node's ONNX Runtime path has no torch.

`step(keypoints (B, 17, 2), pose (B, 17, 3), history, history_offset) -> (refined,
history_new)` is a backend's stream step (D3PRefiner.stream_step, OnnxRefiner.stream_step);
`advance_history` writes its new keys/values into the person's ring buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .skeleton import NUM_JOINTS


def history_shape(denoiser: dict, steps: int) -> tuple[int, ...]:
    """Per person, for a causal model's settings (model.json `denoiser`): (layers M = steps x
    depth x 2, key/value 2, 17 joints, heads, window - 1 frames, head channels)."""
    heads = int(denoiser["heads"])
    return (int(steps) * int(denoiser["depth"]) * 2, 2, NUM_JOINTS, heads,
            int(denoiser["window"]) - 1, int(denoiser["width"]) // 2 // heads)


def advance_history(history: np.ndarray, offsets: np.ndarray, new: np.ndarray) -> None:
    """In place, after a step: every cached frame is one frame older, the one that leaves
    the band (offset W) frees its slot, and the new frame's keys/values (..., 1, d) go into
    a free slot at offset 1. history (..., W - 1, d) and offsets (W - 1,) of one person."""
    slots = offsets.shape[-1]
    offsets[offsets > 0] += 1
    offsets[offsets > slots] = 0
    slot = int(np.argmin(offsets))          # a free slot (offset 0) always exists now
    history[..., slot, :] = new[..., 0, :]
    offsets[slot] = 1


@dataclass
class _State:
    last_seq: int
    segment: object              # the caller's restart count of the track: seq numbers restart
    history: np.ndarray          # history_shape, float32
    offsets: np.ndarray          # (window - 1,) int64, 0: empty slot


class CausalStreams:
    def __init__(self, step, history_shape: tuple):
        self._step = step
        self.history_shape = tuple(history_shape)
        self.window = self.history_shape[-2] + 1    # the band: the slots and the new frame
        self._states: dict = {}
        self.restarts_gap = 0       # tracks whose missed frames outran their recent frames

    def __len__(self) -> int:
        return len(self._states)

    def refine(self, tracks) -> list:
        """tracks: [(track_id, frames)], frames the track's recent (seq, keypoints (17, 2),
        pose (17, 3), segment) oldest first: consecutive seq, one segment, the newest last.
        Returns per track the refined (17, 3) newest frame (not finite: then its history is
        dropped too), or the exception its stream raised (its history is dropped: it
        restarts at its next frame)."""
        feeds = []
        for track_id, frames in tracks:
            state = self._states.get(track_id)
            first, newest = frames[0][0], frames[-1][0]
            segment = frames[-1][3]
            if state is not None and (state.segment != segment or state.last_seq >= newest):
                state = None                                  # restarted: seq counts anew
            elif state is not None and first > state.last_seq + 1:
                self.restarts_gap += 1                        # missed more than it was handed
                state = None
            if state is None:
                state = _State(first - 1, segment, np.zeros(self.history_shape, np.float32),
                               np.zeros(self.window - 1, np.int64))
            self._states[track_id] = state
            feeds.append([f for f in frames if f[0] > state.last_seq])
        results = [None] * len(tracks)
        # round r: every track with an r-th unseen frame, counted back from its newest
        for back in range(max((len(f) for f in feeds), default=0), 0, -1):
            members = [i for i, feed in enumerate(feeds)
                       if len(feed) >= back and tracks[i][0] in self._states]
            if members:
                self._run([(i, tracks[i][0], feeds[i][-back]) for i in members], results)
        return results

    def _run(self, items, results) -> None:
        try:
            refined, new = self._call(items)
        except Exception as err:  # noqa: BLE001 - which track caused it is found below
            if len(items) > 1:
                for item in items:
                    self._run([item], results)
                return
            index, track_id, _ = items[0]
            results[index] = err
            self._states.pop(track_id, None)
            return
        for row, (index, track_id, (seq, _, _, _)) in enumerate(items):
            results[index] = refined[row]
            if not (np.all(np.isfinite(refined[row])) and np.all(np.isfinite(new[row]))):
                self._states.pop(track_id)   # a NaN in the history would stay in it
                continue
            state = self._states[track_id]
            advance_history(state.history, state.offsets, new[row])
            state.last_seq = seq

    def _call(self, items):
        states = [self._states[track_id] for _, track_id, _ in items]
        # one person (the common case): its own arrays as a batch of one, no copy
        stack = (lambda arrays: arrays[0][None]) if len(items) == 1 else np.stack
        return self._step(stack([kp for _, _, (_, kp, _, _) in items]),
                          stack([pose for _, _, (_, _, pose, _) in items]),
                          stack([s.history for s in states]),
                          stack([s.offsets for s in states]))

    def keep_only(self, track_ids) -> None:
        """Drop the history of every track not in track_ids (forgotten by the caller)."""
        alive = set(track_ids)
        for track_id in [t for t in self._states if t not in alive]:
            del self._states[track_id]

    def clear(self) -> None:
        self._states.clear()
