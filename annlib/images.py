"""Turning photos or scans of single handwritten characters into EMNIST-format 28x28 inputs."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

log = logging.getLogger(__name__)

SIDE = 28
PAD = 2
# Refuse images above this many pixels before decoding them (a 12-megapixel phone photo is fine).
MAX_PIXELS = 40_000_000
# Gaussian sigma in output pixels; see to_emnist for how it relates to the paper's sigma of 1.
BLUR = 0.4
# The background level is this percentile of the pixels below Otsu's threshold: above the median,
# so that paper photographed near white (noise clipped on one side) still maps to zero.
BACKGROUND_SHARE = 0.75
# Least difference in grey levels between background and ink for an image to hold a character.
MIN_CONTRAST = 24
# Ink parts lighter than this share of the heaviest part are taken for specks and ignored.
MIN_PART = 0.03
# Hysteresis levels, as shares of the blurred ink's peak, that outline the character.
LOW, HIGH = 0.06, 0.5
# Large inputs are averaged down until the character's frame is at most this many pixels across.
WORK_SIDE = 4 * SIDE


class ImageError(ValueError):
    """An image file or array that cannot be turned into an EMNIST-format input."""


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Return an image file as a 2-D uint8 grey array, the right way up, alpha laid on white.

    The size in the file's header is checked before any pixel is decoded, so a small file that
    claims a huge image (a decompression bomb) costs nothing.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path} is not a file")

    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit; the check below refuses far earlier.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageError(too_large(path, width, height, max_pixels))
                img = ImageOps.exif_transpose(img)
                return to_gray(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path} is too large to read safely ({err})") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{path} is not an image file that Pillow can read") from err
    except (OSError, ValueError, EOFError) as err:
        raise ImageError(f"{path} could not be read as an image: {err}") from err


def too_large(path: Path, width: int, height: int, max_pixels: int) -> str:
    """Return the message refusing an image above the pixel limit."""
    return (
        f"{path} is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), above the "
        f"limit of {max_pixels / 1e6:.1f} megapixels; crop or shrink it around the character"
    )


def to_gray(img: Image.Image) -> np.ndarray:
    """Return a Pillow image as 8-bit grey: colour by luma, alpha over white, 16 bits scaled."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.rint(np.asarray(img, dtype=np.float64) / 257).astype(np.uint8)
    if img.mode == "I":
        values = np.asarray(img, dtype=np.float64)
        if values.max() > 255:
            values = values / 257
        return np.rint(np.clip(values, 0, 255)).astype(np.uint8)
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if values.max() <= 1:
            values = values * 255
        return np.rint(np.clip(values, 0, 255)).astype(np.uint8)

    if "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode not in ("1", "L", "P"):
        img = img.convert("RGB")
    return np.asarray(img.convert("L"))


def otsu_threshold(hist: np.ndarray) -> int:
    """Return the level t that best splits a 256-bin histogram into <= t and > t (Otsu, 1979)."""
    p = hist / hist.sum()
    weight = np.cumsum(p)
    mean = np.cumsum(p * np.arange(len(p)))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean[-1] * weight - mean) ** 2 / (weight * (1 - weight))
    return int(np.argmax(np.nan_to_num(between, nan=-1.0, posinf=-1.0)))


def hist_level(hist: np.ndarray, q: float) -> int:
    """Return the grey level below which a share q of a histogram's pixels lie."""
    return int(np.searchsorted(np.cumsum(hist), q * hist.sum()))


def light_background(gray: np.ndarray, threshold: int) -> bool:
    """Return whether most pixels on the image's edge are above threshold (dark ink on light)."""
    edge = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    return bool(np.mean(edge > threshold) > 0.5)


def ink_box(
    mask: np.ndarray, weights: np.ndarray | None = None, seeds: np.ndarray | None = None
) -> tuple[int, int, int, int] | None:
    """Return (top, bottom, left, right), half-open, around the mask's substantial parts.

    Parts are 8-connected regions; with seeds, only regions holding a seed pixel count
    (hysteresis). Parts weighing under MIN_PART of the heaviest (by weights, else by pixel count)
    are specks and do not widen the box. None when nothing is left.
    """
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return None
    # np.bincount is many times faster than ndimage.sum_labels on a 12-megapixel image.
    flat = labels.ravel()
    mass = np.bincount(flat, None if weights is None else weights.ravel(), n + 1)[1:]
    if seeds is not None:
        mass = np.where(np.bincount(labels[seeds], minlength=n + 1)[1:] > 0, mass, 0)
    if mass.max() <= 0:
        return None

    keep = mass >= MIN_PART * mass.max()
    slices = [s for s, k in zip(ndimage.find_objects(labels), keep, strict=True) if k]
    return (
        min(s[0].start for s in slices),
        max(s[0].stop for s in slices),
        min(s[1].start for s in slices),
        max(s[1].stop for s in slices),
    )


def check_gray(gray: np.ndarray) -> None:
    """Raise ImageError unless gray is a non-empty 2-D uint8 array."""
    if not isinstance(gray, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(gray).__name__}")
    if gray.ndim != 2:
        raise ImageError(
            f"expected a 2-D grey image, got an array of shape {gray.shape}; "
            "read files with read_image, which converts colour to grey"
        )
    if gray.dtype != np.uint8:
        raise ImageError(f"expected uint8 grey levels 0..255, got dtype {gray.dtype}")
    if gray.size == 0:
        raise ImageError("the image has no pixels")


