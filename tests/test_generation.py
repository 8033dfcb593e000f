"""The batch engine through the generate stage's items (seap_model.batch.items) and the stage itself: bad items are
failures, sidecars say what made each output, a re-run skips exactly what is still current, stale outputs are
removed, and an output belongs to its item."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from seap_model.audio import AudioError, save_audio
from seap_model.batch.engine import is_done
from seap_model.batch.items import Item, generate_items, prompt_file_items, split_items
from seap_model.batch.storage import LocalStorage
from seap_model.config import DEFAULT_CLIP_SECONDS, SamplingParams, parse_params
from seap_model.data.manifest import write_labels
from seap_model.generation import item_generator, load_reference
from seap_model.hashing import file_digest, path_digest
from seap_model.pipeline import SEAPPipeline
from seap_model.stages.generate import generate
from tests.conftest import tone

DURATION = 0.32
SAMPLING = SamplingParams(steps=2, guidance=2.0, duration=DURATION)
HASH = "model-hash-a"
CODE = "code-hash-a"
PROVENANCE = {"model_sha256": HASH, "code_sha256": CODE}
SR = 16000
OUTPUT = re.compile(r"^(?P<id>.+)-[0-9a-f]{16}\.(?P<ext>wav|json)$")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread for these tiny models: with two, a busy second core makes OpenMP's thread handoffs
    cost ~10x the file's runtime (measured: 8 s vs 120 s with one other process running); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _recorded_sampling(steps: int, seed: int, duration: float = DURATION) -> dict:
    """What a sidecar records of the tests' sampling (guidance 2): every SamplingParams field, spelled out."""
    return {
        "steps": steps,
        "guidance": 2.0,
        "text_guidance": None,
        "style_guidance": None,
        "seed": seed,
        "scheduler": None,
        "precision": "fp32",
        "vocoder_iterations": None,
        "duration": duration,
    }


class CountingPipe:
    """The pipeline, recording the prompts of every batch it is asked to generate."""

    def __init__(self, pipe):
        self.pipe, self.batches = pipe, []

    @property
    def sample_rate(self) -> int:
        return self.pipe.sample_rate

    @property
    def prompts(self) -> list[str]:
        return [p for batch in self.batches for p in batch]

    def __getattr__(self, name):  # everything else (device, config, default_steps) is the pipeline's
        return getattr(self.pipe, name)

    def __call__(self, prompts, references, **kwargs):
        self.batches.append(list(prompts))
        return self.pipe(prompts, references, **kwargs)


def _ref(path: Path, seconds: float = 1.0, freq: float = 440.0) -> Path:
    save_audio(path, tone(seconds, freq=freq), SR)
    return path


def _items(root: Path, n: int = 3) -> list[Item]:
    """n good items, each with its own prompt and a reference of its own pitch (and length)."""
    return [
        Item(f"item{i}", f"sound number {i}", _ref(root / f"ref{i}.wav", 1.0 + 0.25 * (i % 2), 300.0 + 250.0 * i))
        for i in range(n)
    ]


def _run(pipe, items, out, *, sampling=SAMPLING, provenance=PROVENANCE, batch_size=8):
    return generate_items(pipe, items, out, sampling, provenance, batch_size)


def _reasons(failures: list[dict]) -> dict[str, str]:
    return {f["item"]: f["reason"] for f in failures}


def sidecar_path(out: Path, item_id: str) -> Path:
    """The item's one sidecar, ``<id>-<hash16>.json`` (an assertion error if it has none or several)."""
    (found,) = [p for p in out.glob("*.json") if (m := OUTPUT.match(p.name)) and m["id"] == item_id]
    return found


def _sidecar(out: Path, item_id: str) -> dict:
    return json.loads(sidecar_path(out, item_id).read_text())


def _wav(out: Path, item_id: str) -> Path:
    """The item's current output: the audio its sidecar names."""
    return out / _sidecar(out, item_id)["audio"]


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _outputs_in(out: Path) -> list[tuple[str, str]]:
    """(item id, wav/json) of every output file in ``out``, sorted: an item with two outputs shows twice."""
    return sorted((m["id"], m["ext"]) for p in out.iterdir() if (m := OUTPUT.match(p.name)))


def _outputs(item_ids) -> list[tuple[str, str]]:
    return sorted((i, ext) for i in item_ids for ext in ("wav", "json"))


def _without_timing(sidecar: dict) -> dict:
    return {k: v for k, v in sidecar.items() if k != "seconds"}


def _is_done(out: Path, sidecar: dict) -> bool:
    """Whether the engine counts the output ``sidecar`` described as complete."""
    keys = (sidecar["audio"], sidecar["audio"].rsplit(".", 1)[0] + ".json")
    return is_done(LocalStorage(out), keys, sidecar["inputs_sha256"])


