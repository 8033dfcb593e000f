"""Prefect tasks: one per pipeline stage, each a thin call of the seap_model function behind it."""

from __future__ import annotations

from prefect import task

from seap_model.cache import build_cache
from seap_model.config import Params
from seap_model.data.download import download
from seap_model.data.segment import build_serst
from seap_model.evaluate import evaluate
from seap_model.finetune import finetune
from seap_model.generate import generate_batch
from seap_model.pretrain_encoder import pretrain_encoder
from seap_model.pretrain_vae import pretrain_vae


@task(name="download")
def download_task(params: Params) -> dict:
    return download(params)


@task(name="segment")
def segment_task(params: Params) -> dict:
    return build_serst(params)


@task(name="pretrain-encoder")
def pretrain_encoder_task(params: Params) -> dict:
    return pretrain_encoder(params)


@task(name="pretrain-vae")
def pretrain_vae_task(params: Params) -> dict:
    return pretrain_vae(params)


@task(name="cache")
def cache_task(params: Params) -> dict:
    return build_cache(params)


@task(name="finetune")
def finetune_task(params: Params) -> dict:
    return finetune(params)


@task(name="evaluate")
def evaluate_task(params: Params) -> dict:
    return evaluate(params)


@task(name="generate")
def generate_task(params: Params) -> dict:
    return generate_batch(params)
