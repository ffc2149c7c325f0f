"""RIVER for vpkit: the authors' VQVAE (`river-vqvae`) and latent flow matching with sparse conditioning (`river`)."""
