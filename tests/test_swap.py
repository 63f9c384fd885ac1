"""Export, Swapper, video and `fsjax swap` / `fsjax export` end to end on a tiny random model."""

import concurrent.futures
import json
import os
import shutil

import imageio_ffmpeg
import jax
import numpy as np
import pytest
import skimage.data
from PIL import Image

import swap_helpers
from fsjax.swap import blend
from fsjax.swap import export
from fsjax.swap import provenance
from fsjax.swap import files as swap_files
from fsjax.swap import swapper as swapper_lib
from fsjax.swap import video
from fsjax.faces import detect

# ffmpeg is started from a process that has loaded JAX: fork + exec is safe, the warning is not.
pytestmark = pytest.mark.filterwarnings('ignore:os.fork:RuntimeWarning')


@pytest.fixture(scope='session')
def tiny(tmp_path_factory):
  return swap_helpers.tiny_export(tmp_path_factory)


@pytest.fixture(scope='session')
def swapper(tiny):
  # batch_size 2: every model call pads to 1 or 2 faces, so the tests compile only two shapes.
  return swapper_lib.load_swapper(tiny[1], batch_size=2)


@pytest.fixture(scope='session')
def media(tmp_path_factory):
  """Source/target/no-face images on disk."""
  folder = tmp_path_factory.mktemp('swap_media')
  astronaut = skimage.data.astronaut()
  return {
      'source': swap_helpers.save(folder / 'source.png', swap_helpers.synthetic_source()),
      'source2': swap_helpers.save(folder / 'source2.png', swap_helpers.synthetic_source(image=1)),
      'target': swap_helpers.save(folder / 'astronaut.png', astronaut),
      'gray': swap_helpers.save(folder / 'gray.png', np.full((200, 200, 3), 128, np.uint8)),
      'astronaut': astronaut,
  }


def _leaves_equal(a, b):
  return all(jax.tree.leaves(jax.tree.map(lambda x, y: np.array_equal(x, y), a, b)))


# ----------------------------------------------------------------------------- export


def test_training_data_reads_the_config_of_a_workdir(tiny):
  # `fsjax eval --checkpoint WORKDIR` picks its protocol from the workdir's config: reading
  # the config alone (no state keys) must not trip Orbax's partial restore.
  workdir, out = tiny
  from fsjax.eval import run as eval_run  # pylint: disable=g-import-not-at-top
  from fsjax.train import checkpointing  # pylint: disable=g-import-not-at-top
  config, items = checkpointing.restore_items(workdir, 3, ())
  assert items == {} and config['dataset']['name']
  assert eval_run.training_data(workdir) == config['dataset']['name']
  assert eval_run.training_data(out) == config['dataset']['name']


def test_export_holds_ema_params_identity_and_config(tiny):
  workdir, out = tiny
  with open(os.path.join(out, export.META_FILE)) as f:
    meta = json.load(f)
  assert meta['format'] == export.FORMAT and meta['image_size'] == 64
  assert meta['alignment'] == 'ffhq' and meta['identity_crop_mode'] == 'resize'
  assert meta['model']['attr_channels'] == [4, 8, 16, 32, 64]
  assert meta['identity']['arch'] == 'tiny' and meta['source']['step'] == 3
  assert meta['fsjax_version']
  # Written atomically: no temporary sibling left.
  assert not [n for n in os.listdir(os.path.dirname(out)) if '.tmp-' in n]

  bundle = export.load_bundle(out)
  from fsjax.train import checkpointing  # pylint: disable=g-import-not-at-top
  stored = checkpointing.Checkpointer(workdir).manager.restore(3)  # the raw train state
  state = stored['state'] if 'state' in stored else stored
  ema = jax.tree.map(np.asarray, state['ema_params'])
  g = jax.tree.map(np.asarray, state['g_params'])
  assert _leaves_equal(bundle.generator_variables['params'], ema)
  assert not _leaves_equal(bundle.generator_variables['params'], g)
  assert _leaves_equal(bundle.generator_variables['batch_stats'], state['g_batch_stats'])
  from fsjax.identity import checkpoint as identity  # pylint: disable=g-import-not-at-top
  _, id_vars, _ = identity.load_identity(os.path.join(workdir, 'identity'))
  assert _leaves_equal(bundle.identity_variables, id_vars)

  # A workdir loads directly too (latest checkpoint, EMA params).
  from_workdir = export.load_bundle(workdir)
  assert _leaves_equal(from_workdir.generator_variables, bundle.generator_variables)