def _audio(path: Path) -> np.ndarray:
    data, sr = sf.read(path, dtype="float32")
    assert sr == SR
    return data


def _same_clip(a: Path, b: Path) -> bool:
    """The same clip up to float rounding: batch composition changes the last bits (the WAV's, after 16-bit)."""
    x, y = _audio(a), _audio(b)
    return x.shape == y.shape and float(np.abs(x - y).max()) < 1e-2


# --- per-item seeds --------------------------------------------------------------------------------------------


def test_item_generator_depends_on_seed_and_id_only():
    draw = lambda seed, item_id: torch.randn(8, generator=item_generator(seed, item_id))  # noqa: E731
    assert torch.equal(draw(0, "a"), draw(0, "a"))
    assert not torch.equal(draw(0, "a"), draw(0, "b"))
    assert not torch.equal(draw(0, "a"), draw(1, "a"))


# --- bad items ---------------------------------------------------------------------------------------------------


def test_bad_items_are_reported_and_the_rest_finish(tiny_pipeline, tmp_path):
    refs, out = tmp_path / "refs", tmp_path / "out"
    good = _items(refs, 2)
    ok = good[0].reference
    corrupt = refs / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage")
    short = _ref(refs / "short.wav", seconds=0.3)
    missing = refs / "missing.wav"
    bad = [
        Item("corrupt", "a dog barking", corrupt),
        Item("missing", "a dog barking", missing),
        Item("short", "a dog barking", short),
        Item("empty_prompt", "   ", ok),
        Item("../evil", "a dog barking", ok),
        Item("a/b", "a dog barking", ok),
    ]
    before = _files(tmp_path)
    pipe = CountingPipe(tiny_pipeline)
    done, failures, skipped = _run(pipe, [bad[0], good[0], *bad[1:4], good[1], *bad[4:]], out)

    reasons = _reasons(failures)
    assert set(reasons) == {it.id for it in bad}
    assert "cannot read audio" in reasons["corrupt"] and str(corrupt) in reasons["corrupt"]
    assert "cannot be read" in reasons["missing"] and str(missing) in reasons["missing"]
    assert "0.30 s long" in reasons["short"] and str(short) in reasons["short"]
    assert reasons["empty_prompt"] == "prompt is empty"
    assert "id must use only" in reasons["../evil"] and "id must use only" in reasons["a/b"]
    assert all(r.startswith("reference ") for k, r in reasons.items() if k in ("corrupt", "missing", "short"))

    assert skipped == 0
    assert sorted(pipe.prompts) == sorted(it.prompt for it in good)  # bad items never reach the model
    assert [r["id"] for r in done] == [it.id for it in good]
    assert [r["audio"] for r in done] == [_wav(out, it.id).name for it in good]
    # Only the good items' outputs, nothing partial, nothing outside the output folder.
    assert _outputs_in(out) == _outputs(it.id for it in good) and len(_files(out)) == 2 * len(good)
    assert _files(tmp_path) - before == {f"out/{name}" for name in _files(out)}
    assert not (tmp_path / "evil.wav").exists() and not (out / "a").exists()
    for it in good:
        audio = _audio(_wav(out, it.id))
        assert audio.size > 0 and np.isfinite(audio).all() and np.abs(audio).max() > 0
        recorded = _sidecar(out, it.id)
        assert recorded.pop("seconds") >= 0 and re.fullmatch("[0-9a-f]{64}", recorded.pop("inputs_sha256"))
        assert recorded == {
            "id": it.id,
            "prompt": it.prompt,
            "reference": str(it.reference),
            "reference_sha256": file_digest(it.reference),
            "format": "wav",
            "model_sha256": HASH,
            "code_sha256": CODE,
            "sampling": _recorded_sampling(2, 0),
            "audio": _wav(out, it.id).name,
            "sample_rate": SR,
        }


def test_silent_reference_is_a_failure_not_a_crash(tiny_pipeline, tmp_path):
    good = _items(tmp_path, 2)
    silent = tmp_path / "silent.wav"
    save_audio(silent, torch.zeros(SR), SR)
    with pytest.raises(AudioError, match="silent"):  # rejected when loaded, before any model call
        load_reference(silent, SR)
    out = tmp_path / "out"
    pipe = CountingPipe(tiny_pipeline)
    # In the same batch as good items: they still finish, and the silent one never reaches the model.
    done, failures, _ = _run(pipe, [good[0], Item("silent", "a dog barking", silent), good[1]], out)
    reason = _reasons(failures)["silent"]
    assert reason.startswith(f"reference {silent}: silent") and "dBFS" in reason
    assert [f["item"] for f in failures] == ["silent"]
    assert [r["id"] for r in done] == ["item0", "item1"]
    assert pipe.batches == [[it.prompt for it in good]]
    assert _outputs_in(out) == _outputs(["item0", "item1"])


