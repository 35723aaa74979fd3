"""E2GAN: efficient text-conditioned editing GANs distilled from slow editors, adapted per concept with LoRA."""