def test_workdir_with_random_identity_uses_the_trainers_encoder(tiny):
  """allow_random runs: export re-creates the encoder the trainer used (identity.resolve)."""
  workdir, _ = tiny
  from configs import tiny as tiny_config  # pylint: disable=g-import-not-at-top
  from fsjax.aei import trainer  # pylint: disable=g-import-not-at-top
  config = tiny_config.get_config()  # allow_random=True, no identity checkpoint
  used_in_training = trainer.setup_identity(config, workdir)
  variables, meta = export._workdir_identity(workdir, config)  # pylint: disable=protected-access
  assert meta['random'] and meta['arch'] == 'tiny' and list(meta['layers']) == [1, 1, 1, 1]
  assert _leaves_equal(variables, jax.tree.map(np.asarray, used_in_training.variables))
  # and the seed matters: another run seed gives another encoder
  config.seed += 1
  other, _ = export._workdir_identity(workdir, config)  # pylint: disable=protected-access
  assert not _leaves_equal(variables, other)


# ----------------------------------------------------------------------------- pieces


def test_face_mask_is_soft_and_zero_at_the_border():
  # A synthetic 68-point layout: an ellipse of jaw/brow points around the crop centre.
  t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
  lm = np.stack([32 + 14 * np.cos(t), 36 + 16 * np.sin(t)], axis=1)
  mask = blend.face_mask(lm, 64, erosion=0.05, blur=0.05)
  assert mask.shape == (64, 64) and mask.dtype == np.float32
  assert mask.max() == pytest.approx(1.0, abs=1e-3) and mask.min() == 0.0
  assert (mask[0] == 0).all() and (mask[-1] == 0).all()
  assert (mask[:, 0] == 0).all() and (mask[:, -1] == 0).all()
  assert ((mask > 0) & (mask < 1)).sum() > 20  # feathered edge
  hard = blend.face_mask(lm, 64, erosion=0.0, blur=0.0)
  assert ((hard > 0) & (hard < 1)).sum() < ((mask > 0) & (mask < 1)).sum()


def test_paste_changes_only_masked_pixels():
  rng = np.random.default_rng(0)
  frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
  crop = np.full((32, 32, 3), 250.0, np.float32)
  mask = np.zeros((32, 32), np.float32)
  mask[8:24, 8:24] = 1.0
  matrix = np.array([[0.5, 0.0, -20.0], [0.0, 0.5, -10.0]])  # frame -> crop, 2x upscale paste
  frame_mask = np.zeros(frame.shape[:2], np.float32)
  out = blend.paste(frame, crop, mask, matrix, frame_mask=frame_mask)
  changed = (out != frame).any(-1)
  assert changed.sum() > 500
  assert not (changed & (frame_mask == 0)).any()
  np.testing.assert_array_equal(out[frame_mask == 0], frame[frame_mask == 0])
  zero = blend.paste(frame, crop, np.zeros_like(mask), matrix)
  np.testing.assert_array_equal(zero, frame)


def test_match_color_moves_lab_statistics_to_the_target():
  rng = np.random.default_rng(1)
  target = np.clip(rng.normal([180, 120, 100], 10, (32, 32, 3)), 0, 255)
  swapped = np.clip(rng.normal([90, 140, 200], 25, (32, 32, 3)), 0, 255)
  mask = np.ones((32, 32), np.float32)
  out = blend.match_color(swapped, target, mask)
  assert np.abs(out.mean((0, 1)) - target.mean((0, 1))).max() < 8
  assert np.abs(swapped.mean((0, 1)) - target.mean((0, 1))).max() > 50


def _face(box, lm68):
  return detect.Face(box=box, landmarks68=lm68.astype(np.float32),
                     landmarks5=detect.landmarks5_from_68(lm68), score=1.0)


