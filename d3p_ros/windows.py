"""One temporal window per tracked person, and which frame to refine when.

Each track keeps at most `window` frames (bounded memory; at most `max_tracks` tracks).
Stamps decide what a frame means for its track:
- same stamp as the last frame: a duplicate, dropped;
- earlier than the last frame by less than `backward_jump`: out of order, dropped;
- earlier by `backward_jump` or more (a bag loop, a restarted source): the window restarts;
- later by more than `max_gap`: the old frames no longer belong to this motion, restart.
Tracks whose last frame is more than `track_timeout` away from the stamps of the last
`PRUNE_FRAMES` frames are forgotten: after a bag loop the old tracks lie in the future and go
too, but one frame with a wild stamp does not make everyone else look stale. At most
`max_tracks` tracks: a new person replaces the least recently seen track, unless every
track was seen in the current frame (then the new person is refused).

Modes (`lag`, `stride`):
- causal, `lag = 0` (stride 1): every new frame is refined as soon as it arrives, in the window
  that ends at it (padded at its start by repeating the first frame); its last frame is
  published. A causal model's stream (d3p_model/causal_stream.py) takes the window's frames
  and refines only its newest (`complete_frame`); each frame's `segment` tells it a restart.
- lagged, `lag = L > 0`, `stride = s`: a window is refined every s frames of a track, and
  each frame is published once, as the blend of all the windows that covered it by then
  (weighted towards each window's centre, as `d3p refine` does offline: `blend_weights`).
  A window ending at frame e publishes frames e - L - s + 1 .. e - L (a track's first
  window: from its first frame; when that window would start after the first frame, one
  more window ending at frame T - 1 covers it), so every frame waits L to L + s - 1 frames;
  with L = T - 1 and the model's stride the output equals offline refinement away from the
  sequence ends. The windows of different people are staggered over the s phases, so each
  frame refines about (people / s) windows instead of all people every s-th frame.

Keeping up: `take_ready()` hands out only each track's newest due window. The frames that
older due windows would have published, if the newest window does not cover them, are
counted as skipped ("skipped behind"), as are frames of tracks forgotten or restarted before
a window published them, so a consumer slower than the input works on the present instead
of a backlog, and says what it left out. `complete(window, refined)` blends a refined window
into its frames and returns the frames it publishes; call it in the order the windows were
taken (one worker).
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from d3p_model.data.windows import blend_weights
from d3p_model.trust import limit_corrections

PRUNE_FRAMES = 3    # a track is stale only when this many consecutive frames say so


class Push(enum.Enum):
    ADDED = "added"
    NEW_TRACK = "new_track"
    RESET_GAP = "reset_gap"
    RESET_BACKWARD_JUMP = "reset_backward_jump"
    DUPLICATE = "duplicate_stamp"
    OUT_OF_ORDER = "out_of_order_stamp"
    TRACK_LIMIT = "track_limit"
    NEW_TRACK_EVICTED = "track_evicted"     # a new track, in place of the least recently seen

    @property
    def accepted(self) -> bool:
        return self in (Push.ADDED, Push.NEW_TRACK, Push.NEW_TRACK_EVICTED, Push.RESET_GAP,
                        Push.RESET_BACKWARD_JUMP)


@dataclass
class WindowFrame:
    stamp_ns: int
    keypoints_2d: np.ndarray    # (17, 2) normalised screen coordinates, all finite
    pose_3d: np.ndarray         # (17, 3) root-relative metres
    payload: object = None      # whatever the caller needs to publish this frame (root, header...)
    seq: int = 0                # index of this frame in its track since the track (re)started
    segment: int = 0            # how many times its track had restarted (seq counts anew)
    # the blend of the refined windows that covered this frame so far (worker side only)
    refined_sum: np.ndarray | None = None
    refined_weight: float = 0.0
    published: bool = False


@dataclass
class Track:
    frames: deque = field(default_factory=deque)
    filled_joints: int = 0      # 2D joints filled from history since the track started
    phase: int = 0              # lagged: windows end at frames L + phase + k * stride
    next_seq: int = 0           # frames accepted since the track (re)started
    segment: int = 0            # restarts so far
    published: int = 0          # frames before this seq are handed out or counted as skipped
    due: int = 0                # windows due since the last take_ready()
    last_due: int = -1          # seq of the newest frame a window is due at


@dataclass
class ReadyWindow:
    track_id: int
    keypoints_2d: np.ndarray    # (T, 17, 2)
    pose_3d: np.ndarray         # (T, 17, 3)
    frames: list                # the WindowFrames in the window, oldest first (no padding)
    pad: int                    # window positions before frames[0] (the first frame repeated)
    publish: list               # the WindowFrames this window publishes, oldest first

    @property
    def frame(self) -> WindowFrame:
        """The newest frame it publishes."""
        return self.publish[-1]

    @property
    def output_index(self) -> int:
        """Where that frame sits in the window."""
        return self.pad + self.frames.index(self.frame)


class WindowManager:
    def __init__(self, window: int, lag: int = 0, track_timeout: float = 1.0,
                 max_gap: float = 0.5, backward_jump: float = 0.2, max_tracks: int = 32,
                 stride: int = 1):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 0 <= lag < window:
            raise ValueError(f"lag must be in [0, window - 1] = [0, {window - 1}], got {lag}")
        if not 1 <= stride <= window:
            raise ValueError(f"stride must be in [1, window] = [1, {window}], got {stride}")
        if lag == 0 and stride != 1:
            raise ValueError("causal mode (lag 0) refines every frame: stride must be 1")
        if max_tracks < 1:
            raise ValueError(f"max_tracks must be >= 1, got {max_tracks}")
        for name, value in (("track_timeout", track_timeout), ("max_gap", max_gap),
                            ("backward_jump", backward_jump)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value}")
        self.window = int(window)
        self.lag = int(lag)
        self.stride = int(stride)
        # frames a track keeps: the newest due window (up to stride - 1 frames before the
        # newest), and the frames it publishes (lag + stride - 1 back from its end)
        self.history = max(self.window, self.lag + self.stride) + self.stride - 1
        self.timeout_ns = int(track_timeout * 1e9)
        self.max_gap_ns = int(max_gap * 1e9)
        self.backward_jump_ns = int(backward_jump * 1e9)
        self.max_tracks = int(max_tracks)
        self.tracks: OrderedDict[int, Track] = OrderedDict()    # least recently seen first
        self._orphaned = 0      # pending frames of tracks forgotten before anyone took them
        self._recent_ns: deque = deque(maxlen=PRUNE_FRAMES)     # stamps prune() was given

    def __len__(self) -> int:
        return len(self.tracks)

    def push(self, track_id: int, stamp_ns: int, keypoints_2d: np.ndarray, visible: np.ndarray,
             pose_3d: np.ndarray, payload=None) -> Push:
        """Add one frame of one person. Joints not `visible` get their 2D from history."""
        track = self.tracks.get(track_id)
        status = Push.ADDED
        if track is None:
            status = Push.NEW_TRACK
            if len(self.tracks) >= self.max_tracks:
                oldest_id, oldest = next(iter(self.tracks.items()))
                if oldest.frames and oldest.frames[-1].stamp_ns == stamp_ns:
                    return Push.TRACK_LIMIT     # all max_tracks are in this very frame
                self._forget(oldest_id)
                status = Push.NEW_TRACK_EVICTED
            track = self.tracks[track_id] = Track(deque(maxlen=self.history),
                                                  phase=self._free_phase())
        elif track.frames:
            last = track.frames[-1].stamp_ns
            if stamp_ns == last:
                return Push.DUPLICATE
            if stamp_ns < last:
                if last - stamp_ns < self.backward_jump_ns:
                    return Push.OUT_OF_ORDER
                self._restart(track)
                status = Push.RESET_BACKWARD_JUMP
            elif stamp_ns - last > self.max_gap_ns:
                self._restart(track)
                status = Push.RESET_GAP
        keypoints = self._fill_missing(track, np.asarray(keypoints_2d, dtype=np.float32),
                                       np.asarray(visible, dtype=bool))
        seq = track.next_seq
        track.next_seq += 1
        track.frames.append(WindowFrame(int(stamp_ns), keypoints,
                                        np.asarray(pose_3d, dtype=np.float32), payload, seq,
                                        track.segment))
        if self._is_due(seq, track.phase):
            track.due += 1
            track.last_due = seq
        self.tracks.move_to_end(track_id)
        return status

    def _is_due(self, seq: int, phase: int) -> bool:
        """Windows end at frames lag + phase + k * stride. When the first of them would
        start after the track's first frame (lag + phase >= window), one more window,
        ending at frame window - 1, covers the frames before it."""
        if seq >= self.lag and (seq - self.lag) % self.stride == phase:
            return True
        return seq == self.window - 1 and self.lag + phase >= self.window

    def _free_phase(self) -> int:
        """The phase fewest current tracks use: spreads the people's windows over frames."""
        used = [0] * self.stride
        for track in self.tracks.values():
            used[track.phase] += 1
        return used.index(min(used))

    def _restart(self, track: Track) -> None:
        self._orphaned += track.next_seq - track.published
        track.frames.clear()
        track.segment += 1
        track.next_seq = track.published = track.due = 0
        track.last_due = -1

    @staticmethod
    def _fill_missing(track: Track, keypoints: np.ndarray, visible: np.ndarray) -> np.ndarray:
        if visible.all():
            return keypoints
        keypoints = keypoints.copy()
        missing = ~visible
        track.filled_joints += int(missing.sum())
        if track.frames:
            # Hold the last known position: the smallest assumption about an occluded joint.
            keypoints[missing] = track.frames[-1].keypoints_2d[missing]
        else:
            keypoints[missing] = keypoints[visible].mean(axis=0) if visible.any() else 0.0
        return keypoints

    def ready(self, track_id: int) -> ReadyWindow | None:
        """The window to refine now for this track (ending at its newest due frame), or None
        before the first one is due. Changes nothing; take_ready() hands it out."""
        track = self.tracks.get(track_id)
        if track is None or track.last_due < 0:
            return None
        frames = list(track.frames)     # consecutive seq numbers, oldest first
        end = track.last_due
        base = frames[0].seq
        in_window = frames[max(end - self.window + 1, 0) - base:end - base + 1]
        pad = self.window - len(in_window)
        index = [0] * pad + list(range(len(in_window)))
        keypoints = np.stack([in_window[i].keypoints_2d for i in index])
        poses = np.stack([in_window[i].pose_3d for i in index])
        last = end - self.lag
        oldest = max(track.published, last - self.stride + 1, frames[0].seq)
        publish = [f for f in frames if oldest <= f.seq <= last]
        return ReadyWindow(track_id, keypoints, poses, in_window, pad, publish)

    def has_pending(self) -> bool:
        return self._orphaned > 0 or any(t.due for t in self.tracks.values())

    def take_ready(self) -> tuple[list[ReadyWindow], int]:
        """Each track's newest due window (arrays copied out), and how many frames will never
        be published: those only older due windows would have published, and frames of tracks
        forgotten or restarted before a window published them. Clears what is due."""
        windows, skipped = [], self._orphaned
        self._orphaned = 0
        for track_id, track in self.tracks.items():
            if not track.due:
                continue
            window = self.ready(track_id)
            last = track.last_due - self.lag
            skipped += (last + 1 - track.published) - len(window.publish)
            track.published = last + 1
            track.due = 0
            windows.append(window)
        return windows, skipped

    @staticmethod
    def complete(window: ReadyWindow, refined: np.ndarray,
                 correction_threshold: float = 0.0) -> tuple[list, int]:
        """Blend a refined (T, 17, 3) window into its frames; returns [(frame, pose)] for the
        frames it publishes (the `blend_weights` mean of every window that covered each, each
        joint's correction then soft-thresholded by `correction_threshold` metres, as `d3p refine`
        does: d3p_model/trust.py), and how many of them no refined window covered (skipped:
        their window was superseded)."""
        refined = np.asarray(refined, dtype=np.float64)
        weights = blend_weights(len(refined))
        for position, frame in enumerate(window.frames, start=window.pad):
            if frame.published:
                continue
            if frame.refined_sum is None:
                frame.refined_sum = weights[position] * refined[position]
            else:
                frame.refined_sum += weights[position] * refined[position]
            frame.refined_weight += weights[position]
        out, skipped = [], 0
        for frame in window.publish:
            if frame.refined_weight:
                blended = (frame.refined_sum / frame.refined_weight).astype(np.float32)
                out.append((frame, limit_corrections(frame.pose_3d, blended,
                                                     correction_threshold)))
            else:
                skipped += 1
            frame.published, frame.refined_sum = True, None   # later windows leave it be
        return out, skipped

    @staticmethod
    def complete_frame(window: ReadyWindow, refined_frame: np.ndarray,
                       correction_threshold: float = 0.0) -> list:
        """Causal mode with a causal model: the stream refined the window's newest frame
        alone, (17, 3); returns [(frame, pose)] for it, its correction soft-thresholded as
        in `complete`."""
        frame = window.frame
        frame.published, frame.refined_sum = True, None
        return [(frame, limit_corrections(frame.pose_3d, np.asarray(refined_frame, np.float32),
                                          correction_threshold))]

    def prune(self, now_ns: int) -> list[int]:
        """Call once per frame, before its pushes. Forgets the tracks whose last frame is
        further than the timeout from `now_ns` and from the previous PRUNE_FRAMES - 1 frames.

        Distance, not age: after a bag loop the old tracks lie in the future and go too.
        Several frames: a single frame stamped far off (a clock glitch) forgets nobody.
        """
        self._recent_ns.append(int(now_ns))
        stale = [tid for tid, tr in self.tracks.items()
                 if not tr.frames or all(abs(t - tr.frames[-1].stamp_ns) > self.timeout_ns
                                         for t in self._recent_ns)]
        for tid in stale:
            self._forget(tid)
        return stale

    def _forget(self, track_id: int) -> None:
        track = self.tracks.pop(track_id)
        self._orphaned += track.next_seq - track.published

    def fill(self) -> float:
        """Mean fraction of the window held by the current tracks (0 with no tracks)."""
        if not self.tracks:
            return 0.0
        return float(np.mean([len(t.frames) for t in self.tracks.values()]) / self.window)

    def clear(self) -> None:
        self.tracks.clear()
        self._orphaned = 0
        self._recent_ns.clear()