class FailingPipe(CountingPipe):
    """The pipeline, raising ``error`` for any batch that contains the prompt ``bad``."""

    def __init__(self, pipe, bad: str, error: Exception):
        super().__init__(pipe)
        self.bad, self.error = bad, error

    def __call__(self, prompts, references, **kwargs):
        if self.bad in prompts:
            self.batches.append(list(prompts))
            raise self.error
        return super().__call__(prompts, references, **kwargs)


@pytest.mark.parametrize(
    "error",
    [FloatingPointError("overflow in sampler"), AudioError("decoded audio is broken"), ValueError("bad latent")],
    ids=["FloatingPointError", "AudioError", "ValueError"],
)
def test_item_that_breaks_its_batch_fails_alone(tiny_pipeline, tmp_path, error):
    items, out = _items(tmp_path, 4), tmp_path / "out"
    _run(tiny_pipeline, items, tmp_path / "normal", batch_size=1)  # what the good items should become
    _run(tiny_pipeline, items, out, provenance={**PROVENANCE, "code_sha256": "older-code"})  # stale outputs
    bad = items[1]

    pipe = FailingPipe(tiny_pipeline, bad.prompt, error)
    done, failures, skipped = _run(pipe, items, out, batch_size=4)
    assert skipped == 0
    assert failures == [{"item": bad.id, "reason": f"generation failed: {error}"}]
    assert [r["id"] for r in done] == [it.id for it in items if it is not bad]
    # One batched call, then each item on its own: only the bad one fails.
    assert pipe.batches == [[it.prompt for it in items]] + [[it.prompt] for it in items]
    assert _outputs_in(out) == _outputs(it.id for it in items if it is not bad)  # its stale output is gone too
    for it in items:
        if it is not bad:
            # Generated alone, with its own seed: the very clip it gets in a batch of one.
            assert _wav(out, it.id).read_bytes() == _wav(tmp_path / "normal", it.id).read_bytes()
            assert _sidecar(out, it.id)["code_sha256"] == CODE


# --- re-runs -----------------------------------------------------------------------------------------------------


def test_rerun_skips_every_done_item_and_keeps_its_bytes(tiny_pipeline, tmp_path):
    items, out = _items(tmp_path), tmp_path / "out"
    bad = Item("bad", "a dog barking", tmp_path / "missing.wav")
    _run(tiny_pipeline, [*items, bad], out, batch_size=2)
    first = {it.id: (_wav(out, it.id).read_bytes(), _wav(out, it.id).stat().st_mtime_ns) for it in items}
    sidecars = {it.id: sidecar_path(out, it.id).read_text() for it in items}

    pipe = CountingPipe(tiny_pipeline)
    done, failures, skipped = _run(pipe, [*items, bad], out, batch_size=2)
    assert skipped == len(items) and pipe.batches == []
    assert sorted(r["id"] for r in done) == sorted(it.id for it in items)
    assert set(_reasons(failures)) == {"bad"}
    for it in items:
        wav = _wav(out, it.id)
        assert (wav.read_bytes(), wav.stat().st_mtime_ns) == first[it.id]  # not even rewritten
        assert sidecar_path(out, it.id).read_text() == sidecars[it.id]


def _other_hash(items, root):
    return items, {"provenance": {**PROVENANCE, "model_sha256": "model-hash-b"}}


def _other_code(items, root):
    return items, {"provenance": {**PROVENANCE, "code_sha256": "code-hash-b"}}


def _more_steps(items, root):
    return items, {"sampling": SAMPLING.model_copy(update={"steps": 3})}


def _other_seed(items, root):
    return items, {"sampling": SAMPLING.model_copy(update={"seed": 1})}


def _other_duration(items, root):
    return items, {"sampling": SAMPLING.model_copy(update={"duration": 0.48})}


def _new_prompt(items, root):
    return [items[0], Item(items[1].id, "a completely different sound", items[1].reference), items[2]], {}


def _new_reference_content(items, root):
    _ref(items[1].reference, seconds=1.0, freq=3100.0)  # same path, other audio
    return items, {}


