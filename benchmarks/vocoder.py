"""Benchmark: what each way from log-mel back to audio keeps of held-out real clips, and what it costs.

    python benchmarks/vocoder.py [--serst data/serst] [--vocoder models/vocoder] [--hifigan PATH]
                                 [--codec models/vae] [--items N] [--out results/vocoder.json]

The clips are the test split's 2 s references (never seen by pretrain-vocoder, which reads the train split
only). Each is analysed to the pipeline's log-mel and brought back by every option:

* ``learned``: the learned vocoder pretrain-vocoder saved (``--vocoder``), with params.yaml's ``vocoder`` settings
  (its Griffin-Lim iterations), as the pipeline runs it;
* ``griffin_lim_32`` / ``griffin_lim_8``: least-squares mel inversion + Griffin-Lim (the old default);
* ``hifigan``: a HiFi-GAN in AudioLDM's layout, when ``--hifigan`` names one (none ships here);
* ``true_magnitude_griffin_lim_32``: Griffin-Lim from the clip's true linear magnitude, not from the mel. Not a
  vocoder (it reads the audio): it shows what Griffin-Lim can do when the magnitude is right.

and scored by ``seap_model.eval.vocoder`` against the original (YAMNet embedding cosine, top-1 kept, label hit,
FAD-infinity, KID), with the real clips' own label hit beside them. ``rtf`` is vocoder seconds per second of
audio at batch 8 with 2 torch threads, measured in the same run for every option. With ``--codec`` (a trained
codec folder, e.g. ``models/vae`` after ``seap pretrain-vae``) every vocoder option is also measured on the mel
after a codec encode/decode (``codec+NAME``): the path the evaluation's "real through codec + vocoder" row takes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--serst", default="data/serst")
    p.add_argument("--vocoder", default="models/vocoder")
    p.add_argument("--hifigan", default=None, help="a HiFi-GAN folder or hub id in AudioLDM's layout")
    p.add_argument("--codec", default=None, help="a trained codec folder: also measure codec + each vocoder")
    p.add_argument("--items", type=int, default=None, help="test references spread over the split (default: all)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/vocoder.json")
    a = p.parse_args()

    from seap_model.audio import LogMel, fit_length, load_audio
    from seap_model.batch.items import split_items
    from seap_model.config import VocoderParams, load_params
    from seap_model.eval import vocoder as bench
    from seap_model.eval.evaluators import YAMNetEvaluator
    from seap_model.eval.labels import load_label_table
    from seap_model.eval.metrics import item_hits
    from seap_model.eval.protocols import spread_indices
    from seap_model.models.loading import load_codec
    from seap_model.models.vocoder import GriffinLim, make_vocoder
    from seap_model.training.vocoder import magnitude

    torch.set_num_threads(a.threads)
    params = load_params(a.params)
    shipped = params.vocoder
    mel = params.audio.mel()
    seconds = 2.0
    items = split_items(a.serst, "test")
    items = [items[i] for i in spread_indices(len(items), a.items or len(items))]  # spread over the split
    samples = int(seconds * mel.sample_rate)
    waves = torch.stack([fit_length(load_audio(it.reference, mel.sample_rate), samples) for it in items])
    labels = [it.label for it in items]
    logmel = LogMel(mel)

    codec = load_codec(a.codec) if a.codec else None

    def through(vocoder, coded: bool = False):
        if coded:
            return lambda x: vocoder(codec.decode(codec.encode(logmel(x))))
        return lambda x: vocoder(logmel(x))

    true_gl = GriffinLim(mel.n_fft, mel.hop_length, n_iter=32)
    vocoders = {
        "learned": make_vocoder(shipped.model_copy(update={"type": "learned", "out_dir": a.vocoder}), mel),
        "griffin_lim_32": make_vocoder(VocoderParams(type="griffin_lim", griffin_lim_iters=32), mel),
        "griffin_lim_8": make_vocoder(VocoderParams(type="griffin_lim", griffin_lim_iters=8), mel),
    }
    if a.hifigan:
        vocoders["hifigan"] = make_vocoder(VocoderParams(type="hifigan", pretrained=a.hifigan), mel)
    options = {name: through(v) for name, v in vocoders.items()}
    if codec is not None:
        options |= {f"codec+{name}": through(vocoders[name], coded=True) for name in ("learned", "griffin_lim_32")}
    options["true_magnitude_griffin_lim_32"] = lambda x: true_gl(magnitude(x, mel))

    evaluator = YAMNetEvaluator(num_threads=a.threads)
    table, names = load_label_table(), evaluator.class_names
    real = bench.features(evaluator, waves.numpy(), mel.sample_rate)
    real_hits = item_hits(real.posteriors, labels, table, names)
    rows = {}
    for name, fn in options.items():
        audio, took = bench.reconstruct_all(fn, waves, a.batch_size)
        row = bench.score(real, bench.features(evaluator, audio.numpy(), mel.sample_rate), labels, table, names)
        row["label_hit_vs_real"] = round(row["label_hit"] / max(float(real_hits.mean()), 1e-12), 4)
        row["rtf"] = round(took / (len(waves) * seconds), 5)
        row["peak"] = round(float(audio.abs().max()), 4)
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    record = {
        "benchmark": "vocoder",
        "command": "python benchmarks/vocoder.py " + " ".join(sys.argv[1:]),
        "clips": f"{a.serst} test split references, {len(items)} clips of {seconds} s",
        "real_label_hit": round(float(real_hits.mean()), 4),
        "batch_size": a.batch_size,
        "threads": a.threads,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "vocoder": {k: v for k, v in vocoders["learned"].config.items() if not k.startswith("_")},
        "codec": a.codec,
        "options": rows,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(record, indent=2) + "\n")
    print("wrote", a.out, "| real label hit", record["real_label_hit"])


if __name__ == "__main__":
    main()
