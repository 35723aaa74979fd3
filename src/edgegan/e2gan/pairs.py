"""``make_pairs``: run an editor over a folder of images for one or more concepts, resumably.

Layout of ``out``: ``<concept>/A/<stem>.png`` (the resized input), ``<concept>/B/<stem>.png`` (the edit),
``manifest.jsonl`` (one line per finished or dropped edit; rerunning skips every line already there)
and ``pairs.json`` (concept -> prompt, editor, size, seed). Seeds are ``seed + index`` per image so a
resumed run makes the same edits as an uninterrupted one. With ``similarity``, an image encoder scores
cos(input, edit) and edits below ``min_similarity`` are dropped (the edit failed or destroyed the scene).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgegan.e2gan.editors import Editor
from edgegan.errors import ConfigError
from edgegan.fileio import atomic_path, atomic_write_json

__all__ = ["concept_slug", "load_pairs_index", "make_pairs", "read_rgb"]

MANIFEST = "manifest.jsonl"
INDEX = "pairs.json"
Similarity = Callable[[np.ndarray, np.ndarray], float]


def concept_slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        raise ConfigError(f"concept name {name!r} has no letters or digits")
    return slug


def read_rgb(path: str | os.PathLike[str], size: int | None) -> np.ndarray:
    """An image as uint8 RGB, centre-cropped to a square and resized to ``size`` (None: as is)."""
    from edgegan.data.images import load_image

    t = load_image(path)  # [3, H, W] in [-1, 1]; raises ImageLoadError for bad files
    arr = ((t.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    if size is None:
        return arr
    h, w = arr.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(arr[top : top + s, left : left + s])
    return np.asarray(crop.resize((size, size), Image.BICUBIC))


def _save_png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def _done(out: Path) -> set[tuple[str, str]]:
    manifest = out / MANIFEST
    if not manifest.is_file():
        return set()
    done = set()
    for line in manifest.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash: that edit is simply redone
        done.add((rec["concept"], rec["stem"]))
    return done


def make_pairs(
    images: Sequence[str | os.PathLike[str]],
    concepts: dict[str, tuple[Editor, str]],
    out: str | os.PathLike[str],
    *,
    size: int = 256,
    seed: int = 0,
    similarity: Similarity | None = None,
    min_similarity: float = 0.5,
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Edit every image for every concept (``{name: (editor, prompt)}``) into ``out``; resumable.

    Editors with ``edit_batch`` (the diffusion ones) get ``batch_size`` images at a time.
    Returns ``{"pairs": {concept: n_kept}, "dropped": {concept: n}, "skipped": n_already_done}``."""
    paths = [Path(p) for p in images]
    if not paths:
        raise ConfigError("no input images")
    if not concepts:
        raise ConfigError("no concepts to edit")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    slugs = {name: concept_slug(name) for name in concepts}
    index_path = out / INDEX
    index = json.loads(index_path.read_text()) if index_path.is_file() else {"size": size, "seed": seed, "concepts": {}}
    if index.get("size") != size or index.get("seed") != seed:
        raise ConfigError(
            f"{out} holds pairs made at size {index.get('size')} / seed {index.get('seed')}; use a new folder"
        )
    for name, (editor, prompt) in concepts.items():
        index["concepts"][slugs[name]] = {"name": name, "prompt": prompt, "editor": editor.name}
    atomic_write_json(index_path, index)
    done = _done(out)
    kept = {slugs[n]: 0 for n in concepts}
    dropped = {slugs[n]: 0 for n in concepts}
    skipped = 0
    total = len(paths) * len(concepts)
    step = 0
    with open(out / MANIFEST, "a") as manifest:
        for name, (editor, prompt) in concepts.items():
            slug = slugs[name]
            todo = [(i, p) for i, p in enumerate(paths) if (slug, p.stem) not in done]
            skipped += len(paths) - len(todo)
            step += len(paths) - len(todo)
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                sources = [read_rgb(p, size) for _, p in chunk]
                seeds = [seed + i for i, _ in chunk]
                if len(chunk) > 1 and hasattr(editor, "edit_batch"):  # diffusion pipelines batch on the GPU
                    edits = editor.edit_batch(sources, [prompt] * len(chunk), seeds)
                else:
                    edits = [editor(src, prompt, sd) for src, sd in zip(sources, seeds, strict=True)]
                for (_, path), source, edited, sd in zip(chunk, sources, edits, seeds, strict=True):
                    step += 1
                    rec: dict[str, Any] = {"concept": slug, "stem": path.stem, "source": str(path), "seed": sd}
                    score = similarity(source, edited) if similarity is not None else None
                    if score is not None:
                        rec["similarity"] = float(score)
                    if score is not None and score < min_similarity:
                        rec["dropped"] = True
                        dropped[slug] += 1
                    else:
                        _save_png(source, out / slug / "A" / f"{path.stem}.png")
                        _save_png(edited, out / slug / "B" / f"{path.stem}.png")
                        kept[slug] += 1
                    manifest.write(json.dumps(rec) + "\n")
                    manifest.flush()
                    if progress is not None:
                        progress(step, total)
    return {"pairs": kept, "dropped": dropped, "skipped": skipped}


def load_pairs_index(out: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(out) / INDEX
    if not path.is_file():
        raise ConfigError(f"{out} is not a pairs folder ({INDEX} is missing); run `edgegan e2gan make-pairs` first")
    return json.loads(path.read_text())
