"""Where the evaluation's own estimators are cached, and the keys that name them.

An estimator trained on synthetic_faces (fsjax.eval.estimators) is stored in

  CACHE/eval/<kind>-<key>/

CACHE = `cache_dir` argument, else $FSJAX_CACHE, else ~/.cache/fsjax. The key is a hash of
the estimator's config and of the fingerprint of the dataset it trains on (`fingerprint`:
TFDS name, version and the byte size and length of every split as prepared on disk), so a
changed config or a rebuilt, different dataset makes a new estimator instead of reusing a
stale one.
"""

import hashlib
import json
import os
from typing import Any, Mapping, Optional

ENV_VAR = 'FSJAX_CACHE'
DEFAULT_CACHE = os.path.join('~', '.cache', 'fsjax')
# Bumped when the cached estimators' file format or training code changes meaning.
FORMAT_VERSION = 1


def cache_root(cache_dir: str = '') -> str:
  """The cache folder: cache_dir, else $FSJAX_CACHE, else ~/.cache/fsjax (not created)."""
  return os.path.abspath(os.path.expanduser(
      cache_dir or os.environ.get(ENV_VAR) or DEFAULT_CACHE))


def fingerprint(name: str, data_dir: str = '') -> dict:
  """What identifies a prepared TFDS dataset's content (builds fsjax datasets if missing).

  Returns:
    {'name': 'synthetic_faces/64/1.0.0', 'splits': {split: [num_bytes, [shard lengths]]}}.
  """
  from fsjax.data import build  # pylint: disable=g-import-not-at-top
  builder = build.ensure_dataset(name, data_dir or None)
  splits = {k: [int(v.num_bytes), [int(n) for n in v.shard_lengths]]
            for k, v in sorted(builder.info.splits.items())}
  return {'name': builder.info.full_name, 'splits': splits}


def key(*parts: Any) -> str:
  """16 hex digits of the SHA-256 of the parts as canonical JSON (plus FORMAT_VERSION)."""
  text = json.dumps([FORMAT_VERSION, *parts], sort_keys=True, default=str)
  return hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]


def entry(kind: str, config: Mapping[str, Any], dataset: Mapping[str, Any],
          cache_dir: str = '') -> str:
  """CACHE/eval/<kind>-<key(config, dataset)>: the folder of one cached estimator."""
  return os.path.join(cache_root(cache_dir), 'eval', f'{kind}-{key(dict(config), dict(dataset))}')


def read_json(path: str) -> Optional[dict]:
  """The JSON object at path, or None when it is missing."""
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)
