"""Building and training the reference encoder: H/ASP from scratch (clova's speaker-verification recipe), or
the frozen YAMNet encoder centred on the training references."""

from __future__ import annotations

import logging
import math

import torch
from diffusers.optimization import get_cosine_schedule_with_warmup
from torch import nn

from seap_model.config import Params
from seap_model.eval.encoder import embed, evaluate
from seap_model.models.reference_encoder import ReferenceEncoder
from seap_model.models.yamnet_encoder import YAMNetEncoder
from seap_model.progress import progress
from seap_model.training.losses import SoftmaxProtoLoss
from seap_model.training.pairs import PairSampler, References, spec_augment

log = logging.getLogger(__name__)


def build_encoder(params: Params) -> ReferenceEncoder:
    """An untrained H/ASP encoder of the configured shape."""
    enc = params.encoder
    return ReferenceEncoder(
        **params.audio.model_dump(),
        channels=enc.channels,
        layers=enc.layers,
        embedding_dim=enc.embedding_dim,
        min_seconds=enc.min_seconds,
        pad_short=enc.pad_short,
    )


def build_yamnet(params: Params, train: References) -> YAMNetEncoder:
    """The frozen YAMNet encoder, centred on the training references (nothing else is fitted)."""
    enc = params.encoder
    encoder = YAMNetEncoder(
        params.audio.sample_rate, pooling=enc.yamnet_pooling, min_seconds=enc.min_seconds, pad_short=enc.pad_short
    )
    encoder.fit_center(train.waves)
    return encoder.eval()


def train_hasp(
    params: Params, train: References, n_labels: int, device: torch.device
) -> tuple[ReferenceEncoder, list[float]]:
    """Train an H/ASP encoder (initialised like ``build_encoder`` after ``torch.manual_seed(seed)``);
    return it in eval mode and the loss of every step."""
    enc = params.encoder
    n_pairs = min(enc.batch_size // 2, len(train.groups.unique()))
    torch.manual_seed(params.seed)
    encoder = build_encoder(params).to(device)
    criterion = SoftmaxProtoLoss(enc.embedding_dim, n_labels, enc.am_margin, enc.am_scale, enc.proto_weight).to(device)
    generator = torch.Generator().manual_seed(params.seed)
    sampler = PairSampler(train, round(enc.crop_seconds * params.audio.sample_rate), generator)
    teacher, head = None, nn.Identity()
    if enc.distill_weight > 0:  # the frozen YAMNet encoder's embedding of each training reference
        teacher = embed(build_yamnet(params, train), train.waves, device).to(device)
        head = nn.Linear(enc.embedding_dim, teacher.shape[1]).to(device)
    opt = torch.optim.AdamW([*encoder.parameters(), *criterion.parameters(), *head.parameters()], lr=enc.lr)
    schedule = get_cosine_schedule_with_warmup(opt, max(enc.steps // 20, 1), enc.steps)
    log.info(
        "encoder: %.2f M parameters on %s, %d pairs/step",
        sum(p.numel() for p in encoder.parameters()) / 1e6,
        device,
        n_pairs,
    )
    losses: list[float] = []
    encoder.train()
    bar = progress(range(enc.steps), desc="encoder", unit="step")
    every = max(1, enc.steps // 10)
    for step in bar:
        crops, y, index = sampler.draw(n_pairs)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            features = spec_augment(encoder.features(crops.to(device)), enc.freq_mask, enc.time_mask, generator)
            z = encoder.embed_features(features)
        loss = criterion(*z.float().chunk(2), y.to(device))
        if teacher is not None:
            agree = nn.functional.cosine_similarity(head(z.float()), teacher[index.to(device)], dim=-1)
            loss = loss + enc.distill_weight * (1 - agree).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        if (step + 1) % every == 0:
            log.info("encoder step %d/%d: loss %.4f", step + 1, enc.steps, sum(losses[-every:]) / every)
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError("encoder training diverged (non-finite loss); lower encoder.lr")
    return encoder.eval(), losses


def score_with_untrained(
    params: Params,
    encoder: ReferenceEncoder | YAMNetEncoder,
    train: References,
    held: References,
    n_labels: int,
    device,
) -> dict:
    """``encoder``'s probe accuracy and same-source EER on ``held`` (``eval.encoder.evaluate``), next to those of an
    untrained H/ASP encoder of the configured shape with the initial weights ``train_hasp`` started from (the
    ``untrained_*`` keys)."""
    torch.manual_seed(params.seed)
    untrained = build_encoder(params).to(device)
    trained_metrics = evaluate(encoder, train, held, n_labels, device)
    untrained_metrics = evaluate(untrained, train, held, n_labels, device)
    return {**trained_metrics, **{f"untrained_{k}": v for k, v in untrained_metrics.items()}}
