"""The character encoder (ragmed.normalize.charenc): the numpy forward pass is the torch model's, it
learns from real (surface, standard name) pairs, and it saves and loads as checked arrays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import ragmed.normalize._charenc_torch as T
from ragmed.errors import IndexCorruptError
from ragmed.manbyo import load_manbyo
from ragmed.normalize import charenc
from ragmed.normalize.charenc import ARRAYS, WORKER_ENTRY, CharEncoder, trainer
from ragmed.normalize.store import Reader, Writer
from ragmed.normalize.text import normalize_key
from ragmed.normalize.tfidf import CharTfidf

from .conftest import MANBYO_DEV

TEXTS = ["肺炎", "左下葉肺炎", "ｃｏｐｄ", "", "ＤＩＣ疑い", "a" * 50, "慢性閉塞性肺疾患の急性増悪"]


def _random_encoder(seed: int = 0) -> tuple[CharEncoder, T.Encoder]:
    torch.manual_seed(seed)
    chars = {ch: i + 1 for i, ch in enumerate(sorted(set("".join(TEXTS))))}
    model = T.Encoder(len(chars) + 2, charenc.DIM, charenc.OUT, charenc.KERNEL, charenc.LAYERS)
    return CharEncoder(chars, **model.arrays()), model


def test_numpy_forward_pass_is_the_torch_models() -> None:
    """The weight layout conversion (a convolution as one matrix over a window) is exact."""
    enc, model = _random_encoder()
    texts = [t for t in TEXTS if t]
    ids = enc.ids(texts)
    with torch.no_grad():
        model.emb.weight[-1] = 0.0  # arrays() zeroes the never-trained unseen-character row too
        expected = model(torch.from_numpy(ids)).numpy()
    assert np.abs(enc.encode(texts) - expected).max() < 1e-5


def test_an_encoding_does_not_depend_on_its_batch() -> None:
    """Padding to the batch's longest text changes nothing (every update is masked)."""
    enc, _ = _random_encoder()
    alone = np.vstack([enc.encode([t]) for t in TEXTS])
    together = enc.encode(TEXTS)
    assert np.abs(alone - together).max() < 1e-5
    assert not together[TEXTS.index("")].any()  # empty text: zeros, so cosine 0 to everything
    norms = np.linalg.norm(together[[i for i, t in enumerate(TEXTS) if t]], axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)
    unseen = enc.encode(["肺炎☃"])  # a character never seen in training reads as nothing
    assert np.isfinite(unseen).all() and abs(np.linalg.norm(unseen) - 1) < 1e-5


def test_training_chunks_by_length_give_the_whole_batchs_encodings_and_gradients() -> None:
    """Training encodes a batch in chunks of similar length (far less padding): each text's encoding,
    and the gradient the loss sends back, are those of the batch padded as one."""
    enc, model = _random_encoder()
    texts = [t for t in TEXTS if t] * 3
    whole = model(torch.from_numpy(charenc._char_ids(enc.chars, texts)))
    chunked = T.encode_by_length(model, charenc._char_ids, enc.chars, texts, chunk=4)
    assert chunked.shape == whole.shape
    assert torch.allclose(chunked, whole, atol=1e-5)  # rows back in the texts' order
    grads = []
    for out in (whole, chunked):
        model.zero_grad()
        (out @ out.T).logsumexp(1).sum().backward()
        grads.append(model.convs[0].weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-4)


def test_save_and_load_round_trip_and_damage(tmp_path: Path) -> None:
    enc, _ = _random_encoder()
    out = Writer(tmp_path / "n")
    enc.save(out, "encoder0")
    out.manifest({})
    back = CharEncoder.load(Reader(tmp_path / "n"), "encoder0")
    assert back.chars == enc.chars
    assert np.array_equal(back.encode(TEXTS), enc.encode(TEXTS))
    out = Writer(tmp_path / "bad")
    enc.save(out, "encoder0")
    out.array("encoder0.out_b", np.zeros(7, dtype=np.float32))  # no longer fits out_w
    out.manifest({})
    with pytest.raises(IndexCorruptError, match=r"encoder0\.emb\.npy.*rebuild"):
        CharEncoder.load(Reader(tmp_path / "bad"), "encoder0")


