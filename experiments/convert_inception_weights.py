"""Converts pytorch-fid's FID Inception weights (``.pth``) to the ``.npz`` jaxgen loads fastest.

    python experiments/convert_inception_weights.py pt_inception-2015-12-05-6726825d.pth \
        inception_fid.npz

The ``.pth`` is read without torch and without executing pickled code; its SHA-256 must start
with ``6726825d`` (the file pytorch-fid downloads). Then use
``--config.eval.inception_weights=inception_fid.npz`` (the ``.pth`` itself works too).
"""

from __future__ import annotations

import argparse
import os

import flax.traverse_util

from jaxgen.errors import UserError, one_line_errors
from jaxgen.evaluation import inception_weights as iw


def convert(pth_path: str, npz_path: str, check_hash: bool = True) -> None:
  if not (pth_path.endswith(".pth") and os.path.isfile(pth_path)):
    raise UserError(f"{pth_path} is not a .pth file: give the path of pytorch-fid's {iw.FID_WEIGHTS_NAME}")
  sha256 = iw.sha256_of(pth_path)  # hashed and unpickled once each
  if check_hash:
    iw.check_sha256(sha256, pth_path)
  variables = iw.load_inception_variables(pth_path, check_hash=False)  # readable, names and shapes: or one line
  iw.save_npz(flax.traverse_util.flatten_dict(variables), sha256, npz_path)
  iw.load_inception_variables(npz_path, check_hash=check_hash)


@one_line_errors
def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("pth", help=f"path of {iw.FID_WEIGHTS_NAME}")
  parser.add_argument("npz", help="output .npz path")
  args = parser.parse_args()
  convert(args.pth, args.npz)
  print(f"wrote {args.npz}")


if __name__ == "__main__":
  main()