@pytest.mark.parametrize(
    "change, regenerated, field, value",
    [
        (_other_hash, [0, 1, 2], "model_sha256", lambda it: "model-hash-b"),
        (_other_code, [0, 1, 2], "code_sha256", lambda it: "code-hash-b"),
        (
            _more_steps,
            [0, 1, 2],
            "sampling",
            lambda it: _recorded_sampling(3, 0),
        ),
        (
            _other_seed,
            [0, 1, 2],
            "sampling",
            lambda it: _recorded_sampling(2, 1),
        ),
        (_other_duration, [0, 1, 2], "sampling", lambda it: _recorded_sampling(2, 0, 0.48)),
        (_new_prompt, [1], "prompt", lambda it: it.prompt),
        (_new_reference_content, [1], "reference_sha256", lambda it: file_digest(it.reference)),
    ],
    ids=["model_hash", "code_hash", "steps", "seed", "duration", "prompt", "reference_content"],
)
def test_changed_inputs_regenerate_the_affected_items(tiny_pipeline, tmp_path, change, regenerated, field, value):
    items, out = _items(tmp_path), tmp_path / "out"
    _run(tiny_pipeline, items, out)
    before = {it.id: _sidecar(out, it.id) for it in items}
    audio_before = {it.id: _audio(_wav(out, it.id)) for it in items}

    new_items, kwargs = change(items, tmp_path)
    pipe = CountingPipe(tiny_pipeline)
    done, failures, skipped = _run(pipe, new_items, out, **kwargs)
    assert failures == []
    assert skipped == len(items) - len(regenerated)
    assert sorted(pipe.prompts) == sorted(new_items[i].prompt for i in regenerated)
    assert sorted(r["id"] for r in done) == sorted(it.id for it in items)
    for i, it in enumerate(new_items):
        recorded = _sidecar(out, it.id)  # one output per item: a regenerated item's old one is gone
        if i in regenerated:
            assert recorded[field] == value(it) != before[it.id][field]
            assert (
                recorded["inputs_sha256"] != before[it.id]["inputs_sha256"]
                and recorded["audio"] != before[it.id]["audio"]
            )
            # Same weights and sampler under another hash: the same clip; any other change: a new one.
            same = np.array_equal(_audio(_wav(out, it.id)), audio_before[it.id])
            assert same == (field in ("model_sha256", "code_sha256"))
        else:
            assert recorded == before[it.id]
        # What the first run made counts as done only where it still holds.
        assert _is_done(out, before[it.id]) == (i not in regenerated)
    assert _outputs_in(out) == _outputs(it.id for it in items)


# --- interrupted or damaged outputs --------------------------------------------------------------------------------


def test_wav_without_sidecar_is_regenerated(tiny_pipeline, tmp_path):
    items, out = _items(tmp_path), tmp_path / "out"
    _run(tiny_pipeline, items, out)
    expected, wav = tmp_path / "expected.wav", _wav(out, "item1")
    expected.write_bytes(wav.read_bytes())
    sidecar_path(out, "item1").unlink()  # killed between the WAV and its sidecar ...
    wav.write_bytes(expected.read_bytes()[:1000])  # ... here with a WAV cut short

    pipe = CountingPipe(tiny_pipeline)
    _, failures, skipped = _run(pipe, items, out)
    assert failures == [] and skipped == 2 and pipe.prompts == [items[1].prompt]
    assert _same_clip(_wav(out, "item1"), expected)
    assert _sidecar(out, "item1")["reference_sha256"] == file_digest(items[1].reference)


def test_sidecar_without_wav_is_regenerated(tiny_pipeline, tmp_path):
    items, out = _items(tmp_path), tmp_path / "out"
    _run(tiny_pipeline, items, out)
    expected = tmp_path / "expected.wav"
    _wav(out, "item2").rename(expected)
    pipe = CountingPipe(tiny_pipeline)
    _, _, skipped = _run(pipe, items, out)
    assert skipped == 2 and pipe.prompts == [items[2].prompt]
    assert _same_clip(_wav(out, "item2"), expected)


@pytest.mark.parametrize(
    "content",
    [b'{"id": "item0", "prompt": "sound', b"", b'{"id": "item0"}', b'{"id": "item0", "model_sha256": "x"}'],
    ids=["truncated", "empty", "missing_keys", "wrong_keys"],
)
def test_corrupt_sidecar_is_regenerated(tiny_pipeline, tmp_path, content):
    items, out = _items(tmp_path), tmp_path / "out"
    _run(tiny_pipeline, items, out)
    expected, sidecar = tmp_path / "expected.wav", _sidecar(out, "item0")
    expected.write_bytes(_wav(out, "item0").read_bytes())
    sidecar_path(out, "item0").write_bytes(content)
    assert not _is_done(out, sidecar)

    pipe = CountingPipe(tiny_pipeline)
    _, failures, skipped = _run(pipe, items, out)
    assert failures == [] and skipped == 2 and pipe.prompts == [items[0].prompt]
    assert _without_timing(_sidecar(out, "item0")) == _without_timing(sidecar)
    assert _same_clip(_wav(out, "item0"), expected)