def to_emnist(gray: np.ndarray, invert: bool | None = None, blur: float = BLUR) -> np.ndarray:
    """Return a grey image of one character as an upright 28x28 uint8 EMNIST-style image.

    Cohen et al. (2017, sec. II-A) made EMNIST from NIST's 128x128 binary scans in six steps:
    Gaussian blur (sigma 1), crop to the character, centre it in a square frame keeping its
    aspect ratio, pad with a 2-pixel border, downsample to 28x28 bicubically, scale intensities
    to 0..255. All six are done here, in that order, with these differences:
    - Input is grey, not binary, and of either polarity. Dark ink on light is assumed when most
      edge pixels lie above Otsu's threshold (override with invert); it is then inverted. The
      background (75th percentile below the threshold) maps to 0 and the ink (90th percentile
      above it) to 1, clipped after the blur so that background noise averages out.
    - Sigma is given in output pixels (blur). The paper's sigma of 1 pixel at NIST's scale,
      where a character spans very roughly 40-80 pixels, is about 0.3-0.7 output pixels; a fixed
      output sigma makes a thumbnail and a 12-megapixel photo of one character come out alike.
    - The crop is the box around the blurred ink above LOW of its peak, in parts that reach
      HIGH (hysteresis), ignoring specks weighing under MIN_PART of the main part; the paper
      kept every mark in its crop, so an official image with a stray speck is framed wider.
    - The box is centred and its longer side made 24 of the 28 pixels, reading the 2-pixel
      border as output pixels: in most official images the pixels above 30 span 24 rows or columns.
    - Pillow's bicubic widens its kernel when shrinking (antialiasing). Inputs whose frame
      exceeds WORK_SIDE pixels are first averaged down by a whole factor, for speed.
    - Intensities are scaled so that the brightest pixel is 255 (bicubic undershoot clipped).

    It expects a crop holding one character on an evenly lit plain background: shadows, ruled
    lines or a second character are taken for ink and widen the frame.
    """
    check_gray(gray)
    if blur < 0:
        raise ValueError(f"blur must be at least 0, got {blur}")
    hist = np.bincount(gray.ravel(), minlength=256)
    if np.count_nonzero(hist) < 2:
        raise ImageError(f"the image seems blank: every pixel has grey level {int(gray.flat[0])}")
    threshold = otsu_threshold(hist)
    if invert is None:
        invert = light_background(gray, threshold)
        log.debug("polarity: %s ink", "dark" if invert else "light")
    if invert:
        gray, hist, threshold = 255 - gray, hist[::-1], 254 - threshold

    background = hist_level(hist[: threshold + 1], BACKGROUND_SHARE)
    ink = threshold + 1 + hist_level(hist[threshold + 1 :], 0.9)
    if ink - background < MIN_CONTRAST:
        raise ImageError(
            f"the image seems blank: ink and background differ by only {ink - background} grey "
            f"levels (at least {MIN_CONTRAST} needed)"
        )

    box = ink_box(gray > threshold)
    if box is None:
        raise ImageError("the image seems blank: no ink found")
    work, scale = working_crop(gray, box)
    # Clipping after the blur, not before, lets background noise average out to zero.
    ink_map = (work - background) / (ink - background)
    frame = frame_side(box) / scale
    blurred = ndimage.gaussian_filter(ink_map, blur * frame / SIDE, mode="constant")
    blurred = np.clip(blurred, 0, 1)

    peak = blurred.max()
    box = ink_box(blurred > LOW * peak, weights=blurred, seeds=blurred > HIGH * peak)
    if box is None:
        raise ImageError("the image seems blank: no ink found after blurring")
    return resample(blurred, box)


def frame_side(box: tuple[int, int, int, int]) -> float:
    """Return the side of the square frame around a box: its longer side plus the border."""
    top, bottom, left, right = box
    return max(bottom - top, right - left) * SIDE / (SIDE - 2 * PAD)


def working_crop(gray: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, int]:
    """Return a float crop twice the frame's size around box, averaged down if large, and factor.

    The crop is what the rest of the pipeline sees: blurring a 12-megapixel photo in full would
    cost seconds, while the 28x28 result needs only a few source pixels per output pixel.
    """
    top, bottom, left, right = box
    frame = frame_side(box)
    row, col = (top + bottom) / 2, (left + right) / 2
    r0, r1 = max(0, int(row - frame)), min(gray.shape[0], int(np.ceil(row + frame)))
    c0, c1 = max(0, int(col - frame)), min(gray.shape[1], int(np.ceil(col + frame)))
    crop = gray[r0:r1, c0:c1]

    factor = max(1, int(frame // WORK_SIDE))
    if factor > 1:
        crop = np.asarray(Image.fromarray(crop).reduce(factor))
    return crop.astype(np.float32), factor


def resample(ink: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Return the square frame around box, centred, as 28x28 uint8 with its peak at 255."""
    top, bottom, left, right = box
    frame = frame_side(box)
    row, col = (top + bottom) / 2, (left + right) / 2

    margin = int(np.ceil(frame))
    padded = np.pad(ink.astype(np.float32), margin)
    half = frame / 2
    area = (col - half + margin, row - half + margin, col + half + margin, row + half + margin)
    small = Image.fromarray(padded).resize((SIDE, SIDE), Image.Resampling.BICUBIC, box=area)

    out = np.clip(np.asarray(small, dtype=np.float64), 0, None)
    return np.rint(out * (255 / out.max())).astype(np.uint8)


def load_for_model(
    paths: Iterable[str | os.PathLike], invert: bool | None = None, blur: float = BLUR
) -> np.ndarray:
    """Return image files as an upright (N, 28, 28) uint8 array for a model trained on EMNIST."""
    images = []
    for path in paths:
        try:
            images.append(to_emnist(read_image(path), invert=invert, blur=blur))
        except ImageError as err:
            message = str(err)
            if str(path) not in message:
                message = f"{path}: {message}"
            raise ImageError(message) from err
    if not images:
        return np.zeros((0, SIDE, SIDE), dtype=np.uint8)
    return np.stack(images)
