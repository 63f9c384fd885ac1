"""notebooks/swap_in_colab.ipynb runs top to bottom (nbclient): its GHOST path, on tiny
random GHOST-layout files it converts itself (the session's tiny export is its fallback)."""

import os

import nbformat
from nbclient import NotebookClient
from PIL import Image

import swap_helpers
from fsjax.swap import provenance

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'notebooks',
                        'swap_in_colab.ipynb')


def test_swap_in_colab_notebook_runs(tmp_path, tmp_path_factory, monkeypatch):
  _, export_dir = swap_helpers.tiny_export(tmp_path_factory)
  out_dir = tmp_path / 'outputs'
  # The kernel inherits this environment: the same compilation cache as the CLI tests.
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR',
                     swap_helpers.cli_env(tmp_path_factory)['JAX_COMPILATION_CACHE_DIR'])
  monkeypatch.setenv('FSJAX_EXPORT', export_dir)
  ghost_dir = tmp_path / 'ghost'
  ghost_dir.mkdir()
  swap_helpers.tiny_ghost_files(str(ghost_dir))
  monkeypatch.setenv('FSJAX_GHOST_DIR', str(ghost_dir))
  monkeypatch.setenv('FSJAX_OUTPUT_DIR', str(out_dir))
  monkeypatch.setenv('FSJAX_VIDEO_FRAMES', '2')
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=600, kernel_name='python3',
                 resources={'metadata': {'path': str(tmp_path)}}).execute()

  outputs = [o for cell in nb.cells if cell.cell_type == 'code' for o in cell.get('outputs', [])]
  assert not [o for o in outputs if o.output_type == 'error']
  images = [o for o in outputs if o.output_type == 'display_data' and 'image/png' in o.data]
  assert len(images) >= 4  # source | target | result, the crops, AEI alone, the video frame
  text = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
  assert "'frames': 2" in text and 'synthetic-media mark in the MP4: True' in text
  assert 'model: GHOST G_unet_2blocks' in text and "alignment 'ghost224'" in text
  assert 'this export has no HEAR-Net' in text  # the AEI-Net-alone comparison cell ran
  swap_png = out_dir / 'swap.png'
  assert provenance.is_marked_synthetic(str(swap_png))
  with Image.open(swap_png) as im:
    assert im.size == (512, 512)
  assert provenance.is_marked_synthetic(str(out_dir / 'swap.mp4'))
