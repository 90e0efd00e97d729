"""Learning regions: the region classifier over a ViT's last blocks (`classifier`) and the iterative fine-tuning
of Fushimi & Koike 2025 (`finetune`: w/o, FT1, FT2 ...).
"""
