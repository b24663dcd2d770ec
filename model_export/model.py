"""A SASRec-style sequential recommender: causal self-attention over a user's recent items.

Input: item rows (1..N, 0 = padding), right-aligned and left-padded to ``max_len``, so the most
recent item is always at the last position; aligned with them, the bucketed time gap to the
previous event (interest drift: a burst reads differently from a return after months) and the
scenario (platform/surface) of each event, so one model serves several surfaces. Output of
:meth:`SASRec.user_vector`: the last hidden state, whose dot product with the (tied) item matrix
scores every item as the next one.

The item matrix is a learned id embedding plus a trained projection of the item's frozen text
embedding (all-MiniLM-L6-v2, :mod:`model_export.text_embedding`). Items without training events have no
id row (masked to zero), so they are scored from their text alone: the cold-start path. Dropping a
random share of id rows at each step teaches the text path to stand alone, and items without events
are left out of the training softmax, so that "no events yet" is not learnt as "bad". A text-only row
is weaker than a trained one (the id adds to it), so it would seldom reach a top k even when relevant;
:meth:`SASRec.calibrate_text_only` rescales text-only *output* rows (:meth:`SASRec.output_matrix`)
until a relevant new item reaches the top k as often as a relevant known one. That is measured on
stand-ins for new items: a few trained items whose text the projection is kept from fitting
(``text_fixed`` in :meth:`SASRec.loss`), on next-item events held out of the loss.

Trained with full softmax cross-entropy over all items at every position (or a sampled softmax,
:attr:`SASRec.loss`), which beats sampled BCE by a wide margin on MovieLens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model_export.features import GAP_BUCKETS

PAD = 0  # row 0 of the item table is padding: it never gets a gradient and is never recommended


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of :class:`SASRec` (the number of items comes from the data)."""

    # Recent items the model reads; MovieLens users' next choice depends mostly on the last few dozen.
    max_len: int = 50
    # Embedding width: 64 is enough for ~4k items and keeps CPU scoring and training cheap.
    d: int = 64
    # Two causal blocks, as in the SASRec paper on MovieLens; more overfits ML-100k.
    n_blocks: int = 2
    # One head per 64 dims: with d=64 a single head works as well as two and is faster.
    n_heads: int = 1
    # Dropout on embeddings, attention and FFN: ML-100k is small and overfits quickly without it.
    dropout: float = 0.2
    # FFN width as a multiple of d, as in standard transformer blocks.
    ffn_mult: int = 4
    # Context features; all False is the plain id-only SASRec (the `sasrec-id` baseline).
    time_gaps: bool = True
    scenarios: bool = True
    text: bool = True
    # Share of item id rows zeroed at each training step (text models only): the text path must
    # rank well alone, as it does for items that arrive after training.
    id_dropout: float = 0.1


# Bounds of the text-only scale search: past ~4x, text-only rows outrank every trained one.
_MAX_TEXT_ONLY_SCALE = 4.0
_SCALE_BISECTIONS = 20


class _Block(nn.Module):
    """Pre-norm causal self-attention + feed-forward, written out so that ONNX export is plain ops."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.d % cfg.n_heads:
            msg = f"d={cfg.d} must be divisible by n_heads={cfg.n_heads}"
            raise ValueError(msg)
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.d)
        self.qkv = nn.Linear(cfg.d, 3 * cfg.d)
        self.proj = nn.Linear(cfg.d, cfg.d)
        self.ln2 = nn.LayerNorm(cfg.d)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.d, cfg.ffn_mult * cfg.d),
            nn.GELU(),
            nn.Linear(cfg.ffn_mult * cfg.d, cfg.d),
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: Hidden states, (B, L, d).
            allowed: Which key each query may attend to, bool (B, 1, L, L).

        Returns:
            The new hidden states, (B, L, d).
        """
        b, seq, d = x.shape
        hd = d // self.n_heads
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)  # 3 x (B, L, d)
        q, k, v = (t.reshape(b, seq, self.n_heads, hd).transpose(1, 2) for t in (q, k, v))  # (B, H, L, hd)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)  # (B, H, L, L)
        att = att.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
        # Dropout on the residual branches only: dropout on the (B, L, 4d) FFN activations and the
        # attention weights costs ~40% of a CPU step (bernoulli sampling) for no gain on MovieLens.
        y = (att @ v).transpose(1, 2).reshape(b, seq, d)  # (B, L, d)
        x = x + self.drop(self.proj(y))
        return x + self.drop(self.ffn(self.ln2(x)))  # (B, L, d)


