"""Writing generated videos and images: atomic, never over a file the user has unless asked."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".gif", ".webp")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class OutputExistsError(FileExistsError):
    """The output (or its sidecar) exists and overwriting was not asked for."""


def check_output_path(path: Path, suffixes: tuple[str, ...], overwrite: bool) -> None:
    """Fail early, before any generation, on an unsupported suffix or an existing file."""
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"--out must end in one of {', '.join(suffixes)} (got {path.name!r})")
    for p in (path, sidecar_path(path)):
        if p.exists() and not overwrite:
            raise OutputExistsError(f"{p} exists; pass --overwrite to replace it, or choose another --out")
    if not path.parent.exists():
        raise FileNotFoundError(f"the folder {path.parent} does not exist; create it first")


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` into a temporary file beside ``path``, then rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the output is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_uint8_frames(frames) -> np.ndarray:
    """(T, H, W, 3) uint8 from diffusers' float [0, 1] frames or a list of PIL images."""
    array = np.stack([np.asarray(f) for f in frames])
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    return array


def write_video(frames, path: Path, fps: int) -> None:
    """mp4 (H.264 through imageio-ffmpeg), or animated gif / webp (Pillow)."""
    array = to_uint8_frames(frames)
    if path.suffix.lower() == ".mp4":
        try:
            import imageio.v2 as imageio
        except ImportError as exc:
            raise RuntimeError("mp4 output needs imageio and imageio-ffmpeg: pip install 'dit-accel[video]' "
                               "(or write .gif / .webp)") from exc

        def write(tmp: Path) -> None:
            # macro_block_size=1: keep small or odd sizes as they are instead of resizing
            with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8,
                                    macro_block_size=1, pixelformat="yuv420p") as writer:
                for frame in array:
                    writer.append_data(frame)
    else:
        from PIL import Image

        def write(tmp: Path) -> None:
            images = [Image.fromarray(f) for f in array]
            images[0].save(tmp, format=path.suffix[1:].upper().replace("JPG", "JPEG"), save_all=True,
                           append_images=images[1:], duration=round(1000 / fps), loop=0)
    _atomic_write(path, write)


def write_image(image, path: Path) -> None:
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(to_uint8_frames([image])[0])
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), path.suffix[1:].upper())
    _atomic_write(path, lambda tmp: image.save(tmp, format=fmt))


def write_sidecar(path: Path, record: dict) -> None:
    text = json.dumps(record, indent=2, default=str)
    _atomic_write(sidecar_path(path), lambda tmp: tmp.write_text(text))