def test_tracker_smooths_landmark_jitter_and_keeps_faces_apart():
  rng = np.random.default_rng(0)
  t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
  base = np.stack([100 + 40 * np.cos(t), 100 + 50 * np.sin(t)], axis=1)
  other = base + [300, 0]
  tracker = video.FaceTracker(fps=25)
  raw, smooth, smooth_other = [], [], []
  for _ in range(40):
    a = base + rng.normal(0, 2.0, base.shape)
    b = other + rng.normal(0, 2.0, base.shape)
    out = tracker.update([_face((60, 50, 140, 150), a), _face((360, 50, 440, 150), b)])
    raw.append(a)
    smooth.append(out[0].landmarks68)
    smooth_other.append(out[1].landmarks68)
  raw, smooth, smooth_other = map(np.array, (raw, smooth, smooth_other))
  assert smooth[10:].std(axis=0).mean() < 0.5 * raw[10:].std(axis=0).mean()
  assert np.abs(smooth[-1] - base).mean() < 2.0  # stays on its own face
  assert np.abs(smooth_other[-1] - other).mean() < 2.0
  # A fast move is followed with little lag (One-Euro cutoff rises with speed).
  moved = [tracker.update([_face((80 + 10 * k, 50, 160 + 10 * k, 150), base + [20 + 10 * k, 0])])
           [0] for k in range(1, 6)][-1]
  assert np.abs(moved.landmarks68 - (base + [70, 0])).mean() < 10.0


def test_provenance_marks_png_jpeg_and_mp4(tmp_path):
  image = np.zeros((16, 16, 3), np.uint8)
  for name in ('a.png', 'a.jpg'):
    provenance.save_image(str(tmp_path / name), image)
    assert provenance.read_image_source_type(str(tmp_path / name)) == (
        provenance.DIGITAL_SOURCE_TYPE)
  with Image.open(tmp_path / 'a.png') as im:
    assert 'trainedAlgorithmicMedia' in im.info['XML:com.adobe.xmp']  # iTXt chunk
  with open(tmp_path / 'a.jpg', 'rb') as f:
    assert b'http://ns.adobe.com/xap/1.0/\x00' in f.read()  # APP1 XMP segment
  swap_helpers.save(tmp_path / 'plain.png', image)
  assert provenance.read_image_source_type(str(tmp_path / 'plain.png')) is None
  assert [n for n in os.listdir(tmp_path) if n.startswith('.fsjax-')] == []


# ----------------------------------------------------------------------------- Swapper


def test_swap_image_end_to_end(swapper, media, tmp_path):
  target = media['astronaut']
  result = swapper.swap(media['source'], target, return_crops=True)
  out = result.image
  assert out.shape == target.shape and out.dtype == np.uint8
  changed = (out != target).any(-1)
  assert changed.sum() > 1000  # the face was replaced
  assert not (changed & (result.mask == 0)).any()  # nothing outside the mask moved
  np.testing.assert_array_equal(out[result.mask == 0], target[result.mask == 0])
  # The mask sits on the detected face.
  x0, y0, x1, y1 = result.faces[0].box
  ys, xs = np.nonzero(result.mask)
  w, h = x1 - x0, y1 - y0
  assert xs.min() >= x0 - 0.3 * w and xs.max() <= x1 + 0.3 * w
  assert ys.min() >= y0 - 0.6 * h and ys.max() <= y1 + 0.3 * h
  assert result.target_crops.shape == (1, 64, 64, 3)
  assert result.swapped_crops.shape == (1, 64, 64, 3)
  # Default call returns the image only; PIL and array inputs give the same result.
  plain = swapper.swap(Image.open(media['source']), Image.fromarray(target))
  np.testing.assert_array_equal(plain, out)
  for name in ('out.png', 'out.jpg'):
    provenance.save_image(str(tmp_path / name), out)
    assert provenance.is_marked_synthetic(str(tmp_path / name))
    with Image.open(tmp_path / name) as im:
      assert im.size == (target.shape[1], target.shape[0])


def test_swap_all_faces_of_a_real_group_photo(swapper, media, faces_dir):
  """Three real faces (FSJAX_TEST_FACES): 'all' swaps each, only inside the masks."""
  target = swapper_lib.to_rgb(os.path.join(faces_dir, 'test_obama_and_biden.jpg'))
  detected = swapper.detect(target)
  assert len(detected) == 3
  z = swapper.identity(media['source'])
  result = swapper.swap(z, target, faces=swapper_lib.select_faces(detected, 'all'),
                        return_crops=True)
  changed = (result.image != target).any(-1)
  assert not (changed & (result.mask == 0)).any()
  for face in detected:  # every face was pasted on
    x0, y0, x1, y1 = (int(v) for v in face.box)
    assert changed[y0:y1, x0:x1].mean() > 0.3
  second = swapper_lib.select_faces(detected, 1)[0]
  assert second.area < swapper_lib.select_faces(detected, 'largest')[0].area


