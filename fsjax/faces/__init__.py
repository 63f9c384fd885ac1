"""Face detection (dlib) and alignment (ArcFace 5-point, FFHQ) for fsjax.

`DlibDetector().detect(image)` -> list of `Face` (largest first); `align_face(image, face,
mode, size)` -> (crop, 2x3 source->crop affine). See detect.py and align.py.
"""

from fsjax.faces.align import ALIGN_MODES
from fsjax.faces.align import align_arcface
from fsjax.faces.align import align_face
from fsjax.faces.align import align_ffhq
from fsjax.faces.align import ARCFACE_TEMPLATE_112
from fsjax.faces.align import arcface_template
from fsjax.faces.align import invert_affine
from fsjax.faces.align import similarity_transform
from fsjax.faces.align import transform_points
from fsjax.faces.detect import DlibDetector
from fsjax.faces.detect import Face
from fsjax.faces.detect import FaceDetector
from fsjax.faces.detect import landmarks5_from_68
from fsjax.data.image_io import load_rgb
