"""Episode videos: frames from an env's renderer, streamed to MP4 (or GIF), and an animated GIF for TensorBoard.

Frames come from the renderer of env 0 of an evaluation env: EnvPool's `render()` (classic control and the
full-colour Atari screen; MuJoCo needs a headless GL context, e.g. `MUJOCO_GL=egl` on a GPU), gymnasium's
`render_mode="rgb_array"`, or a custom `BaseEnv` that defines `render() -> [H, W, 3] uint8`.

A renderer that fails can take the whole process down (MuJoCo's `mju_error` exits without a Python exception), so
`probe_render` first renders one frame in a child process; only an env that passed it is rendered in this one.
MP4 files are written by the ffmpeg that `imageio-ffmpeg` bundles, frame by frame, so a long episode never sits in
memory; without `imageio-ffmpeg`, a GIF is written with Pillow instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

PROBE_TIMEOUT_S = 120.0
FFMPEG_TIMEOUT_S = 60.0
TB_GIF_MAX_SIDE = 200  # the TensorBoard GIF is a preview: frames are strided down to at most this many pixels
TB_GIF_MAX_FRAMES = 400  # and every other frame is dropped while there are more than this


@contextlib.contextmanager
def _spawning() -> Iterator[None]:
    """Silences JAX's warning about `os.fork()` in a multithreaded process around a subprocess start: the child
    execs at once (ffmpeg, the render probe), so none of the parent's threads or locks are used in it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield


class RenderError(Exception):
    """The env cannot give frames; the message says why in a few words."""


def render_kwargs(backend: str) -> dict[str, Any]:
    """Extra env constructor kwargs that make a backend render RGB frames (`resolve_backend`'s backend names)."""
    return {"render_mode": "rgb_array"} if backend in ("envpool", "gymnasium") else {}


def frame_getter(env: Any) -> Callable[[int], np.ndarray]:
    """Returns `grab(env_id) -> [H, W, 3] uint8`, the current frame of one env of a `VecEnv`.

    Raises:
        RenderError: The backend exposes no renderer.
    """
    render = getattr(env, "render", None)
    while not callable(render) and callable(getattr(getattr(env, "env", None), "recv", None)):
        env = env.env  # a VecEnvWrapper (frame stacking, ...): the frames are the wrapped env's
        render = getattr(env, "render", None)
    if callable(render):  # a VecEnv with a renderer of its own
        return lambda i: as_rgb(render(i))
    pool = getattr(env, "_env", None)  # EnvPoolVecEnv wraps the envpool object
    if pool is not None and callable(getattr(pool, "render", None)):
        if getattr(pool, "render_mode", None) != "rgb_array":
            raise RenderError("the envpool env was built without render_mode='rgb_array'")
        return lambda i: as_rgb(pool.render(env_ids=np.array([i]))[0])
    instances = getattr(env, "envs", None)  # SerialVecEnv over BaseEnv instances
    if instances:
        targets = [getattr(e, "_env", e) for e in instances]  # GymnasiumEnv wraps the gymnasium env
        if not callable(getattr(targets[0], "render", None)):
            raise RenderError(f"{type(instances[0]).__name__} defines no render()")
        return lambda i: as_rgb(targets[i].render())
    raise RenderError(f"{type(env).__name__} exposes no renderer")


def as_rgb(frame: Any) -> np.ndarray:
    """A rendered frame as `[H, W, 3]` uint8 (grey frames are repeated, an alpha channel is dropped).

    Raises:
        RenderError: The renderer returned nothing or something that is no image.
    """
    if frame is None:
        raise RenderError("render() returned None (no rgb_array render mode?)")
    a = np.asarray(frame)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise RenderError(f"render() returned shape {a.shape}; expected [H, W, 3]")
    if a.dtype != np.uint8:
        a = np.clip(a * 255.0 if a.dtype.kind == "f" else a, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a[..., :3])


