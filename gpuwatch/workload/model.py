"""A small decoder-only transformer language model, sized entirely by flags.

It is here to be a realistic load, not a good model: the same code finishes a few
steps in seconds on a CPU (2 layers of width 128) and saturates a GPU at a width of
1024 and a context of 1024 under bf16. Dropout is on by default so that resuming
exactly depends on restoring the RNG, as a real job's would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gpuwatch.workload.config import TrainConfig


class Block(nn.Module):
    """Pre-norm attention and MLP with residuals (GPT-2 layout)."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            nn.GELU(),
            nn.Linear(4 * d_model, d_model),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(width, dim=2)
        q, k, v = (t.view(batch, seq, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        attn = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(batch, seq, width)))
        return x + self.drop(self.mlp(self.ln2(x)))


class TinyLM(nn.Module):
    """Token and position embeddings, ``layers`` blocks, a head tied to the embedding."""

    def __init__(
        self, vocab_size: int, d_model: int, layers: int, heads: int, seq_len: int, dropout: float
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(seq_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.tokens.weight
        self.apply(_init_weights)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of ``inputs`` (batch, seq) against ``targets``."""
        seq = inputs.shape[1]
        where = torch.arange(seq, device=inputs.device)
        x = self.drop(self.tokens(inputs) + self.positions(where))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))


def _init_weights(module: nn.Module) -> None:
    # GPT-2's initialisation: with PyTorch's default N(0, 1) embeddings the tied head
    # starts with logits in the tens and a loss far above log(vocab).
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def build_model(config: TrainConfig) -> TinyLM:
    """The model ``config`` describes, initialised from the current torch RNG."""
    return TinyLM(
        vocab_size=config.vocab_size,
        d_model=config.d_model,
        layers=config.layers,
        heads=config.heads,
        seq_len=config.seq_len,
        dropout=config.dropout,
    )


def parameter_count(model: nn.Module) -> int:
    """Distinct parameters (the tied head counts once)."""
    return sum(p.numel() for p in model.parameters())
