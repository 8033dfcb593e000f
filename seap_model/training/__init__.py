"""Training pieces shared by the training stages: the fine-tune cache (writing and reading it), batches, losses,
schedulers, optimiser, model builders, the denoiser module, checkpoints and the loops (one fine-tuned system,
encoder and VAE pretraining)."""
