"""Reads any photo a user may supply as uint8 RGB, or says clearly why it cannot.

Shared by `fsjax align`, the aligned_faces dataset builder and the swap code, so
all of them convert (and reject) the same files the same way:

- grayscale (L, 1, I;16, I, F), palette, CMYK and YCbCr images (any mode Pillow can
  convert) are converted to RGB; 16-bit images keep their high byte (value // 256, what Pillow
  itself does for 16-bit RGB PNGs);
- RGBA / LA / palette-with-transparency images are composited over white
  (what a viewer shows; a fully opaque alpha channel leaves the pixels unchanged);
- the EXIF orientation tag is applied, so the array is upright as a viewer shows it;
- multi-frame files (GIF, TIFF) give their first frame;
- zero-byte, truncated, non-image and decompression-bomb files raise ValueError
  whose message starts with a short reason ('empty file', 'truncated image',
  'not an image', 'image too large'), which reports can count by;
- one pixel cap for every command (swap, align, build): `pixel_cap()`, 100 Mpx unless the
  environment variable FSJAX_MAX_PIXELS says otherwise, checked from the header before
  anything is decoded (a 17 KB 12000x12000 PNG would otherwise take 1.8 GB of memory).
"""

import io
import os
import warnings
from typing import BinaryIO, Optional, Union

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError

PathOrData = Union[str, os.PathLike, bytes, BinaryIO]

# Reasons (the first words of the ValueError messages), for reports.
EMPTY = 'empty file'
TRUNCATED = 'truncated image'
NOT_AN_IMAGE = 'not an image'
TOO_LARGE = 'image too large'
UNSUPPORTED = 'unsupported image mode'
REASONS = (EMPTY, TRUNCATED, NOT_AN_IMAGE, TOO_LARGE, UNSUPPORTED)

MAX_PIXELS_ENV = 'FSJAX_MAX_PIXELS'
DEFAULT_MAX_PIXELS = 100_000_000


def pixel_cap() -> int:
  """The largest image (width x height) fsjax decodes: $FSJAX_MAX_PIXELS, default 100 Mpx."""
  value = os.environ.get(MAX_PIXELS_ENV, '')
  try:
    return int(value) if value else DEFAULT_MAX_PIXELS
  except ValueError:
    raise ValueError(f'{MAX_PIXELS_ENV}={value!r} is not a whole number of pixels') from None


def error_reason(error: BaseException) -> str:
  """Short reason for a load_rgb error: one of REASONS, 'missing file' or 'unreadable'."""
  if isinstance(error, FileNotFoundError):
    return 'missing file'
  message = str(error)
  for reason in REASONS:
    if message.startswith(reason):
      return reason
  return 'unreadable'


def _open(source: PathOrData, name: str) -> Image.Image:
  if isinstance(source, (bytes, bytearray, memoryview)):
    data = bytes(source)
    if not data:
      raise ValueError(f'{EMPTY}: {name}')
    stream = io.BytesIO(data)
  elif isinstance(source, (str, os.PathLike)):
    if os.path.getsize(source) == 0:  # Raises FileNotFoundError when missing.
      raise ValueError(f'{EMPTY}: {name}')
    stream = source
  else:
    stream = source
  try:
    with warnings.catch_warnings():
      # Pillow warns from 89 Mpx; load_rgb checks fsjax's cap (pixel_cap) instead.
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      return Image.open(stream)
  except UnidentifiedImageError as e:
    raise ValueError(f'{NOT_AN_IMAGE}: {name} (no known image format)') from e
  except Image.DecompressionBombError as e:
    raise ValueError(f'{TOO_LARGE}: {name} ({e})') from e


def _to_uint8_rgb(im: Image.Image) -> np.ndarray:
  """PIL image of any mode -> uint8 [H, W, 3]."""
  mode = im.mode
  if mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F'):
    x = np.asarray(im).astype(np.float64)
    if mode == 'F' and x.size and np.nanmax(x) <= 1.0:
      x = np.rint(x * 255.0)  # Float images in [0, 1].
    elif mode.startswith('I;16') or (x.size and x.max() > 255):
      x = np.floor(x / 256.0)  # 16-bit: the high byte, as Pillow does for 16-bit RGB.
    x = np.clip(np.nan_to_num(x), 0, 255).astype(np.uint8)
    return np.repeat(x[..., None], 3, axis=-1)
  if mode == 'P' and 'transparency' in im.info:
    im = im.convert('RGBA')
    mode = 'RGBA'
  if mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):
    im = im.convert('RGBA')
    background = Image.new('RGBA', im.size, (255, 255, 255, 255))
    im = Image.alpha_composite(background, im)
  if im.mode != 'RGB':
    im = im.convert('RGB')
  return np.array(im, dtype=np.uint8)


def load_rgb(source: PathOrData, *, max_pixels: Optional[int] = None) -> np.ndarray:
  """Loads an image file as upright RGB.

  Args:
    source: a path, the encoded bytes, or a binary file object.
    max_pixels: refuse (ValueError 'image too large') images with more pixels than
      this, read from the header before decoding; None: `pixel_cap()` (FSJAX_MAX_PIXELS,
      default 100 Mpx).

  Returns:
    uint8 [H, W, 3] RGB in [0, 255].

  Raises:
    FileNotFoundError: the path does not exist.
    ValueError: empty, truncated, non-image or too-large file; the message starts
      with the reason (see REASONS) and names the file.
  """
  name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else '<data>'
  limit = max_pixels or pixel_cap()
  im = _open(source, name)
  try:
    width, height = im.size
    if width * height > limit:
      raise ValueError(f'{TOO_LARGE}: {name} ({width}x{height} > {limit} pixels; raise '
                       f'{MAX_PIXELS_ENV} to allow it)')
    if getattr(im, 'n_frames', 1) > 1:
      im.seek(0)
    try:
      im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
      message = str(e)
      if 'truncated' in message or 'broken data stream' in message or isinstance(e, EOFError):
        raise ValueError(f'{TRUNCATED}: {name} ({message})') from e
      raise ValueError(f'{NOT_AN_IMAGE}: {name} (cannot decode: {message})') from e
    except Image.DecompressionBombError as e:
      raise ValueError(f'{TOO_LARGE}: {name} ({e})') from e
    try:
      im = ImageOps.exif_transpose(im)
    except Exception:  # pylint: disable=broad-except
      pass  # A corrupt EXIF block must not lose an otherwise fine image.
    try:
      image = _to_uint8_rgb(im)
    except (ValueError, OSError) as e:
      raise ValueError(f'{UNSUPPORTED}: {name} ({im.mode}: {e})') from e
  finally:
    im.close()
  if image.ndim != 3 or image.shape[-1] != 3 or 0 in image.shape:
    raise ValueError(f'{NOT_AN_IMAGE}: {name} (decoded to shape {image.shape})')
  return image


def save_png(path: Union[str, os.PathLike], image: np.ndarray) -> None:
  """Writes uint8 [H, W, 3] RGB (or [H, W]) as PNG (parent folders created)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, format='PNG')
