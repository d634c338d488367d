"""DINO's mixed query selection (Zhang et al. 2022, Sec. 3.3).

The top-K encoder proposals by class-agnostic score (`ProposalSelection`, as in two-stage
Deformable DETR) give the decoder's initial reference boxes, detached, and through them the first
layer's query positions. The content queries stay learned embeddings: the selected tokens' features
are preliminary and may hold parts of several objects or only part of one, so DINO does not use
them as content. Without mixed selection ("pure" query selection) the content queries are the
selected tokens' projected encoder features, detached, as in DINO's own two-stage ablation.
"""
from torch import nn

from detrx.models.deformable_transformer import ObjectQueries
from detrx.models.two_stage import ProposalSelection


class MixedQuerySelection(ProposalSelection):
    """Args: as ProposalSelection, plus num_queries (the learned content queries) and mixed
    (learned content queries; False: the selected encoder features)."""

    def __init__(self, d_model, class_head, box_head, loss, num_queries, mixed=True):
        super().__init__(d_model, class_head, box_head, loss)
        self.mixed = mixed
        if mixed:
            self.content = nn.Embedding(num_queries, d_model)

    def forward(self, encoded, num_queries):
        """encoded: EncodedImages -> ObjectQueries: tgt [B, N, C], reference_points [B, N, 4], the
        encoder outputs; query_pos is None (the decoder computes it from the reference at each layer)."""
        reference, top, memory, encoder_outputs = self.select(encoded, num_queries)
        if self.mixed:
            if num_queries != self.content.num_embeddings:
                raise ValueError(f"num_queries must be the {self.content.num_embeddings} learned content queries, "
                                 f"got {num_queries}")
            tgt = self.content.weight[None].expand(memory.shape[0], -1, -1)  # [B, N, C]
        else:
            tgt = memory.gather(1, top[..., None].expand(-1, -1, memory.shape[-1])).detach()  # [B, N, C]
        return ObjectQueries(tgt, None, reference, encoder_outputs)
