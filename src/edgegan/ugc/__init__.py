"""UGC: label-efficient GAN compression (semi-supervised NAS, online multi-teacher distillation)."""