def test_it_learns_the_dictionarys_pieces_beyond_spelling() -> None:
    """Trained on real Manbyo pairs, it names held-out variant wording better than the nearest name by
    char n-grams (the pieces it learns: abbreviations, synonyms, dropped qualifiers)."""
    rng = np.random.default_rng(0)
    rows = [e for e in load_manbyo(MANBYO_DEV) if e.standard_name != "-1" and "，" not in e.standard_name]
    rows = [rows[i] for i in rng.permutation(len(rows))[:20000]]
    held = [e for e in rows[:2000] if e.surface != e.standard_name]
    train = rows[2000:]
    names = sorted({normalize_key(e.standard_name) for e in train})
    held = [e for e in held if normalize_key(e.standard_name) in set(names)]
    enc = CharEncoder.train(
        [normalize_key(e.surface) for e in train], [normalize_key(e.standard_name) for e in train], epochs=3
    )
    queries = [normalize_key(e.surface) for e in held]
    gold = [normalize_key(e.standard_name) for e in held]
    ours = np.argmax(enc.encode(queries) @ enc.encode(names).T, axis=1)
    tfidf = CharTfidf.fit(names + queries)
    theirs = np.asarray((tfidf.transform(queries) @ tfidf.transform(names).T).argmax(axis=1)).ravel()
    acc = np.mean([names[i] == g for i, g in zip(ours, gold, strict=True)])
    base = np.mean([names[i] == g for i, g in zip(theirs, gold, strict=True)])
    print(f"held-out top-1: encoder {acc:.3f}, char n-gram nearest name {base:.3f} ({len(held)} queries)")
    assert acc >= base + 0.04, (acc, base)


needs_two_cores = pytest.mark.skipif(
    (os.cpu_count() or 1) < 2, reason="workers train only on two cores or more"
)


@needs_two_cores
def test_encoders_trained_in_worker_processes_do_not_depend_on_which_worker_or_when() -> None:
    """A big fit trains its encoders in worker processes, one torch thread each, the third beside the
    caller's own work: the same seed gives the same weights on any worker, in any order, and the
    weights of the same training here up to the float order of another thread count."""
    rows = [e for e in load_manbyo(MANBYO_DEV) if e.standard_name != "-1"][:400]
    surfaces = [normalize_key(e.surface) for e in rows]
    names = [normalize_key(e.standard_name) for e in rows]
    with trainer(len(rows), encoders=3, min_pairs=0) as train:
        assert train.workers == 2
        jobs = [train.submit(surfaces, names, seed=s) for s in (0, 1, 0)]
        first, other, again = (job.result() for job in jobs)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert first.chars == again.chars
    assert not np.allclose(first.out_w, other.out_w)  # the seed matters
    here = CharEncoder.train(surfaces, names, seed=0)
    queries = surfaces[:50]
    np.testing.assert_allclose(first.encode(queries), here.encode(queries), atol=2e-3)
    with trainer(len(rows), encoders=3) as train:  # a fit this small trains here
        assert train.workers == 0
        assert train.submit(surfaces[:40], names[:40], seed=0).done()


@needs_two_cores
def test_a_worker_that_fails_says_why_in_its_own_traceback() -> None:
    """A worker's crash is a bug, not bad input: the error carries the worker's traceback."""
    with trainer(10, encoders=2, min_pairs=0) as train:
        job = train.submit(["肺炎", "胃癌", "腸炎"], ["肺炎"], seed=0)  # fewer names than surfaces
        with pytest.raises(RuntimeError, match=r"worker exited with 1:[\s\S]*Traceback[\s\S]*Error"):
            job.result()


def _workers_of(parent: int) -> list[tuple[int, Path]]:
    """Live (not zombie) worker processes started by ``parent`` and their folders, found by their
    command line."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if WORKER_ENTRY.encode() in cmd and str(parent).encode() in cmd and state != "Z":
            found.append((int(proc.name), Path(cmd[3].decode())))
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the workers through /proc")
@pytest.mark.parametrize("after", [0.0, 0.5, 1.0])
def test_a_build_killed_mid_fit_leaves_no_worker_training(tmp_path: Path, after: float) -> None:
    """kill -9 of the process that fits (nothing of it runs to stop its workers): they stop by
    themselves within seconds, where they would otherwise train on for a minute for nobody, and remove
    the folder of pairs the parent would have removed. Killed ``after`` seconds into the worker's
    start too: a worker still importing finds its pairs gone under it and must not die leaving the
    folder half removed."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "fit.py"
    script.write_text(
        "from ragmed.normalize.charenc import trainer\n"
        "pairs = [(f'表記{i}', f'病名{i % 3000}') for i in range(60000)]\n"
        "with trainer(len(pairs), encoders=2, min_pairs=0) as train:\n"
        "    train.submit([s for s, _ in pairs], [n for _, n in pairs], seed=0).result()\n",
        encoding="utf-8",
    )
    parent = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.monotonic() + 60
        while not (workers := _workers_of(parent.pid)):
            assert time.monotonic() < deadline, "no worker started"
            assert parent.poll() is None, "the fit ended before its worker was seen"
            time.sleep(0.2)
        time.sleep(after)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 15
        while _workers_of(parent.pid):
            assert time.monotonic() < deadline, f"workers {workers} still running after their parent died"
            time.sleep(0.2)
        assert not any(folder.exists() for _, folder in workers)  # their pairs removed too
    finally:
        parent.kill()
        for pid, _ in _workers_of(parent.pid):
            os.kill(pid, signal.SIGKILL)
