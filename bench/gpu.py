"""GPU benchmark, prepared for a lent GPU host (one H100/H200): prints one JSON object, in under 10 minutes.

What it measures, each against a baseline in the same run:

* **dense search at corpus scale** — ``--n`` (default 10 M) clustered random unit vectors of ``--dim``
  (768: ruri-v3 / bge-m3 base size) on the GPU:
  - FAISS GPU IVF-PQ: training time, add time (vectors/s), search latency and QPS at ``nprobe`` 16/64, and
    recall@10 against exact search — when a FAISS build with GPUs is importable;
  - exact (flat) search QPS on the GPU at batch 1/64/1024: FAISS ``GpuIndexFlatIP`` when importable, else
    the same computation in torch (fp16 matmul + top-k), labelled as such;
* **embedding throughput** with sentence-transformers models initialised at random with the shapes of
  ``cl-nagoya/ruri-v3-310m`` (ModernBERT, 768 × 25 layers) and ``intfloat/multilingual-e5-large``
  (XLM-RoBERTa, 1024 × 24 layers): no weights can be downloaded there, and throughput depends on shape,
  not on weight values. A character-level tokenizer stands in for the real one (~1 token per Japanese
  character, close to the real tokenizers' count); passages are ~300 characters, as ragmed's chunks. The
  projection to MedCorp's 54 M snippets is printed beside.

The lent machine has torch, transformers and sentence-transformers but no FAISS, and a faiss-cuda wheel
(106 MB) is over the 64 MB a call may carry; the script measures what it can and says what it skipped.
``--smoke`` runs everything at toy sizes on the CPU (the test suite does, so the script works before any
device time is spent on it).

    python bench/gpu.py                      # on the GPU host
    python bench/gpu.py --smoke              # anywhere, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MEDCORP_SNIPPETS = 54_000_000
#: The real models' shapes (from their published configs); weights are random here.
MODEL_SHAPES: dict[str, dict[str, Any]] = {
    "ruri-v3-310m-shape": {
        "model_type": "modernbert",
        "hidden_size": 768,
        "num_hidden_layers": 25,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "vocab_size": 102400,
        "max_position_embeddings": 8192,
    },
    "multilingual-e5-large-shape": {
        "model_type": "xlm-roberta",
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "vocab_size": 250002,
        "max_position_embeddings": 514,
    },
}
SMOKE_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


def now() -> float:
    return time.perf_counter()


def sync(torch: Any) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def clustered_vectors(torch: Any, n: int, dim: int, device: str, seed: int = 0, centers: int = 4096) -> Any:
    """Unit vectors around random centres (real embeddings cluster; uniform noise would flatter IVF)."""
    g = torch.Generator(device=device).manual_seed(seed)
    c = torch.nn.functional.normalize(torch.randn(centers, dim, generator=g, device=device), dim=1)
    out = torch.empty(n, dim, dtype=torch.float16, device=device)
    step = 1_000_000
    for start in range(0, n, step):
        m = min(step, n - start)
        idx = torch.randint(0, centers, (m,), generator=g, device=device)
        v = (
            c[idx]
            + 0.35 * torch.randn(m, dim, generator=g, device=device) / math.sqrt(dim) * math.sqrt(dim) / 6
        )
        out[start : start + m] = torch.nn.functional.normalize(v, dim=1).half()
    return out


def torch_flat_search(torch: Any, base: Any, queries: Any, k: int, chunk: int = 2_000_000) -> tuple[Any, Any]:
    """Exact inner-product top-k over ``base`` (fp16) in chunks: what a flat GPU index computes."""
    best_s = best_i = None
    for start in range(0, base.shape[0], chunk):
        scores = queries.half() @ base[start : start + chunk].T
        s, i = torch.topk(scores.float(), k, dim=1)
        i = i + start
        if best_s is None:
            best_s, best_i = s, i
        else:
            cat_s, cat_i = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
            best_s, pos = torch.topk(cat_s, k, dim=1)
            best_i = torch.gather(cat_i, 1, pos)
    return best_s, best_i


def bench_dense(args: argparse.Namespace, torch: Any, device: str, deadline: float) -> dict[str, Any]:
    out: dict[str, Any] = {"n": args.n, "dim": args.dim}
    t = now()
    base = clustered_vectors(torch, args.n, args.dim, device)
    sync(torch)
    out["generate_s"] = round(now() - t, 2)
    queries = clustered_vectors(torch, args.queries, args.dim, device, seed=1).float()
    t = now()
    _, truth = torch_flat_search(torch, base, queries, 10)
    sync(torch)
    out["exact_truth_s"] = round(now() - t, 2)
    flat: dict[str, Any] = {"engine": "torch fp16 matmul + top-k (no FAISS GPU build here)"}
    for batch in (1, 64, 1024):
        if now() > deadline:
            break
        q = queries[:batch]
        torch_flat_search(torch, base, q, 10)
        sync(torch)
        reps = max(1, min(20, 2048 // batch))
        t = now()
        for _ in range(reps):
            torch_flat_search(torch, base, q, 10)
        sync(torch)
        took = (now() - t) / reps
        flat[f"batch_{batch}"] = {"ms": round(took * 1000, 3), "qps": round(batch / took, 1)}
    out["flat"] = flat
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is None or not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        out["ivfpq"] = {"skipped": "no FAISS build with GPU support is importable here"}
        return out
    res = faiss.StandardGpuResources()
    host = base.float().cpu().numpy()
    qs = queries.cpu().numpy()
    flat_index = faiss.GpuIndexFlatIP(res, args.dim)
    flat_index.add(host)
    out["flat"] = {"engine": "faiss GpuIndexFlatIP (fp32)"}
    for batch in (1, 64, 1024):
        flat_index.search(qs[:batch], 10)
        reps = max(1, min(20, 2048 // batch))
        t = now()
        for _ in range(reps):
            flat_index.search(qs[:batch], 10)
        took = (now() - t) / reps
        out["flat"][f"batch_{batch}"] = {"ms": round(took * 1000, 3), "qps": round(batch / took, 1)}
    del flat_index
    nlist = args.nlist or int(4 * math.sqrt(args.n))
    m = args.pq_m
    cfg = faiss.GpuIndexIVFPQConfig()
    cfg.useFloat16LookupTables = True
    index = faiss.GpuIndexIVFPQ(res, args.dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT, cfg)
    train = host[: min(len(host), max(nlist * 40, 100_000))]
    t = now()
    index.train(train)
    out_ivf: dict[str, Any] = {
        "nlist": nlist,
        "pq_m": m,
        "train_s": round(now() - t, 2),
        "train_n": len(train),
    }
    t = now()
    for start in range(0, len(host), 1_000_000):
        index.add(host[start : start + 1_000_000])
    add_s = now() - t
    out_ivf.update(add_s=round(add_s, 2), add_per_s=round(len(host) / add_s))
    truth_np = truth.cpu().numpy()
    for nprobe in (16, 64):
        index.nprobe = nprobe
        t = now()
        _, ids = index.search(qs, 10)
        took = now() - t
        recall = sum(len(set(a) & set(b)) for a, b in zip(ids, truth_np, strict=True)) / (10 * len(qs))
        out_ivf[f"nprobe_{nprobe}"] = {"qps": round(len(qs) / took, 1), "recall_at_10": round(recall, 4)}
    out["ivfpq"] = out_ivf
    return out


def char_tokenizer(folder: Path, texts: list[str], vocab_size: int) -> None:
    """A character-level fast tokenizer saved as a Hugging Face folder (stands in for the real one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted({ch for t in texts for ch in t})[: max(0, vocab_size - len(specials))]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    fast.save_pretrained(str(folder))


def passages(n: int, seed: int = 0) -> list[str]:
    """~300-character Japanese clinical-style passages (invented, templated)."""
    import random

    rng = random.Random(seed)
    terms = ["急性心筋梗塞", "敗血症", "急性膵炎", "2型糖尿病", "高血圧症", "市中肺炎", "心不全", "脳梗塞"]
    verbs = ["の初期治療では", "の診断には", "の重症度は", "の合併症として", "の予後因子は"]
    tails = ["を評価する。", "が推奨される。", "を考慮する。", "に注意する。", "が重要である。"]
    out = []
    for _ in range(n):
        text = ""
        while len(text) < 300:
            text += rng.choice(terms) + rng.choice(verbs) + rng.choice(terms) + rng.choice(tails)
        out.append(text[:300])
    return out


def bench_embedding(args: argparse.Namespace, torch: Any, device: str, deadline: float) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoConfig, AutoModel

    texts = passages(args.texts)
    out: dict[str, Any] = {"texts": len(texts), "chars_per_text": 300}
    for name, shape in MODEL_SHAPES.items():
        if now() > deadline:
            out[name] = {"skipped": "time budget spent"}
            continue
        shape = dict(shape)
        model_type = shape.pop("model_type")
        if args.smoke:
            shape.update(SMOKE_SHAPE)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            config = AutoConfig.for_model(model_type, **shape)
            torch.manual_seed(0)
            AutoModel.from_config(config).save_pretrained(str(folder))
            char_tokenizer(folder, texts, shape["vocab_size"])
            word = models.Transformer(str(folder), max_seq_length=512)
            pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
            st = SentenceTransformer(modules=[word, pool], device=device)
            if device == "cuda":
                st.half()
            st.encode(texts[:64], batch_size=64, show_progress_bar=False)
            sync(torch)
            t = now()
            st.encode(texts, batch_size=args.batch, show_progress_bar=False, convert_to_numpy=True)
            sync(torch)
            took = now() - t
            rate = len(texts) / took
            out[name] = {
                "shape": {"model_type": model_type, **shape},
                "texts_per_s": round(rate, 1),
                "batch_size": args.batch,
                "dtype": "fp16" if device == "cuda" else "fp32",
                "medcorp_54m_hours": round(MEDCORP_SNIPPETS / rate / 3600, 2),
            }
            del st
            if device == "cuda":
                torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="vectors in the dense benchmark")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--nlist", type=int, default=0, help="IVF lists (default 4·√n)")
    parser.add_argument("--pq-m", type=int, default=64, help="PQ sub-quantizers")
    parser.add_argument("--texts", type=int, default=20_000, help="passages in the embedding benchmark")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--budget-s", type=float, default=540, help="stop starting new parts after this")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on any device (checks the script)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.dim, args.queries, args.texts, args.batch, args.nlist, args.pq_m = (
            20_000,
            64,
            50,
            64,
            16,
            64,
            8,
        )
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    deadline = now() + args.budget_s
    report: dict[str, Any] = {
        "benchmark": "gpu",
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "smoke": args.smoke,
    }
    started = now()
    report["dense"] = bench_dense(args, torch, device, deadline)
    report["embedding"] = bench_embedding(args, torch, device, deadline)
    report["wall_s"] = round(now() - started, 1)
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