@pytest.mark.parametrize(
    "content",
    [b"null", b"[1, 2]", b'"item0"', b"3", b"\xff\xfe\x00\x01binary", b'{"id": "item0", "prompt": "\xff"}'],
    ids=["null", "list", "string", "number", "binary", "json_not_utf8"],
)
def test_sidecar_of_another_shape_is_regenerated(tiny_pipeline, tmp_path, content):
    items, out = _items(tmp_path, 2), tmp_path / "out"
    _run(tiny_pipeline, items, out)
    sidecar = _sidecar(out, "item0")
    sidecar_path(out, "item0").write_bytes(content)
    assert not _is_done(out, sidecar)  # no exception either

    pipe = CountingPipe(tiny_pipeline)
    done, failures, skipped = _run(pipe, items, out)
    assert failures == [] and skipped == 1 and pipe.prompts == [items[0].prompt]
    assert sorted(r["id"] for r in done) == ["item0", "item1"]
    assert _without_timing(_sidecar(out, "item0")) == _without_timing(sidecar)


# --- an output belongs to its item -----------------------------------------------------------------------------------


def test_output_belongs_to_its_item_whatever_the_order_and_batch(tiny_pipeline, tmp_path):
    items = _items(tmp_path / "refs", 5)
    shuffled = items[:]
    random.Random(3).shuffle(shuffled)
    assert [it.id for it in shuffled] != [it.id for it in items]
    runs = {
        "one_by_one": (items, 1),
        "shuffled_one_by_one": (shuffled, 1),
        "shuffled_batches_of_2": (shuffled, 2),
        "all_at_once": (items[::-1], 8),
    }
    for name, (order, batch_size) in runs.items():
        done, failures, skipped = _run(tiny_pipeline, order, tmp_path / name, batch_size=batch_size)
        assert failures == [] and skipped == 0
        assert {r["id"]: r["prompt"] for r in done} == {it.id: it.prompt for it in items}

    base = {it.id: _audio(_wav(tmp_path / "one_by_one", it.id)) for it in items}
    for it in items:
        # Alone in its batch, a clip is bit-identical whatever ran before it.
        a, b = (_wav(tmp_path / run, it.id) for run in ("one_by_one", "shuffled_one_by_one"))
        assert a.read_bytes() == b.read_bytes()
        for run in runs:
            recorded = _sidecar(tmp_path / run, it.id)
            assert recorded["prompt"] == it.prompt and recorded["reference"] == str(it.reference)
            assert recorded["reference_sha256"] == file_digest(it.reference)
            # In a batch with others, the same clip up to float rounding, and far from every other item's clip.
            audio = _audio(_wav(tmp_path / run, it.id))
            distance = {other: float(np.abs(audio - clip).max()) for other, clip in base.items()}
            assert distance[it.id] < 1e-2, (run, it.id, distance)
            assert min(d for other, d in distance.items() if other != it.id) > 0.1, (run, it.id, distance)


def test_item_that_now_fails_loses_its_stale_output(tiny_pipeline, tmp_path):
    items, out = _items(tmp_path, 4), tmp_path / "out"
    _run(tiny_pipeline, items, out)
    assert _outputs_in(out) == _outputs(it.id for it in items)
    items[0].reference.write_bytes(b"no longer audio")  # unreadable now
    items[1].reference.unlink()  # gone
    _ref(items[2].reference, seconds=0.3)  # too short now
    pipe = CountingPipe(tiny_pipeline)
    done, failures, skipped = _run(pipe, items, out)
    reasons = _reasons(failures)
    assert set(reasons) == {"item0", "item1", "item2"}
    assert "cannot read audio" in reasons["item0"]
    assert "cannot be read" in reasons["item1"]
    assert "0.30 s long" in reasons["item2"]
    assert [r["id"] for r in done] == ["item3"] and skipped == 1 and pipe.batches == []
    assert _outputs_in(out) == _outputs(["item3"]) and len(_files(out)) == 2


def test_item_whose_prompt_is_now_empty_loses_its_stale_output(tiny_pipeline, tmp_path):
    items, out = _items(tmp_path, 2), tmp_path / "out"
    _run(tiny_pipeline, items, out)
    _, failures, skipped = _run(tiny_pipeline, [Item("item0", "", items[0].reference), items[1]], out)
    assert _reasons(failures) == {"item0": "prompt is empty"} and skipped == 1
    assert _outputs_in(out) == _outputs(["item1"])


