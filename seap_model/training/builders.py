"""What a fine-tune trains and what it saves: the denoiser assembled from the cache's shapes (the trainable
networks, the optimiser's parameter groups) and, after training, the ``SEAPPipeline`` that puts the trained
parts together with the frozen ones."""

from __future__ import annotations

from diffusers import DDPMScheduler

from seap_model.config import Params
from seap_model.models.builders import build_styled_unet
from seap_model.models.loading import load_codec, load_reference_encoder
from seap_model.models.reference_attention import ReferenceAttention
from seap_model.models.reference_encoder import ReferenceEncoder
from seap_model.models.text_encoder import load_text_encoder
from seap_model.models.vocoder import make_vocoder
from seap_model.pipeline import SEAPPipeline
from seap_model.training.dataset import SplitCache
from seap_model.training.denoiser import StyledDenoiser, trainable_parameters
from seap_model.training.schedulers import sampling_scheduler


def build_denoiser(params: Params, train: SplitCache, text_dim: int) -> tuple[StyledDenoiser, list[dict], list]:
    """The model to train (U-Net; the adapter for ``style`` cross_attention/concat, the reference attention for
    decoupled; the encoder with ``train_encoder``), its optimiser parameter groups and every trained parameter."""
    fp = params.finetune
    frames = fp.uses_frames
    if frames and train.reference_frames is None and not fp.train_encoder:
        raise ValueError(
            f"finetune.adapter.reference 'frames': {fp.cache_dir} holds no reference frames; re-run the cache stage"
        )
    reference_dim = (
        (train.reference_frames.shape[-1] if train.reference_frames is not None else None)
        if frames
        else train.references.shape[-1]
    )
    encoder = trainable_encoder(params, train) if fp.train_encoder else None
    if reference_dim is None:  # frames from the encoder being trained
        reference_dim = encoder.frame_dim
    unet, adapter, reference_attention = build_styled_unet(fp, train.latents.shape[1], text_dim, reference_dim)
    trainable = trainable_parameters(unet, adapter, fp.trainable, reference_attention)
    groups: list[dict] = [{"params": trainable}]
    if encoder is not None:
        groups.append({"params": list(encoder.parameters()), "lr": fp.lr * fp.encoder_lr_scale})
        trainable = trainable + groups[-1]["params"]
    if fp.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    return StyledDenoiser(unet, adapter, encoder, reference_attention, frames), groups, trainable


def trainable_encoder(params: Params, train: SplitCache) -> ReferenceEncoder:
    """The pretrained H/ASP encoder, set up to be fine-tuned with the adapter (``finetune.train_encoder``)."""
    if train.reference_audio is None:
        raise ValueError(
            f"finetune.train_encoder: {params.finetune.cache_dir} has no reference waveforms; "
            "re-run the cache stage with finetune.train_encoder: true"
        )
    encoder = load_reference_encoder(params.encoder.out_dir)
    if not isinstance(encoder, ReferenceEncoder):
        raise ValueError(f"finetune.train_encoder: {params.encoder.out_dir} holds a {type(encoder).__name__}")
    return encoder.requires_grad_(True)


def assemble_pipeline(
    params: Params,
    unet,
    adapter,
    train_scheduler: DDPMScheduler,
    reference_encoder: ReferenceEncoder | None = None,
    reference_attention: ReferenceAttention | None = None,
) -> SEAPPipeline:
    """Put the trained parts together with the frozen ones (and the pretrained encoder unless it was trained)."""
    tokenizer, text_model = load_text_encoder(params.text_encoder.name)
    if reference_encoder is None:
        reference_encoder = load_reference_encoder(params.encoder.out_dir)
    return SEAPPipeline(
        unet=unet.eval(),
        scheduler=sampling_scheduler(train_scheduler),
        text_encoder=text_model,
        tokenizer=tokenizer,
        reference_encoder=reference_encoder.eval(),
        adapter=adapter.eval() if adapter is not None else None,
        reference_attention=reference_attention.eval() if reference_attention is not None else None,
        codec=load_codec(params.codec.out_dir),
        vocoder=make_vocoder(params.vocoder, params.audio.mel()),
        max_text_length=params.text_encoder.max_length,
        duration=params.finetune.train_seconds,
    )
