"""A character-level dual encoder learned from the dictionary's own (surface form → standard name) pairs.

Why: n-gram similarity ranks the near-spellings of the wording; the dictionary's 72k pairs also teach
which *pieces* stand for which (``Ｃｌ`` for クロール, ``ＰＳＶＴ`` for 発作性上室頻拍, ``鼻ポリープ`` for
鼻茸). A small convolutional encoder over characters, trained to put each surface next to its name and
away from the other names of the batch (in-batch softmax), learns that from the pairs alone. On the
grouped held-out split of bench/normalize.py it finds the named gold first for 0.57 of the queries
alone (char n-gram nearest surfaces: 0.38); in the normalizer it is a candidate source and ranker
features.

Trained with torch at fit time (about 10 s per epoch over 60k pairs on 2 cores); queried in numpy
from plain arrays, so a saved normalizer loads without torch and no pickle is ever read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragmed.errors import IndexCorruptError
from ragmed.normalize.store import Reader, Writer

DIM = 128  # character embedding and convolution width
OUT = 256  # encoding size
KERNEL = 3  # characters seen by one convolution step
LAYERS = 2  # residual convolution layers
MAX_CHARS = 32  # longer wording is cut (the dictionary's surfaces are ~10 characters)
EPOCHS = 6
BATCH = 512  # pairs per step; the other names in the batch are the negatives
TEMPERATURE = 0.05
LEARNING_RATE = 2e-3
ENCODE_BATCH = 1024
# a training batch is encoded in chunks of similar length: padded to its longest text, a random batch is
# ~80 % padding (surfaces ~6 characters, names ~5, the longest cut at 32); the same arithmetic per text
TRAIN_CHUNK = 64
ARRAYS = ("emb", "conv_w", "conv_b", "out_w", "out_b")
# a fit with at least this many training pairs trains its encoders in worker processes: below it a
# worker's start (~3 s, mostly torch's import) costs more than the overlap saves
PARALLEL_PAIRS = 20_000
# a worker's program: imported, not run as ``-m`` (which would execute this module a second time
# beside the copy the package already imported)
WORKER_ENTRY = "import sys; from ragmed.normalize.charenc import _worker_main; _worker_main(sys.argv[1:])"


@dataclass
class CharEncoder:
    """Weights as numpy arrays; ``chars`` maps a character to its embedding row (0: padding, last:
    a character never seen in training)."""

    chars: dict[str, int]
    emb: np.ndarray  # (vocab, DIM)
    conv_w: np.ndarray  # (LAYERS, KERNEL * DIM, DIM): one convolution as a matrix over a window
    conv_b: np.ndarray  # (LAYERS, DIM)
    out_w: np.ndarray  # (2 * DIM, OUT): [max-pool, mean-pool] → encoding
    out_b: np.ndarray  # (OUT,)

    # ------------------------------------------------------------------ encoding
    def ids(self, texts: list[str]) -> np.ndarray:
        return _char_ids(self.chars, texts)

    def encode(self, texts: list[str]) -> np.ndarray:
        """(texts, OUT) float32, unit length (an empty text encodes to zeros)."""
        out = np.zeros((len(texts), OUT), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths pad little
        for start in range(0, len(order), ENCODE_BATCH):
            rows = order[start : start + ENCODE_BATCH]
            out[rows] = self._encode_ids(self.ids([texts[i] for i in rows]))
        return out

    def _encode_ids(self, ids: np.ndarray) -> np.ndarray:
        mask = (ids > 0)[:, :, None].astype(np.float32)
        h = self.emb[ids]  # padding rows are zero and stay zero: every update is masked
        half = KERNEL // 2
        # zeros on both ends of every text, filled in per layer (np.pad's own bookkeeping cost more
        # than the convolution on a query's one short text)
        padded = np.zeros((h.shape[0], h.shape[1] + 2 * half, h.shape[2]), dtype=h.dtype)
        for layer in range(len(self.conv_w)):
            padded[:, half : half + h.shape[1]] = h
            window = np.concatenate([padded[:, j : j + h.shape[1]] for j in range(KERNEL)], axis=2)
            h = h + np.maximum(window @ self.conv_w[layer] + self.conv_b[layer], 0.0) * mask
        count = mask.sum(axis=1)
        pooled = np.concatenate(
            [(h - 1e4 * (1.0 - mask)).max(axis=1), h.sum(axis=1) / np.maximum(count, 1.0)], axis=1
        )
        z = pooled @ self.out_w + self.out_b
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        z = np.where(count > 0, z / np.maximum(norm, 1e-12), 0.0)
        return z.astype(np.float32)

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, surfaces: list[str], names: list[str], seed: int = 0, epochs: int = EPOCHS) -> CharEncoder:
        """Learn from (surface, its standard name) pairs: each surface is pulled to its name's encoding
        and pushed from the batch's other names (one pair per name per batch, so no name is its own
        negative)."""
        import torch  # fit time only

        import ragmed.normalize._charenc_torch as T

        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        chars: dict[str, int] = {}
        for text in (*surfaces, *names):
            for ch in text[:MAX_CHARS]:
                chars.setdefault(ch, len(chars) + 1)
        name_of = {n: i for i, n in enumerate(dict.fromkeys(names))}
        label = np.asarray([name_of[n] for n in names])
        name_ids = list(name_of)
        model = T.Encoder(len(chars) + 2, DIM, OUT, KERNEL, LAYERS)
        opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
        for _ in range(epochs):
            perm = rng.permutation(len(surfaces))
            for start in range(0, len(perm), BATCH):
                batch = perm[start : start + BATCH]
                _, first = np.unique(label[batch], return_index=True)
                batch = batch[first]
                if len(batch) < 2:
                    continue
                q = T.encode_by_length(model, _char_ids, chars, [surfaces[i] for i in batch], TRAIN_CHUNK)
                k = T.encode_by_length(
                    model, _char_ids, chars, [name_ids[label[i]] for i in batch], TRAIN_CHUNK
                )
                logits = q @ k.T / TEMPERATURE
                target = torch.arange(len(batch))
                loss = T.cross_entropy(logits, target) + T.cross_entropy(logits.T, target)
                opt.zero_grad()
                loss.backward()
                opt.step()
        return cls(chars, **model.arrays())

    # ------------------------------------------------------------------ persistence
    def save(self, out: Writer, prefix: str) -> None:
        out.json(f"{prefix}.chars", "".join(sorted(self.chars, key=self.chars.__getitem__)))
        for name in ARRAYS:
            out.array(f"{prefix}.{name}", getattr(self, name))

    @classmethod
    def load(cls, store: Reader, prefix: str) -> CharEncoder:
        text = store.json(f"{prefix}.chars")
        arrays = {name: np.asarray(store.array(f"{prefix}.{name}", mmap=False)) for name in ARRAYS}
        emb, conv_w, out_w = arrays["emb"], arrays["conv_w"], arrays["out_w"]
        if not (
            isinstance(text, str)
            and emb.ndim == 2
            and len(emb) == len(text) + 2
            and conv_w.shape[1:] == (KERNEL * emb.shape[1], emb.shape[1])
            and out_w.shape[0] == 2 * emb.shape[1]
            and arrays["out_b"].shape == out_w.shape[1:]
        ):
            raise IndexCorruptError(
                f"{store.folder / (prefix + '.emb.npy')}: the character encoder's arrays do not fit "
                "together; rebuild the index (ragmed index build …)"
            )
        return cls({ch: i + 1 for i, ch in enumerate(text)}, **arrays)


class Trainer:
    """Trains encoders, each in a worker process where the fit is big enough (:func:`trainer`).

    Why: the small network's steps use two cores poorly (one encoder trains ~1.2× faster on two
    threads than on one), and the normalizer's fit trains three of them, ~45 % of its time. In worker
    processes of one thread each, two train at once, and the third trains beside the caller's own
    single-threaded work (the training queries' candidates, which need only the first two).

    A worker is a fresh interpreter (``python -c`` :data:`WORKER_ENTRY`), not a multiprocessing
    child: nothing of the caller is re-imported (a fit from ``python -`` or from a script without a
    ``__main__`` guard works), no torch threads are forked half-made, and it reads its pairs and writes
    its weights as the normalizer's own checked files, so no pickle crosses. It seeds itself, so the
    encoders are the same however the workers are scheduled."""

    def __init__(self, pool: ThreadPoolExecutor | None, workers: int = 0, threads: int = 0) -> None:
        self._pool = pool
        self.workers = workers  # 0: trains in this process
        self._threads = threads

    def submit(self, surfaces: list[str], names: list[str], seed: int) -> Future[CharEncoder]:
        if self._pool is not None:
            return self._pool.submit(_train_in_worker, surfaces, names, seed, self._threads)
        done: Future[CharEncoder] = Future()
        done.set_result(CharEncoder.train(surfaces, names, seed=seed))
        return done


@contextmanager
def trainer(pairs: int, encoders: int, min_pairs: int = PARALLEL_PAIRS) -> Iterator[Trainer]:
    """A :class:`Trainer` for ``encoders`` encoders over about ``pairs`` training pairs each: worker
    processes (one per encoder, at most one per core, the cores shared out as threads) on a machine
    with two cores or more and a fit of ``min_pairs`` or more; this process otherwise."""
    cores = os.cpu_count() or 1
    if cores < 2 or pairs < min_pairs or encoders < 2 or not sys.executable:  # (embedded: no interpreter)
        yield Trainer(None)
        return
    workers = min(encoders, cores)
    # threads only wait on the workers; on the way out (an error too) running workers finish
    with ThreadPoolExecutor(workers, thread_name_prefix="charenc") as pool:
        try:
            yield Trainer(pool, workers, max(1, cores // workers))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _train_in_worker(surfaces: list[str], names: list[str], seed: int, threads: int) -> CharEncoder:
    with tempfile.TemporaryDirectory(prefix="ragmed-charenc-") as tmp:
        folder = Path(tmp)
        pairs = Writer(folder)
        pairs.json("pairs", {"surfaces": surfaces, "names": names, "seed": seed, "threads": threads})
        pairs.manifest({})
        # the worker imports this very ragmed, installed or not
        here = str(Path(__file__).resolve().parents[2])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, (here, os.environ.get("PYTHONPATH")))),
        }
        # output to a file, not a pipe: a pipe would break under a worker whose parent was killed
        log = folder / "worker.log"
        with log.open("w", encoding="utf-8") as out:
            done = subprocess.run(
                [sys.executable, "-c", WORKER_ENTRY, str(folder), str(os.getpid())],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                env=env,
            )
        if done.returncode != 0:  # a bug, not bad input: the worker's own traceback says where
            said = log.read_text(encoding="utf-8", errors="replace")
            raise RuntimeError(f"a character encoder's worker exited with {done.returncode}:\n{said[-4000:]}")
        return CharEncoder.load(Reader(folder / "out"), "encoder")


def _worker(folder: Path, parent: int) -> None:
    """A worker's whole life: read the pairs, train with the threads it was given, write the weights.
    It stops when its parent does (a build killed mid-fit leaves no worker training for nobody), and
    the folder of pairs goes with it however it stops (the parent would have removed it)."""
    threading.Thread(target=_exit_with, args=(parent, folder), daemon=True).start()
    try:
        import torch  # fit time only

        job = Reader(folder).json("pairs")
        torch.set_num_threads(int(job["threads"]))
        encoder = CharEncoder.train(job["surfaces"], job["names"], seed=int(job["seed"]))
        (folder / "out").mkdir()
        out = Writer(folder / "out")
        encoder.save(out, "encoder")
        out.manifest({})
    finally:
        # orphaned: the watchdog may be removing the folder as this thread fails on its missing files,
        # and it dies with the interpreter once this thread ends, so this thread removes it too
        if os.getppid() != parent:
            shutil.rmtree(folder, ignore_errors=True)


def _char_ids(chars: dict[str, int], texts: list[str]) -> np.ndarray:
    """(texts, longest) character ids, 0-padded; an unseen character gets the row after the last known
    one (the embedding has ``len(chars) + 2`` rows: padding, the characters, unseen)."""
    unknown = len(chars) + 1
    width = max((min(len(t), MAX_CHARS) for t in texts), default=1) or 1
    out = np.zeros((len(texts), width), dtype=np.int64)
    for i, text in enumerate(texts):
        row = [chars.get(ch, unknown) for ch in text[:MAX_CHARS]]
        out[i, : len(row)] = row
    return out


def _exit_with(parent: int, folder: Path) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    shutil.rmtree(folder, ignore_errors=True)  # the parent would have removed it
    os._exit(1)


def _worker_main(argv: list[str]) -> None:
    """The worker's command line (:data:`WORKER_ENTRY`): its folder of pairs and its parent's pid."""
    _worker(Path(argv[0]), int(argv[1]))