# --- item sources ----------------------------------------------------------------------------------------------------


def test_prompt_file_items_reports_bad_rows_by_line(tiny_pipeline, tmp_path, monkeypatch):
    folder = tmp_path / "job"
    _ref(folder / "clips" / "a.wav", freq=500.0)
    _ref(folder / "b.wav", freq=900.0)
    lines = [
        json.dumps({"id": "a", "prompt": "a dog barking", "reference": "clips/a.wav"}),
        '{"id": "broken", "prompt": ',
        json.dumps({"id": "noprompt", "reference": "b.wav"}),
        "",
        json.dumps({"id": "a", "prompt": "a bell ringing", "reference": "b.wav"}),
        json.dumps({"id": "numref", "prompt": "rain", "reference": 3}),
        "[1, 2]",
        "null",
        json.dumps({"id": 7, "prompt": "a bell ringing", "reference": "b.wav"}),
    ]
    prompts = folder / "prompts.jsonl"
    prompts.write_text("\n".join(lines) + "\n")

    items, failures = prompt_file_items(prompts)
    assert [f["item"] for f in failures] == [f"{prompts}:{n}" for n in (2, 3, 5, 6, 7, 8)]
    reasons = [f["reason"] for f in failures]
    assert reasons[0].startswith("not JSON (")
    assert reasons[1] == "field 'prompt': missing"
    assert reasons[2] == "field 'id': 'a' repeats line 1"
    assert reasons[3] == "field 'reference': expected a string, got int"
    assert reasons[4:] == ["not a JSON object (got an array)", "not a JSON object (got null)"]
    assert items == [
        Item("a", "a dog barking", folder / "clips" / "a.wav"),
        Item("7", "a bell ringing", folder / "b.wav"),
    ]

    # References resolve against the file's folder, not the working directory: a relative file path works too.
    monkeypatch.chdir(tmp_path)
    relative, _ = prompt_file_items(Path("job") / "prompts.jsonl")
    assert [it.reference for it in relative] == [Path("job/clips/a.wav"), Path("job/b.wav")]
    done, run_failures, _ = _run(tiny_pipeline, relative, tmp_path / "out")
    assert run_failures == [] and [r["id"] for r in done] == ["a", "7"]
    assert _sidecar(tmp_path / "out", "a")["reference_sha256"] == file_digest(folder / "clips" / "a.wav")


def test_split_items_one_per_scene_and_label(tmp_path):
    write_labels(tmp_path, {"bell": "a bell ringing", "dog": "a dog barking"})

    def scene(i, refs):
        return {
            "id": f"test_{i}",
            "split": "test",
            "audio": f"audio/test_{i}.wav",
            "duration": 4.0,
            "caption": "",
            "events": [],
            "references": [
                {"label": label, "audio": f"references/{i}_{k}.wav", "spans": [[s, s + 1]]}
                for k, (label, s) in enumerate(refs)
            ],
        }

    rows = [scene(0, [("dog", 0.05), ("dog", 2.0), ("bell", 1.5)]), scene(1, [("bell", 0.5)])]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = split_items(tmp_path)
    assert [(it.id, it.prompt, it.label) for it in items] == [
        ("test_0_dog", "a dog barking", "dog"),
        ("test_0_bell", "a bell ringing", "bell"),
        ("test_1_bell", "a bell ringing", "bell"),
    ]
    assert [it.reference for it in items] == [tmp_path / "references" / n for n in ("0_0.wav", "0_2.wav", "1_0.wav")]
    assert [it.scene_audio for it in items] == [tmp_path / "audio" / f"test_{i}.wav" for i in (0, 0, 1)]
    assert [it.start for it in items] == pytest.approx([0.0, 1.4, 0.4])
    assert [it.id for it in split_items(tmp_path, max_items=2)] == ["test_0_dog", "test_0_bell"]


# --- the generate stage -----------------------------------------------------------------------------------------------


def _stage_params(pipe_dir: Path, prompts: Path, out: Path):
    return parse_params(
        {
            # A data folder of the test's own: the stage's fingerprint hashes it (a real one could be large).
            "data": {"serst_dir": str(out.parent / "serst")},
            "finetune": {"out_dir": str(pipe_dir), "train_seconds": DURATION},
            "generate": {
                "prompts": str(prompts),
                "out_dir": str(out),
                "batch_size": 2,
                "sampling": {"steps": 2, "guidance": 2.0},  # duration: the pipeline's own
            },
        }
    )


