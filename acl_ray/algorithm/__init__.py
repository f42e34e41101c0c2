"""Floor 1: plain PyTorch ACL: data, models, attacks, losses, pre-training, finetuning, evaluation. No Ray."""