# The child loads this file on its own (not as jaxrl_dist.io.video, whose package imports JAX and orbax: seconds).
_PROBE_SOURCE = """
import importlib.util, json, sys
sys.path[:] = json.loads(sys.argv[3])  # the parent's, so custom env modules import as they do there
from jaxrl_dist.envs import make_env
spec = importlib.util.spec_from_file_location("_jaxrl_dist_video", sys.argv[2])
video = importlib.util.module_from_spec(spec)
spec.loader.exec_module(video)
env = make_env(**json.loads(sys.argv[1]))
try:
    env.reset()
    batch = env.recv(timeout=60.0)
    frame = video.frame_getter(env)(int(batch.env_ids[0]))
    print("frame", *frame.shape)
finally:
    env.close()
"""
GL_HINT = "; MuJoCo needs a headless GL context (MUJOCO_GL=egl on a GPU machine)"


def probe_render(env_args: dict[str, Any], timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Renders one frame of `make_env(**env_args)` in a child process (in a scratch folder: MuJoCo drops its error
    log, MUJOCO_LOG.TXT, in the working directory).

    Returns:
        None if a frame came back, else a one-line reason (the child's last error line).
    """
    args = {**env_args, "num_envs": 1, "batch_size": 1}
    try:
        with _spawning(), tempfile.TemporaryDirectory(prefix="jaxrl_render_probe_") as scratch:
            path = [str(Path(p).absolute()) if p else os.getcwd() for p in sys.path]
            proc = subprocess.run([sys.executable, "-c", _PROBE_SOURCE, json.dumps(args), __file__, json.dumps(path)],
                                  capture_output=True, text=True, timeout=timeout, cwd=scratch)
    except subprocess.TimeoutExpired:
        return f"rendering one frame took over {timeout:.0f} s"
    if proc.returncode == 0 and proc.stdout.startswith("frame"):
        return None
    lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    reason = lines[-1] if lines else f"the renderer exited with code {proc.returncode}"
    reason = reason if len(reason) <= 160 else reason[:157] + "..."
    return reason + (GL_HINT if "OpenGL" in reason or "MUJOCO_GL" in reason else "")


class _Mp4Sink:
    """Streams frames to an MP4 file through the ffmpeg binary of `imageio-ffmpeg` (H.264, yuv420p)."""

    def __init__(self, path: Path, fps: int, shape: tuple[int, ...]) -> None:
        import imageio_ffmpeg

        self.h, self.w = shape[0] + shape[0] % 2, shape[1] + shape[1] % 2  # yuv420p needs even sides
        self._gen = imageio_ffmpeg.write_frames(
            str(path), (self.w, self.h), fps=fps, codec="libx264", pix_fmt_in="rgb24", macro_block_size=1,
            ffmpeg_log_level="error", ffmpeg_timeout=FFMPEG_TIMEOUT_S,
            output_params=["-preset", "ultrafast"],  # half the CPU of the default preset, files ~20% larger
        )  # fmt: skip
        with _spawning():
            self._gen.send(None)

    def add(self, frame: np.ndarray) -> None:
        if frame.shape[:2] != (self.h, self.w):
            frame = np.pad(frame, ((0, self.h - frame.shape[0]), (0, self.w - frame.shape[1]), (0, 0)), mode="edge")
        self._gen.send(np.ascontiguousarray(frame))

    def close(self) -> None:
        self._gen.close()


class _GifSink:
    """Collects frames and writes an animated GIF with Pillow on close (the fallback without imageio-ffmpeg)."""

    def __init__(self, path: Path, fps: int, shape: tuple[int, ...]) -> None:
        self.path, self.fps, self.frames = path, fps, _Thumbnails(max_side=max(shape[:2]), max_frames=1 << 30)

    def add(self, frame: np.ndarray) -> None:
        self.frames.add(frame)

    def close(self) -> None:
        self.path.write_bytes(gif_bytes(self.frames.frames, self.fps))


class _Thumbnails:
    """Keeps frames strided down to `max_side` pixels; halves the frame rate whenever more than `max_frames` pile up."""

    def __init__(self, max_side: int, max_frames: int) -> None:
        self.max_side, self.max_frames = max_side, max_frames
        self.frames: list[np.ndarray] = []
        self.every, self._seen = 1, 0

    def add(self, frame: np.ndarray) -> None:
        if self._seen % self.every == 0:
            stride = max(1, -(-max(frame.shape[:2]) // self.max_side))
            self.frames.append(frame[::stride, ::stride].copy())
            if len(self.frames) > self.max_frames:
                self.frames, self.every = self.frames[::2], self.every * 2
        self._seen += 1


def gif_bytes(frames: list[np.ndarray], fps: float) -> bytes:
    """An animated, looping GIF of `[H, W, 3]` uint8 frames."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=max(20, round(1000 / fps)),
                   loop=0)
    return out.getvalue()


def video_suffix() -> str:
    """`.mp4` where imageio-ffmpeg is installed, else `.gif`."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return ".gif"
    return ".mp4"


class EpisodeVideo:
    """One episode being recorded: `add` each frame, then `close` (writes the file and the TensorBoard GIF).

    Args:
        path: the video file (its suffix picks MP4 or GIF).
        fps: frames per second.
        tb_add: called on close with (frames, fps) of a small GIF preview for TensorBoard; None for no preview.
    """

    def __init__(self, path: Path, fps: int, tb_add: Callable[[list[np.ndarray], int], None] | None = None) -> None:
        self.path, self.fps, self.tb_add = path, fps, tb_add
        self.frames = 0
        self._sink: _Mp4Sink | _GifSink | None = None
        self._thumbs = _Thumbnails(TB_GIF_MAX_SIDE, TB_GIF_MAX_FRAMES) if tb_add is not None else None

    def add(self, frame: np.ndarray) -> None:
        if self._sink is None:  # opened at the first frame, whose size fixes the video's
            self.path.parent.mkdir(parents=True, exist_ok=True)
            sink_cls = _Mp4Sink if self.path.suffix == ".mp4" else _GifSink
            self._sink = sink_cls(self.path, self.fps, frame.shape)
        self._sink.add(frame)
        if self._thumbs is not None:
            self._thumbs.add(frame)
        self.frames += 1

    def close(self) -> Path | None:
        """Finishes the file; returns its path (None if no frame was added)."""
        if self._sink is None:
            return None
        self._sink.close()
        if self.tb_add is not None and self._thumbs is not None and self._thumbs.frames:
            self.tb_add(self._thumbs.frames, max(1, round(self.fps / self._thumbs.every)))
        return self.path

    def discard(self) -> None:
        """Stops recording and deletes the partial file."""
        if self._sink is not None:
            try:
                self._sink.close()
            finally:
                self.path.unlink(missing_ok=True)
        self._sink = None


class TensorBoardVideos:
    """Animated GIFs in TensorBoard's Images tab, as tensorboardX's `add_video` writes them but without moviepy.

    Uses its own event file in the run's `tb/` folder (TensorBoard reads every event file there).
    """

    def __init__(self, logdir: Path) -> None:
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(logdir=str(logdir), filename_suffix=".videos", flush_secs=10)

    def add(self, tag: str, frames: list[np.ndarray], fps: int, step: int) -> None:
        from tensorboardX.proto.summary_pb2 import Summary

        h, w, c = frames[0].shape
        image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=gif_bytes(frames, fps))
        self._writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def count_frames(path: Path) -> int:
    """Decodes a video file (MP4 with ffmpeg, GIF with Pillow) and returns its number of frames."""
    path = Path(path)
    if path.suffix == ".gif":
        from PIL import Image

        with Image.open(path) as im:
            return int(getattr(im, "n_frames", 1))  # only multi-frame formats define n_frames
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    with _spawning():
        next(reader)  # the metadata
    return sum(1 for _ in reader)


def recorder(directory: Path, fps: int, prefix: str = "eval_", tb: TensorBoardVideos | None = None
             ) -> Callable[[int], EpisodeVideo]:
    """`start(step)` -> an `EpisodeVideo` to `directory/<prefix><step>.mp4` (or `.gif`), previewed in TensorBoard
    under the tag `eval/video` at `step` when `tb` is given."""
    suffix = video_suffix()

    def start(step: int) -> EpisodeVideo:
        tb_add = None if tb is None else (lambda frames, rate: tb.add("eval/video", frames, rate, step))
        return EpisodeVideo(Path(directory) / f"{prefix}{step}{suffix}", fps, tb_add)

    return start