def _save(pipe, pipe_dir: Path) -> None:
    """Saved as finetune saves it: with its clip length (the stage generates that length unless told)."""
    pipe.register_to_config(duration=DURATION)
    pipe.save_pretrained(pipe_dir)


def _fingerprint(code: str = CODE) -> dict:
    return {"code": code, "params": "params-hash", "inputs": "inputs-hash"}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _stage_audio(out: Path, names) -> dict[str, bytes]:
    return {name: _wav(out, name).read_bytes() for name in names}


def test_generate_stage_reports_skips_and_regenerates_for_new_weights(tiny_pipeline, tmp_path):
    pipe_dir, job, out = tmp_path / "pipe", tmp_path / "job", tmp_path / "generated"
    _save(tiny_pipeline, pipe_dir)
    for name, freq in (("a", 400.0), ("b", 800.0), ("c", 1600.0)):
        _ref(job / f"{name}.wav", freq=freq)
    rows = [
        json.dumps({"id": "c", "prompt": "rain on a roof", "reference": "c.wav"}),
        json.dumps({"id": "a", "prompt": "a dog barking", "reference": "a.wav"}),
        "not json",
        json.dumps({"id": "gone", "prompt": "a cat", "reference": "gone.wav"}),
        json.dumps({"id": "b", "prompt": "a bell ringing", "reference": "b.wav"}),
    ]
    (job / "prompts.jsonl").write_text("\n".join(rows) + "\n")
    params = _stage_params(pipe_dir, job / "prompts.jsonl", out)

    report = generate(params, _fingerprint())
    assert report == {"items": 5, "generated": 3, "already_there": 0, "failed": 2}
    assert json.loads((out / "report.json").read_text()) == report
    index = _read_jsonl(out / "index.jsonl")
    assert [(r["id"], r["prompt"], r["audio"]) for r in index] == [
        ("a", "a dog barking", _wav(out, "a").name),
        ("b", "a bell ringing", _wav(out, "b").name),
        ("c", "rain on a roof", _wav(out, "c").name),
    ]
    failures = _read_jsonl(out / "failures.jsonl")
    assert [f["item"] for f in failures] == [f"{job / 'prompts.jsonl'}:3", "gone"]
    assert "not JSON" in failures[0]["reason"] and "cannot be read" in failures[1]["reason"]
    first_hash = path_digest(pipe_dir)
    for name in "abc":
        recorded = _sidecar(out, name)
        assert recorded["model_sha256"] == first_hash and recorded["code_sha256"] == CODE
        assert recorded["sampling"] == _recorded_sampling(2, 0)  # the pipeline's own duration, recorded
        assert sf.info(_wav(out, name)).duration == pytest.approx(DURATION, abs=0.02)
    audio = _stage_audio(out, "abc")

    again = generate(params, _fingerprint())
    assert again == {"items": 5, "generated": 0, "already_there": report["generated"], "failed": 2}
    assert _read_jsonl(out / "index.jsonl") == index
    assert _read_jsonl(out / "failures.jsonl") == failures
    assert _stage_audio(out, "abc") == audio

    with torch.no_grad():
        tiny_pipeline.unet.conv_out.weight.add_(0.05)
    tiny_pipeline.save_pretrained(pipe_dir)  # retrained in place: same folder, new weights
    new_hash = path_digest(pipe_dir)
    assert new_hash != first_hash

    retrained = generate(params, _fingerprint())
    assert retrained == {"items": 5, "generated": 3, "already_there": 0, "failed": 2}
    for name in "abc":
        assert _sidecar(out, name)["model_sha256"] == new_hash
        assert _sidecar(out, name)["code_sha256"] == CODE
        assert _wav(out, name).read_bytes() != audio[name]
    assert _outputs_in(out) == _outputs("abc")  # the old model's outputs are gone


