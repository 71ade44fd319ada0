"""The README and docs/ pages: every relative link and every ``configs/...`` path they name exists."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
CONFIG_PATH = re.compile(r"\bconfigs/[A-Za-z0-9_./-]+\.py\b")


def _anchors(page: pathlib.Path) -> set[str]:
  """GitHub's heading anchors: lower case, punctuation dropped, spaces -> '-'."""
  out = set()
  for line in page.read_text().splitlines():
    if line.startswith("#"):
      title = line.lstrip("#").strip().lower()
      out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
  return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_exist(page):
  broken = []
  for target in LINK.findall(page.read_text()):
    if re.match(r"[a-z]+://|mailto:", target):
      continue
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
      broken.append(target)
    elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
      broken.append(target)
  assert not broken, f"{page.name}: broken links {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_named_configs_exist(page):
  missing = sorted({p for p in CONFIG_PATH.findall(page.read_text()) if not (ROOT / p).exists()})
  assert not missing, f"{page.name} names config files that do not exist: {missing}"


def test_readme_is_a_front_page():
  assert (ROOT / "README.md").stat().st_size <= 11_000