class SASRec(nn.Module):
    """Causal self-attention next-item model with a tied item matrix (id + projected text) as output head."""

    causal: torch.Tensor  # bool (max_len, max_len), a buffer
    eye: torch.Tensor  # bool (max_len, max_len), a buffer
    has_id: torch.Tensor  # float (N + 1,): 1 for items with a learned id row, a buffer
    text_feat: torch.Tensor  # float (N + 1, text_dim): frozen text embeddings, a buffer
    text_only_scale: torch.Tensor  # float (): output scale of rows without an id, a buffer

    def __init__(self, n_items: int, cfg: ModelConfig, n_scenarios: int = 0, text_dim: int = 0) -> None:
        """Build the model.

        Args:
            n_items: Number of real items N; the item table has N + 1 rows (row 0 = padding).
            cfg: Hyper-parameters.
            n_scenarios: Known scenario names (ids 2..n_scenarios + 1; 0 padding, 1 unknown).
            text_dim: Width of the item text embeddings (0: no text tower, whatever ``cfg.text``).
        """
        super().__init__()
        self.cfg = cfg
        self.n_items = n_items
        self.n_scenarios = n_scenarios
        self.text_dim = text_dim if cfg.text else 0
        self.item_emb = nn.Embedding(n_items + 1, cfg.d, padding_idx=PAD)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d)
        self.gap_emb = nn.Embedding(GAP_BUCKETS, cfg.d, padding_idx=PAD) if cfg.time_gaps else None
        self.scenario_emb = nn.Embedding(n_scenarios + 2, cfg.d, padding_idx=PAD) if cfg.scenarios else None
        self.text_proj = nn.Linear(self.text_dim, cfg.d) if self.text_dim else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_blocks))
        self.ln_f = nn.LayerNorm(cfg.d)
        # Causal mask, plus the diagonal for every query so that padded rows never softmax over nothing.
        self.register_buffer("causal", torch.tril(torch.ones(cfg.max_len, cfg.max_len, dtype=torch.bool)))
        # A buffer, not torch.eye in forward: onnxruntime has no bool EyeLike kernel.
        self.register_buffer("eye", torch.eye(cfg.max_len, dtype=torch.bool))
        has_id = torch.ones(n_items + 1)
        has_id[PAD] = 0.0
        self.register_buffer("has_id", has_id)
        self.register_buffer("text_feat", torch.zeros(n_items + 1, self.text_dim))
        self.register_buffer("text_only_scale", torch.tensor(1.0))
        for emb in (self.item_emb, self.pos_emb, self.gap_emb, self.scenario_emb):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()
            for emb in (self.gap_emb, self.scenario_emb):
                if emb is not None:
                    emb.weight[PAD].zero_()

    def set_items(self, has_id: torch.Tensor | None = None, text: torch.Tensor | None = None) -> None:
        """Set which rows have a learned id (bool/float (N + 1,)) and the frozen text embeddings (N + 1, text_dim)."""
        with torch.no_grad():
            if has_id is not None:
                self.has_id.copy_(has_id.float())
                self.has_id[PAD] = 0.0
            if text is not None and self.text_dim:
                self.text_feat.copy_(text)
                self.text_feat[PAD].zero_()

    def item_matrix(self, id_keep: torch.Tensor | None = None, text_fixed: torch.Tensor | None = None) -> torch.Tensor:
        """The tied item matrix (N + 1, d): id row (where the item has one) + projected text; row 0 zero.

        Args:
            id_keep: Optional float (N + 1,) mask of id rows to keep (id dropout while training).
            text_fixed: Optional bool (N + 1,) rows whose projected text passes no gradient to the
                projection (the calibration items of :meth:`loss`).
        """
        keep = self.has_id if id_keep is None else self.has_id * id_keep
        table = self.item_emb.weight * keep[:, None]  # (N + 1, d)
        if self.text_proj is not None:
            nonpad = (torch.arange(self.n_items + 1, device=table.device) != PAD).float()
            text = self.text_proj(self.text_feat)  # (N + 1, d)
            if text_fixed is not None:
                text = torch.where(text_fixed[:, None], text.detach(), text)
            table = table + text * nonpad[:, None]
        return table

    def output_matrix(self) -> torch.Tensor:
        """The item matrix that scores next items (N + 1, d): :meth:`item_matrix` with text-only rows rescaled.

        Histories read :meth:`item_matrix` unscaled (as in training); only the ranking of items without
        an id row is calibrated against the trained ones.
        """
        table = self.item_matrix()
        if self.text_proj is None:
            return table
        text_only = (self.has_id == 0) & (torch.arange(self.n_items + 1, device=table.device) != PAD)
        scale = torch.where(text_only, self.text_only_scale, torch.ones_like(self.has_id))
        return table * scale[:, None]

    def calibrate_text_only(
        self,
        queries: torch.Tensor,
        targets: torch.Tensor,
        exposure: float,
        k: int,
        exclude: torch.Tensor | None = None,
    ) -> float:
        """Set the output scale of text-only rows so that new items are recommended when they are relevant.

        A text-only row is weaker than a trained one (its text part alone), so unscaled it rarely reaches
        the top k even when it is the item the user wants next. Each (query, target) pair asks: if the
        target were new, would its text-only row reach the top ``k`` among the trained rows? The scale is
        the smallest one for which that happens ``exposure`` times as often as it does for the target's
        trained row. The estimate holds for truly new items only if the pairs were not trained on and the
        projection never fitted the targets' texts (:func:`model_export.calibration.calibration_items`).

        Args:
            queries: User vectors, float (B, d).
            targets: Their next items, rows with an id, int64 (B,).
            exposure: Wanted recall@k of a target as a text-only row, over its recall@k as a trained
                row: 1.0 is equal opportunity; 0 leaves the scale at 1.
            k: The cut-off.
            exclude: Optional bool (B, N + 1): items that do not compete for a pair's top k (the
                user's own items, filtered when serving); the target itself is never excluded.

        Returns:
            The scale (1.0 for a model without text, without pairs or with ``exposure`` 0).
        """
        scale = 1.0
        if self.text_proj is not None and exposure > 0 and len(targets):
            with torch.no_grad():
                scores = (queries @ self.item_matrix().T).masked_fill(self.has_id == 0, float("-inf"))  # (B, N + 1)
                if exclude is not None:
                    scores = scores.masked_fill(exclude.scatter(1, targets[:, None], False), float("-inf"))
                hit = scores.gather(1, targets[:, None])  # (B, 1)
                known_recall = float(((scores > hit).sum(1) < k).float().mean())
                text_hit = (queries * self.text_proj(self.text_feat[targets])).sum(1, keepdim=True)  # (B, 1)
                others = scores.scatter(1, targets[:, None], float("-inf"))  # the target competes as new

                def new_recall(s: float) -> float:
                    return float(((others > s * text_hit).sum(1) < k).float().mean())

                lo, hi = 1.0, _MAX_TEXT_ONLY_SCALE
                if known_recall > 0 and new_recall(lo) < exposure * known_recall:
                    for _ in range(_SCALE_BISECTIONS):
                        mid = (lo + hi) / 2
                        lo, hi = (mid, hi) if new_recall(mid) < exposure * known_recall else (lo, mid)
                    scale = hi
        self.text_only_scale.fill_(scale)
        return scale

    def forward(
        self,
        item_seq: torch.Tensor,
        gaps: torch.Tensor | None = None,
        scenarios: torch.Tensor | None = None,
        table: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden state at every position.

        Args:
            item_seq: Item rows, int64 (B, L) with L = max_len, right-aligned, left-padded with 0.
            gaps: Time-gap bucket ids aligned with ``item_seq``, int64 (B, L) (ignored without ``cfg.time_gaps``).
            scenarios: Scenario ids aligned with ``item_seq``, int64 (B, L) (ignored without ``cfg.scenarios``).
            table: The item matrix to read (default :meth:`item_matrix`).

        Returns:
            Hidden states, float32 (B, L, d); position t summarises items up to t.
        """
        seq = item_seq.shape[1]
        valid = item_seq != PAD  # (B, L)
        # query t may see key s <= t if s is a real item; every query sees itself.
        allowed = (self.causal[:seq, :seq] & valid[:, None, :]) | self.eye[:seq, :seq]  # (B, L, L)
        allowed = allowed[:, None]  # (B, 1, L, L)
        table = self.item_matrix() if table is None else table
        x = table[item_seq] * math.sqrt(self.cfg.d) + self.pos_emb.weight[:seq]  # (B, L, d)
        if self.gap_emb is not None and gaps is not None:
            x = x + self.gap_emb(gaps)
        if self.scenario_emb is not None and scenarios is not None:
            x = x + self.scenario_emb(scenarios)
        x = self.drop(x) * valid[..., None]  # (B, L, d): padding contributes nothing
        for block in self.blocks:
            x = block(x, allowed)  # (B, L, d)
        return self.ln_f(x)  # (B, L, d)

    def user_vector(
        self, item_seq: torch.Tensor, gaps: torch.Tensor | None = None, scenarios: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The user's next-item query vector: the hidden state at the last (most recent) position.

        Returns:
            float32 (B, d); ``user_vector @ item_matrix().T`` scores all N + 1 rows.
        """
        return self.forward(item_seq, gaps, scenarios)[:, -1, :]  # (B, d)

    def loss(
        self,
        item_seq: torch.Tensor,
        targets: torch.Tensor,
        gaps: torch.Tensor | None = None,
        scenarios: torch.Tensor | None = None,
        negatives: int = 0,
        text_fixed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Softmax cross-entropy of the next item at every non-padded position.

        Args:
            item_seq: Inputs, int64 (B, L).
            targets: Next item at each position, int64 (B, L); 0 where there is none.
            gaps: Time-gap buckets, int64 (B, L).
            scenarios: Scenario ids, int64 (B, L).
            negatives: 0: full softmax over all items; else a sampled softmax against this many
                uniform negatives shared by the batch (a negative equal to the target is masked).
            text_fixed: Optional bool (N + 1,) items whose text the projection must not fit: they keep
                their id rows, and their text-only rows then stand in for never-seen items when
                :meth:`calibrate_text_only` is fed pairs with them as targets.

        Returns:
            The mean loss, a scalar.
        """
        id_keep = None
        if self.text_proj is not None and self.training and self.cfg.id_dropout > 0:
            id_keep = (torch.rand(self.n_items + 1, device=item_seq.device) >= self.cfg.id_dropout).float()
        table = self.item_matrix(id_keep, text_fixed)  # (N + 1, d)
        h = self.forward(item_seq, gaps, scenarios, table)  # (B, L, d)
        keep = targets != PAD  # (B, L)
        if not keep.any():  # e.g. a batch of held-out calibration targets only: nothing to learn from
            return (h.sum() + table.sum()) * 0.0
        h, tgt = h[keep], targets[keep]  # (T, d), (T,)
        if negatives <= 0:
            # Only real targets pay for the (., N + 1) logits: the softmax over all items dominates the cost.
            logits = h @ table.T  # (T, N + 1)
            # Padding and items without training events are never a next item here. Left in, the items
            # without events (new ones) would be negatives at every step and learn to rank last.
            logits = logits.masked_fill(self.has_id == 0, float("-inf"))
            return F.cross_entropy(logits, tgt)
        neg = torch.randint(1, self.n_items + 1, (negatives,), device=h.device)  # (S,)
        pos_logit = (h * table[tgt]).sum(-1, keepdim=True)  # (T, 1)
        neg_logits = h @ table[neg].T  # (T, S)
        never = (neg[None, :] == tgt[:, None]) | (self.has_id[neg] == 0)[None, :]  # (T, S)
        neg_logits = neg_logits.masked_fill(never, float("-inf"))
        logits = torch.cat([pos_logit, neg_logits], dim=1)  # (T, 1 + S): the target is class 0
        return F.cross_entropy(logits, torch.zeros(len(tgt), dtype=torch.long, device=h.device))