def test_generate_stage_regenerates_when_its_code_changes(tiny_pipeline, tmp_path):
    pipe_dir, job, out = tmp_path / "pipe", tmp_path / "job", tmp_path / "generated"
    _save(tiny_pipeline, pipe_dir)
    for name, freq in (("a", 400.0), ("b", 800.0), ("c", 1600.0)):
        _ref(job / f"{name}.wav", freq=freq)
    prompts = {"a": "a dog barking", "b": "a bell ringing", "c": "rain on a roof"}
    rows = [json.dumps({"id": k, "prompt": v, "reference": f"{k}.wav"}) for k, v in prompts.items()]
    (job / "prompts.jsonl").write_text("\n".join(rows) + "\n")
    params = _stage_params(pipe_dir, job / "prompts.jsonl", out)

    def recorded_codes() -> dict[str, str]:
        return {name: _sidecar(out, name)["code_sha256"] for name in prompts}

    def wav_files() -> dict[str, int]:  # the inode: a regenerated WAV is a new file
        return {name: _wav(out, name).stat().st_ino for name in prompts}

    def run(code: str = CODE, **expected) -> dict:
        report = generate(params, _fingerprint(code))
        assert report == {"items": 3, "failed": 0, **expected}
        assert _outputs_in(out) == _outputs(prompts)  # one output per item, whatever ran before
        return report

    run(generated=3, already_there=0)
    assert recorded_codes() == dict.fromkeys(prompts, CODE)
    files, audio = wav_files(), _stage_audio(out, prompts)
    run(generated=0, already_there=3)  # unchanged: every item skipped, not even rewritten
    assert wav_files() == files

    # An edited sampler: the stage's code fingerprint changes, and no old clip may pass for a new one.
    run("edited-sampler", generated=3, already_there=0)
    assert recorded_codes() == dict.fromkeys(prompts, "edited-sampler")
    assert all(wav_files()[name] != files[name] for name in prompts)
    # Same weights, same sampling (the "edit" changed nothing real): the same clips.
    assert _stage_audio(out, prompts) == audio
    run("edited-sampler", generated=0, already_there=3)

    # The edit undone: the recorded hash is the edited one, so everything is generated again.
    files = wav_files()
    run(generated=3, already_there=0)
    assert recorded_codes() == dict.fromkeys(prompts, CODE)
    assert all(wav_files()[name] != files[name] for name in prompts)
    files = wav_files()
    run(generated=0, already_there=3)
    assert wav_files() == files


def test_generate_stage_items_named_like_its_files_are_kept(tiny_pipeline, tmp_path):
    pipe_dir, job, out = tmp_path / "pipe", tmp_path / "job", tmp_path / "generated"
    _save(tiny_pipeline, pipe_dir)
    _ref(job / "r.wav")
    ids = ["report", "index", "failures"]
    rows = [json.dumps({"id": i, "prompt": f"a dog {i}", "reference": "r.wav"}) for i in ids]
    (job / "prompts.jsonl").write_text("\n".join(rows) + "\n")
    params = _stage_params(pipe_dir, job / "prompts.jsonl", out)
    first = generate(params, _fingerprint())
    assert first == {"items": 3, "generated": 3, "already_there": 0, "failed": 0}
    assert _outputs_in(out) == _outputs(ids)
    assert _files(out) - {p.name for p in out.iterdir() if OUTPUT.match(p.name)} == {
        "report.json",
        "index.jsonl",
        "failures.jsonl",
    }
    assert json.loads((out / "report.json").read_text()) == first  # the stage's report, not a sidecar
    assert _sidecar(out, "report")["prompt"] == "a dog report"
    assert [r["id"] for r in _read_jsonl(out / "index.jsonl")] == sorted(ids)
    again = generate(params, _fingerprint())
    assert again == {"items": 3, "generated": 0, "already_there": 3, "failed": 0}
    assert json.loads((out / "report.json").read_text()) == again


def test_generate_stage_without_saved_pipeline_says_so(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("")
    with pytest.raises(FileNotFoundError, match="no saved pipeline"):
        generate(_stage_params(tmp_path / "nothing", prompts, tmp_path / "out"), _fingerprint())


# --- the clip length a pipeline records ------------------------------------------------------------------------------


def test_a_pipeline_saved_without_its_duration_loads_and_generates_the_default_length(tiny_pipeline, tmp_path):
    """Pipelines saved before the clip length was recorded (no ``duration`` in model_index.json) still load, and
    generate DEFAULT_CLIP_SECONDS, the length every pipeline was trained on then."""
    tiny_pipeline.register_to_config(duration=0.64)
    tiny_pipeline.save_pretrained(tmp_path / "new")
    assert json.loads((tmp_path / "new" / "model_index.json").read_text())["duration"] == 0.64
    tiny_pipeline.save_pretrained(tmp_path / "old")
    index = tmp_path / "old" / "model_index.json"
    config = json.loads(index.read_text())
    del config["duration"]
    index.write_text(json.dumps(config))

    hop = tiny_pipeline.mel_settings.hop_length
    for folder, seconds in (("new", 0.64), ("old", DEFAULT_CLIP_SECONDS)):
        pipe = SEAPPipeline.from_pretrained(tmp_path / folder)
        assert pipe.config.duration == seconds
        audio = pipe("a dog barking", tone(1.0), num_inference_steps=1, progress=False).audios
        # the length asked for, to the mel frames the codec rounds it to
        assert abs(audio.shape[-1] - seconds * SR) <= 8 * hop, (folder, audio.shape)
