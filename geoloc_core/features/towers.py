"""An open_clip VisionTransformer cut in two for partial fine-tuning: a frozen prefix, a trainable suffix.

Training only the last k blocks lets the prefix (patch embedding and the first L - k blocks) run
once per photo and be cached: every later epoch and every re-embedding costs k blocks, not L. On
two CPU cores that is what turns a fine-tuning round from hours into minutes.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def prefix_tokens(tower: nn.Module, pixels: torch.Tensor, unfrozen_blocks: int) -> torch.Tensor:
    """(B, 3, S, S) pixels -> (B, T, D) tokens entering the first unfrozen block."""
    blocks = tower.transformer.resblocks
    x = tower._embeds(pixels)
    for block in blocks[: len(blocks) - unfrozen_blocks]:
        x = block(x)
    return x


def finish_forward(tower: nn.Module, tokens: torch.Tensor, unfrozen_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`prefix_tokens`' output -> the tower's own (pooled, patch tokens): the two together are `tower(pixels)`."""
    blocks = tower.transformer.resblocks
    x = tokens
    for block in blocks[len(blocks) - unfrozen_blocks:]:
        x = block(x)
    pooled, patches = tower._pool(x)
    return (pooled @ tower.proj if tower.proj is not None else pooled), patches


class Suffix(nn.Module):
    """The last k blocks, the final norm and projection of a tower: (B, T, D) tokens -> (B, D_out) pooled.

    It holds copies, so training it never changes the encoder it was cut from. Supports open_clip's
    plain towers (token or average pooling, norm before pooling), which is what DINOv2 and CLIP use.
    """

    def __init__(self, tower: nn.Module, unfrozen_blocks: int):
        super().__init__()
        blocks = tower.transformer.resblocks
        if not 0 <= unfrozen_blocks <= len(blocks):
            raise ValueError(f"unfrozen_blocks must be in 0..{len(blocks)}, got {unfrozen_blocks}")
        if tower.attn_pool is not None or tower.final_ln_after_pool or tower.pool_type not in ("tok", "avg"):
            raise ValueError("partial fine-tuning supports towers with token or average pooling only")
        self.blocks = nn.ModuleList(copy.deepcopy(list(blocks[len(blocks) - unfrozen_blocks:])))
        self.ln_post = copy.deepcopy(tower.ln_post)
        self.proj = copy.deepcopy(tower.proj)
        self.pool_type = tower.pool_type

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) tokens entering the last k blocks -> (B, D_out) pooled, as the whole tower would pool them."""
        x = tokens
        if self.pool_type == "tok":
            for block in self.blocks[:-1]:
                x = block(x)
            pooled = self.ln_post(class_token_block(self.blocks[-1], x) if len(self.blocks) else x)[:, 0]
        else:
            for block in self.blocks:
                x = block(x)
            pooled = self.ln_post(x)[:, 1:].mean(dim=1)
        return pooled @ self.proj if self.proj is not None else pooled


def class_token_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last block for the class token only: (B, T, D) -> (B, 1, D), equal to `block(x)[:, :1]`.

    Token pooling reads nothing else of the last block, so its queries, attention rows and MLP for
    the T - 1 patch tokens are dead work; only their keys and values are needed. That is most of a
    block, forward and backward, on every training step and every re-embedding.
    """
    normed = block.ln_1(x)
    cls = x[:, :1] + block.ls_1(block.attention(q_x=normed[:, :1], k_x=normed, v_x=normed))
    return cls + block.ls_2(block.mlp(block.ln_2(cls)))
