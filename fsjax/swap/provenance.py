"""Marks swapped images and videos as synthetic media (IPTC DigitalSourceType in XMP / MP4 tags).

Every image or video that fsjax writes from a face swap carries the IPTC digital source type
`trainedAlgorithmicMedia`:
- PNG: an iTXt chunk with keyword 'XML:com.adobe.xmp' holding an XMP packet;
- JPEG: an APP1 XMP segment (Pillow's `xmp=` save argument);
- MP4: the 'comment' and 'description' tags (written by ffmpeg's `-metadata`).
The readers below let tests and users check the mark.
"""

import os
import re
import subprocess
import tempfile
from typing import Optional

import numpy as np
from PIL import Image
from PIL import PngImagePlugin

from fsjax.data import paths

DIGITAL_SOURCE_TYPE = (
    'http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia')
DESCRIPTION = 'Synthetic media: face swapped by fsjax (FaceShifter AEI-Net).'
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')

_XMP_TEMPLATE = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    Iptc4xmpExt:DigitalSourceType="{source_type}"
    xmp:CreatorTool="{tool}">
   <dc:description>
    <rdf:Alt>
     <rdf:li xml:lang="x-default">{description}</rdf:li>
    </rdf:Alt>
   </dc:description>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""

_SOURCE_TYPE_RE = re.compile(r'DigitalSourceType(?:="|>)([^"<]+)')


def _tool() -> str:
  from fsjax import __version__  # pylint: disable=g-import-not-at-top
  return f'fsjax {__version__}'


def xmp_packet(description: str = DESCRIPTION) -> str:
  """An XMP packet declaring IPTC DigitalSourceType trainedAlgorithmicMedia."""
  return _XMP_TEMPLATE.format(source_type=DIGITAL_SOURCE_TYPE, tool=_tool(),
                              description=description)


def video_metadata_args(description: str = DESCRIPTION) -> list[str]:
  """ffmpeg output arguments that tag an MP4 as synthetic (comment + description)."""
  text = f'{description} IPTC DigitalSourceType: {DIGITAL_SOURCE_TYPE}'
  return ['-metadata', f'comment={text}', '-metadata', f'description={text}']


def save_image(path: str, image: np.ndarray, *, quality: int = 95) -> None:
  """Writes a marked PNG or JPEG (chosen by the extension), atomically.

  Args:
    path: output file ending in .png, .jpg or .jpeg.
    image: uint8 [H, W, 3] RGB.
    quality: JPEG quality.

  The file is written to a temporary name in the same folder and renamed when complete.
  """
  ext = os.path.splitext(path)[1].lower()
  if ext not in IMAGE_EXTENSIONS:
    raise ValueError(f'unsupported image extension {ext!r} (use .png, .jpg or .jpeg)')
  pil = Image.fromarray(np.asarray(image, np.uint8))
  xmp = xmp_packet()
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix='.fsjax-', suffix=ext, dir=folder)
  try:
    paths.new_file(tmp)  # mkstemp makes it 0600; the output gets the umask's permissions
    with os.fdopen(fd, 'wb') as f:
      if ext == '.png':
        info = PngImagePlugin.PngInfo()
        info.add_itxt('XML:com.adobe.xmp', xmp)
        pil.save(f, format='PNG', pnginfo=info)
      else:
        pil.save(f, format='JPEG', quality=quality, xmp=xmp.encode('utf-8'))
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def read_image_source_type(path: str) -> Optional[str]:
  """The IPTC DigitalSourceType in a PNG/JPEG's XMP, or None when there is none."""
  with Image.open(path) as im:
    xmp = im.info.get('xmp') or im.info.get('XML:com.adobe.xmp')
  if xmp is None:
    return None
  if isinstance(xmp, bytes):
    xmp = xmp.decode('utf-8', 'replace')
  match = _SOURCE_TYPE_RE.search(xmp)
  return match.group(1) if match else None


def read_video_tags(path: str) -> dict[str, str]:
  """Container-level metadata tags of a video (lower-case keys), read with imageio-ffmpeg."""
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
  cmd = [imageio_ffmpeg.get_ffmpeg_exe(), '-v', 'error', '-i', path, '-f', 'ffmetadata', '-']
  out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
  tags = {}
  for line in out.splitlines():
    if line.startswith('['):
      break  # stream/chapter sections follow the global ones
    if '=' in line and not line.startswith(';'):
      key, value = line.split('=', 1)
      tags[key.lower()] = value
  return tags


def is_marked_synthetic(path: str) -> bool:
  """Whether an image or video written by fsjax carries the synthetic-media mark."""
  if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
    return read_image_source_type(path) == DIGITAL_SOURCE_TYPE
  return DIGITAL_SOURCE_TYPE in read_video_tags(path).get('comment', '')