def test_identity_of_several_photos_is_the_renormalised_mean(swapper, media):
  z1 = swapper.identity(media['source'])
  z2 = swapper.identity(media['source2'])
  both = swapper.identity([media['source'], media['source2']])
  assert np.linalg.norm(both) == pytest.approx(1.0, abs=1e-5)
  mean = (z1 + z2) / np.linalg.norm(z1 + z2)
  np.testing.assert_allclose(both, mean, atol=1e-5)
  with pytest.raises(swapper_lib.SwapInputError, match='no face found in source'):
    swapper.identity([media['source'], media['gray']])


def test_swap_selection_errors(swapper, media):
  with pytest.raises(swapper_lib.SwapInputError, match='face index 2 out of range'):
    swapper.swap(media['source'], media['astronaut'], faces=2)
  with pytest.raises(swapper_lib.SwapInputError, match='no face found in target'):
    swapper.swap(media['source'], media['gray'])
  with pytest.raises(swapper_lib.SwapInputError, match="faces must be"):
    swapper.swap(media['source'], media['astronaut'], faces='biggest')


def test_swap_frames_passes_faceless_frames_through(swapper, media):
  face = media['astronaut'][:384, 64:448]
  blank = np.full_like(face, 90)
  z = swapper.identity(media['source'])
  out, counts = swapper.swap_frames(z, np.stack([face, blank, face]))
  assert counts == [1, 0, 1]
  np.testing.assert_array_equal(out[1], blank)
  assert (out[0] != face).any()
  np.testing.assert_array_equal(out[0], out[2])  # batched frames are swapped alike


def test_measure_swap_and_random_swapper(swapper, media):
  figures = swapper_lib.measure_swap(swapper, 2, target=media['astronaut'][:384, 64:448],
                                     source=media['source'], repeats=1)
  assert figures['batch'] == 2 and figures['image_size'] == 64
  assert figures['model_swaps_per_s'] > figures['end_to_end_swaps_per_s'] > 0
  assert figures['detect_ms_per_frame'] > 0
  from configs import tiny as tiny_config  # pylint: disable=g-import-not-at-top
  random = swapper_lib.random_swapper(tiny_config.get_config())
  assert (jax.tree.map(np.shape, random.generator_variables) ==
          jax.tree.map(np.shape, swapper.generator_variables))
  assert random.meta['alignment'] == swapper.meta['alignment']


def _video_frames():
  astronaut = skimage.data.astronaut()
  frames = [astronaut[20 + i:276 + i, 100 + 2 * i:420 + 2 * i] for i in range(10)]
  frames[5] = np.full_like(frames[5], 128)  # no face in this one
  return np.stack(frames)


def test_video_round_trip(tiny, swapper, media, tmp_path):
  frames = _video_frames()
  clip, out = str(tmp_path / 'clip.mp4'), str(tmp_path / 'swapped.mp4')
  swap_helpers.write_video(clip, frames, fps=12)
  # What `fsjax swap` runs, with the session's swapper instead of a fresh load.
  stats = swap_files.swap_files(tiny[1], [media['source']], clip, out, batch_size=5,
                                progress=False, load=lambda *a, **k: swapper)
  assert stats['frames'] == 10 and stats['frames_without_face'] == 1
  assert stats['faces_swapped'] == 9
  assert imageio_ffmpeg.count_frames_and_secs(out)[0] == 10
  info = video.read_video_info(out)
  assert (info.width, info.height, info.fps) == (320, 256, 12.0)
  kinds = swap_helpers.streams(out)
  assert any('Video: h264' in s for s in kinds) and any('Audio:' in s for s in kinds)
  assert provenance.is_marked_synthetic(out)
  assert [n for n in os.listdir(tmp_path) if n.startswith('.fsjax-')] == []
  decoded_in = np.concatenate(list(video.iter_frames(video.read_video_info(clip), 4)))
  decoded_out = np.concatenate(list(video.iter_frames(info, 4)))
  # The faceless frame is passed through (only the re-encode of a flat frame differs).
  assert np.abs(decoded_out[5].astype(int) - decoded_in[5]).max() <= 2
  # Faces were replaced in the others.
  face_region = (slice(40, 180), slice(60, 200))
  for k in (0, 9):
    diff = np.abs(decoded_out[k][face_region].astype(int) - decoded_in[k][face_region]).mean()
    assert diff > 2.0


# ----------------------------------------------------------------------------- CLI


