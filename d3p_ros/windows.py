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

Modes: `lag = 0` is causal (the newest frame is refined as soon as it arrives, the window
padded at its start by repeating the first frame); `lag = L > 0` refines frame t once L
later frames exist (the output is L frames late but the model sees both sides of it).

Keeping up: every accepted frame that makes an output frame ready is counted as pending on
its track. `take_ready()` hands out only each track's newest ready window and reports how
many older pending output frames it superseded ("skipped behind"), so a consumer slower than
the input works on the present instead of a backlog, and says what it left out.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

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


@dataclass
class Track:
    frames: deque = field(default_factory=deque)
    filled_joints: int = 0      # 2D joints filled from history since the track started
    pending: int = 0            # output frames made ready since the last take_ready()


@dataclass
class ReadyWindow:
    track_id: int
    keypoints_2d: np.ndarray    # (T, 17, 2)
    pose_3d: np.ndarray         # (T, 17, 3)
    output_index: int           # which of the T refined frames to publish
    frame: WindowFrame          # the frame that output belongs to


class WindowManager:
    def __init__(self, window: int, lag: int = 0, track_timeout: float = 1.0,
                 max_gap: float = 0.5, backward_jump: float = 0.2, max_tracks: int = 32):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 0 <= lag < window:
            raise ValueError(f"lag must be in [0, window - 1] = [0, {window - 1}], got {lag}")
        if max_tracks < 1:
            raise ValueError(f"max_tracks must be >= 1, got {max_tracks}")
        for name, value in (("track_timeout", track_timeout), ("max_gap", max_gap),
                            ("backward_jump", backward_jump)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value}")
        self.window = int(window)
        self.lag = int(lag)
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
            track = self.tracks[track_id] = Track(deque(maxlen=self.window))
        elif track.frames:
            last = track.frames[-1].stamp_ns
            if stamp_ns == last:
                return Push.DUPLICATE
            if stamp_ns < last:
                if last - stamp_ns < self.backward_jump_ns:
                    return Push.OUT_OF_ORDER
                track.frames.clear()
                status = Push.RESET_BACKWARD_JUMP
            elif stamp_ns - last > self.max_gap_ns:
                track.frames.clear()
                status = Push.RESET_GAP
        keypoints = self._fill_missing(track, np.asarray(keypoints_2d, dtype=np.float32),
                                       np.asarray(visible, dtype=bool))
        track.frames.append(WindowFrame(int(stamp_ns), keypoints,
                                        np.asarray(pose_3d, dtype=np.float32), payload))
        if len(track.frames) > self.lag:
            track.pending += 1
        self.tracks.move_to_end(track_id)
        return status

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
        """The window to refine now for this track, or None while fewer than lag + 1 frames."""
        track = self.tracks.get(track_id)
        if track is None or len(track.frames) <= self.lag:
            return None
        frames = list(track.frames)
        pad = self.window - len(frames)
        index = [0] * pad + list(range(len(frames)))
        keypoints = np.stack([frames[i].keypoints_2d for i in index])
        poses = np.stack([frames[i].pose_3d for i in index])
        return ReadyWindow(track_id, keypoints, poses, self.window - 1 - self.lag,
                           frames[len(frames) - 1 - self.lag])

    def has_pending(self) -> bool:
        return self._orphaned > 0 or any(t.pending for t in self.tracks.values())

    def take_ready(self) -> tuple[list[ReadyWindow], int]:
        """Each track's newest ready window (copied out), and how many pending output frames
        were superseded: older ready frames of those tracks, frames of tracks forgotten or
        restarted before they were taken. Clears what is pending."""
        windows, skipped = [], self._orphaned
        self._orphaned = 0
        for track_id, track in self.tracks.items():
            if not track.pending:
                continue
            window = self.ready(track_id)
            if window is None:      # restarted since (lagged mode): nothing of it is ready
                skipped += track.pending
            else:
                skipped += track.pending - 1
                windows.append(window)
            track.pending = 0
        return windows, skipped

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
        self._orphaned += self.tracks.pop(track_id).pending

    def fill(self) -> float:
        """Mean fraction of the window held by the current tracks (0 with no tracks)."""
        if not self.tracks:
            return 0.0
        return float(np.mean([len(t.frames) for t in self.tracks.values()]) / self.window)

    def clear(self) -> None:
        self.tracks.clear()
        self._orphaned = 0
        self._recent_ns.clear()

