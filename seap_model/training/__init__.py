"""Training pieces shared by the training stages: data from the cache, batches, losses, schedulers,
optimiser, the denoiser module, checkpoints and the loops (fine-tuning, encoder and VAE pretraining)."""