def test_bad_arguments_fail_before_any_model_work(tiny, media, tmp_path):
  with pytest.raises(export.ExportError, match='incompatible checkpoint directory'):
    export.check_dir(str(tmp_path))  # an empty folder
  clip = str(tmp_path / 'clip.mp4')
  swap_helpers.write_video(clip, _video_frames()[:2], fps=12, audio=False)

  def never(*unused_args, **unused_kwargs):
    pytest.fail('the model must not be loaded')

  cases = [
      (dict(target=clip, output=tmp_path / 'o.png'), 'output must be .mp4'),
      (dict(output=tmp_path / 'o.mp4'), 'output must be .png, .jpg or .jpeg'),
      (dict(target=tmp_path / 'nope.jpg'), 'file not found'),
      (dict(output=tmp_path / 'no_dir' / 'o.png'), 'output folder does not exist'),
      (dict(faces='-1'), 'faces must be'),
      (dict(mask_blur=3.0), 'mask_blur must be in'),
  ]
  for overrides, message in cases:
    kwargs = dict(checkpoint=tiny[1], sources=[media['source']], target=media['target'],
                  output=tmp_path / 'o.png', progress=False, load=never)
    kwargs.update(overrides)
    kwargs['output'], kwargs['target'] = str(kwargs['output']), str(kwargs['target'])
    with pytest.raises(swap_files.USER_ERRORS, match=message):
      swap_files.swap_files(**kwargs)
    assert not os.path.exists(kwargs['output'])


def test_cli_swap_and_bad_inputs(tiny, media, tmp_path, tmp_path_factory):
  workdir, ckpt = tiny
  env = swap_helpers.cli_env(tmp_path_factory)
  (tmp_path / 'bad.jpg').write_text('not an image')
  (tmp_path / 'broken.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42' + os.urandom(2000))
  os.makedirs(tmp_path / 'empty_ckpt')
  wrong = tmp_path / 'wrong_ckpt'
  shutil.copytree(ckpt, wrong)
  meta = json.loads((wrong / export.META_FILE).read_text())
  meta['model']['id_dim'] = 32
  (wrong / export.META_FILE).write_text(json.dumps(meta))

  def swap_args(output, source=media['source'], target=media['target'], checkpoint=ckpt,
                extra=()):
    return ['swap', '--checkpoint', str(checkpoint), '--source', str(source), '--target',
            str(target), '--output', str(tmp_path / output)] + list(extra)

  bad = {
      'missing source': (swap_args('o1.png', source=tmp_path / 'nope.png'), 'file not found'),
      'unreadable source': (swap_args('o2.png', source=tmp_path / 'bad.jpg'),
                            'cannot read image'),
      'no face in source': (swap_args('o3.png', source=media['gray']),
                            'no face found in source'),
      'no face in target': (swap_args('o4.png', target=media['gray']),
                            'no face found in target'),
      'face index': (swap_args('o5.png', extra=['--faces', '3']), 'face index 3 out of range'),
      'missing checkpoint': (swap_args('o6.png', checkpoint=tmp_path / 'no_ckpt'),
                             'checkpoint directory not found'),
      'empty checkpoint': (swap_args('o7.png', checkpoint=tmp_path / 'empty_ckpt'),
                           'incompatible checkpoint directory'),
      'wrong checkpoint': (swap_args('o8.png', checkpoint=wrong), 'mis-shaped'),
      'unsupported video': (swap_args('o9.mp4', target=tmp_path / 'broken.mp4'),
                            'unsupported video'),
  }
  good = {
      'swap': swap_args('good.jpg', extra=['--mask_blur', '0.08']),
      'export exists': ['export', '--workdir', workdir, '--output', ckpt],
      'help': ['swap', '--help'],
  }
  jobs = {**{k: v[0] for k, v in bad.items()}, **good}
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    results = dict(zip(jobs, pool.map(lambda a: swap_helpers.run_cli(a, env), jobs.values())))

  for name, (args, message) in bad.items():
    result = results[name]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (name, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith('fsjax swap: error: '), (name, lines)
    assert message in lines[0], (name, lines[0])
    assert not os.path.exists(args[args.index('--output') + 1]), name
  assert [n for n in os.listdir(tmp_path) if n.startswith('.fsjax-')] == []

  result = results['swap']
  assert result.returncode == 0, result.stderr[-3000:]
  out = tmp_path / 'good.jpg'
  assert provenance.is_marked_synthetic(str(out))
  with Image.open(out) as im:
    assert im.size == (512, 512)
  result = results['export exists']
  assert result.returncode == 2 and 'output directory exists' in result.stderr
  help_text = results['help'].stdout + results['help'].stderr
  assert 'synthetic media' in help_text and 'trainedAlgorithmicMedia' in help_text
  assert '--mask_erosion' in help_text
