"""A small Vision Transformer for 64x64 inputs (TinyImageNet).

Defaults: patch 8 (a 64x64 image is 8x8 = 64 patches, plus a class token: 65 tokens), width 256,
depth 6, 8 heads of 32, MLP ratio 2 (hidden 512, GELU), pre-norm blocks
(x + attn(LN(x)), then x + mlp(LN(x))), a final LayerNorm on the class token and a linear head;
no dropout. 3.28M parameters with 200 classes; 0.44 GFLOPs per 64x64 image forward.

Patch embedding: a conv with kernel and stride equal to the patch size. The class token and the
learned position embeddings are one parameter, ``token_bias`` (tokens x width), added to the
sequence [0, patch_1, ..., patch_P]: row 0 is the class token (plus its position embedding, which
it would only ever be summed with), rows 1..P are the patch position embeddings, so the model is
the standard one. Its name ends in "bias" on purpose: PWMP scoring zeroes every bias, and the
position embeddings and class token are additive constants that carry no input-to-output paths
(METHOD.md: position embeddings and biases zero in the scoring pass).

Attention is plain Linear layers (``qkv`` and ``proj``) around an explicit
softmax(q k^T / sqrt(d)) v: the fused ``scaled_dot_product_attention`` CPU kernel gives NaN
gradients in float64 on the scoring pass's huge logits, and with 65 tokens the explicit form costs
little. Norms are ``nn.LayerNorm`` modules, so the scoring pass can swap them for |gamma| scaling.

Growable weights: the patch-embedding conv, every block's ``attn.qkv``, ``attn.proj``,
``mlp.fc1``, ``mlp.fc2`` and the classification head (every Linear and Conv2d weight). LayerNorm
gammas, biases and ``token_bias`` are not edges.

Initialisation: truncated normal (std 0.02) for Linear weights and ``token_bias``, zero biases,
LayerNorm 1/0, the conv's PyTorch default. No weight starts at exactly 0 (PHEW never walks a zero
weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from growth.config import ModelConfig
from growth.config.checks import above, at_least, in_range, key
from growth.errors import ConfigError
from growth.kinds import MODELS
from growth.models.common import check_classes, image_shape, linear_and_conv_weights, model_name


@dataclass
class ViTConfig(ModelConfig):
    name: str = model_name("vit")
    patch_size: int = key(8, at_least(1))
    dim: int = key(256, at_least(1))
    # Bounded so that building the model to check it (on the meta device) stays quick.
    depth: int = key(6, in_range(1, 1000, valid="a block count in [1, 1000]"))
    heads: int = key(8, at_least(1))
    mlp_ratio: float = key(2.0, above(0))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        # explicit softmax rather than the fused kernel: the fused CPU kernel's float64 backward
        # returns NaN on the huge logits of the PWMP scoring pass (all-ones input, |W|)
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        out = attn @ v  # (n, heads, t, d / heads)
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(
        self,
        image_size: tuple[int, int] = (64, 64),
        num_classes: int = 200,
        in_channels: int = 3,
        patch_size: int = 8,
        dim: int = 256,
        depth: int = 6,
        heads: int = 8,
        mlp_ratio: float = 2.0,
    ):
        super().__init__()
        h, w = image_size
        if h % patch_size or w % patch_size:
            raise ValueError(f"patch size {patch_size} does not divide the image size {h}x{w}")
        if dim % heads:
            raise ValueError(f"width {dim} is not a multiple of the number of heads {heads}")
        self.num_patches = (h // patch_size) * (w // patch_size)
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.token_bias = nn.Parameter(torch.zeros(1, self.num_patches + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, int(dim * mlp_ratio)) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.token_bias, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def growable_weights(self) -> list[str]:
        return linear_and_conv_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (n, patches, dim)
        x = F.pad(x, (0, 0, 1, 0)) + self.token_bias  # slot 0 is the class token
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


@MODELS.register("vit", schema=ViTConfig)
def build_vit(cfg, input_shape, num_classes) -> ViT:
    name = cfg.name
    channels, h, w = image_shape(name, input_shape, "e.g. (3, 64, 64) for TinyImageNet")
    p = int(cfg.patch_size)
    problems = []
    if p < 1 or h % p or w % p:
        problems.append(f"model.patch_size={p} must divide the image height and width ({h}x{w})")
    if cfg.dim < 1 or cfg.heads < 1 or cfg.dim % cfg.heads:
        problems.append(f"model.dim={cfg.dim} must be a positive multiple of model.heads={cfg.heads}")
    if cfg.depth < 1:
        problems.append(f"model.depth={cfg.depth} must be at least 1")
    if int(cfg.dim * cfg.mlp_ratio) < 1:
        problems.append(f"model.mlp_ratio={cfg.mlp_ratio} leaves no hidden units")
    if problems:
        raise ConfigError(f"model.name={name}: " + "; ".join(problems))
    return ViT(
        (h, w),
        check_classes(name, num_classes),
        channels,
        patch_size=p,
        dim=int(cfg.dim),
        depth=int(cfg.depth),
        heads=int(cfg.heads),
        mlp_ratio=float(cfg.mlp_ratio),
    )
