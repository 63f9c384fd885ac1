"""Test media for the evaluation protocols: short face videos from the synthetic renderer
(and from real photos), an FF++-shaped folder, tiny synthetic_faces configs."""

import json
import os
import shutil

import numpy as np

from tests import swap_helpers

FRAME_SIZE = 200  # px: dlib finds these faces; smaller frames would be upsampled more


def synthetic_clip(identity: int, num_frames: int, size: int = FRAME_SIZE) -> np.ndarray:
  """uint8 [N, S, S, 3]: identity `identity` of the synthetic train split turning its head
  (yaw -10..10 degrees) and smiling more frame by frame, plain background, no occluder."""
  from fsjax.data import synthetic_faces as sf  # pylint: disable=g-import-not-at-top
  ident = sf.sample_identity(sf.identity_rng(0, 'train', identity))
  base = sf.sample_attributes(sf.attribute_rng(0, 'train', identity, 0))
  atts = []
  for t in np.linspace(0.0, 1.0, num_frames):
    atts.append(sf.replace_fields(base, sf.ATTRIBUTE_FIELDS, yaw=np.radians(-10 + 20 * t),
                                  pitch=0.0, roll=0.0, smile=0.8 * t, mouth_open=0.0,
                                  blink=0.0, occluder=0, bg_pattern=0.0))
  return sf.render_batch(np.repeat(ident[None], num_frames, 0), np.stack(atts), size)


def photo_clip(path: str, num_frames: int, width: int = 320) -> np.ndarray:
  """uint8 [N, H, W, 3]: a real photo, resized to `width`, drifting right by 1 px a frame."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from fsjax.data import image_io  # pylint: disable=g-import-not-at-top
  image = image_io.load_rgb(path)
  height = int(round(image.shape[0] * width / image.shape[1])) // 2 * 2
  image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
  return np.stack([np.roll(image, k, axis=1) for k in range(num_frames)])


def write_clip(path: str, frames: np.ndarray, fps: float = 10.0) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  swap_helpers.write_video(path, frames, fps, audio=False)
  return path


def make_ffpp(root: str, clips: dict, pairs: list, compression: str = 'c23') -> str:
  """An FF++-shaped folder: originals `clips` {id: frames, or bytes written as the file
  (an undecodable video)}, splits/test.json = pairs. Returns the originals' folder."""
  videos = os.path.join(root, 'original_sequences', 'youtube', compression, 'videos')
  os.makedirs(videos, exist_ok=True)
  for vid, frames in clips.items():
    path = os.path.join(videos, f'{vid}.mp4')
    if isinstance(frames, bytes):
      with open(path, 'wb') as f:
        f.write(frames)
    else:
      write_clip(path, frames)
  os.makedirs(os.path.join(root, 'splits'), exist_ok=True)
  with open(os.path.join(root, 'splits', 'test.json'), 'w') as f:
    json.dump([list(p) for p in pairs], f)
  return videos


def copy_as_swap(videos: str, swaps: str, original: str, name: str) -> None:
  """swaps/<name>.mp4 = a copy of original video `original` (a swap with known answers)."""
  os.makedirs(swaps, exist_ok=True)
  shutil.copy(os.path.join(videos, f'{original}.mp4'), os.path.join(swaps, f'{name}.mp4'))


def tiny_synthetic_data(data_dir: str, size: int = 64) -> dict:
  """Builds tiny synthetic_faces configs in data_dir; returns their TFDS names:
  {'faces': 'synthetic_faces/tiny<S>', 'faces112': 'synthetic_faces/tiny112', 'pairs':
  'synthetic_faces/tinypairs<S>'}."""
  # pylint: disable=g-import-not-at-top
  from fsjax.data import build
  from tfds_builders.synthetic_faces import synthetic_faces_dataset_builder as sfb
  configs = {
      'faces': sfb.SyntheticFacesConfig(name=f'tiny{size}', size=size, train_identities=24,
                                        test_identities=6, images_per_identity=4,
                                        num_workers=1),
      'faces112': sfb.SyntheticFacesConfig(name='tiny112', size=112, train_identities=12,
                                           test_identities=6, images_per_identity=3,
                                           num_workers=1),
      'pairs': sfb.SyntheticFacesConfig(name=f'tinypairs{size}', size=size, pairs=True,
                                        test_identities=6, train_pairs=0, test_pairs=12,
                                        num_workers=1),
  }
  names = {}
  for key, config in configs.items():
    build.build_dataset('synthetic_faces', data_dir=data_dir, config=config, verbose=False)
    names[key] = f'synthetic_faces/{config.name}'
  return names
