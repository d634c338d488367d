"""Two-stage Deformable DETR (Zhu et al. 2020, Sec. 4.1 and App. A.4): the object queries come from
the encoder instead of being learned.

Every encoder token proposes a box: its pixel centre and a square whose side doubles with each
coarser level (0.05, 0.1, 0.2, ... of the unpadded image). Encoder-side heads score each token as
"object" (class-agnostic: every ground truth counts as class 0 in the encoder's matched loss) and
refine its box; the top num_queries tokens by that score become the decoder's queries. Their refined
boxes (detached) are the decoder's 4-d reference points, and a projection of the boxes' sine
encoding gives the queries' position and content vectors.
"""
import torch
from torch import nn

from detrx.models.deformable_transformer import ObjectQueries, inverse_sigmoid, pixel_centres
from detrx.models.position_encoding import sine_encoding

FINEST_PROPOSAL_SIDE = 0.05
VALID_PROPOSAL_RANGE = (0.01, 0.99)  # proposals with a coordinate outside are never selected


def encoder_proposals(encoded):
    """encoded: EncodedImages -> (proposals [B, S, 4] (cx, cy, w, h), normalised by each image's
    unpadded extent; valid [B, S] bool: not padding and every coordinate in VALID_PROPOSAL_RANGE)."""
    centres = pixel_centres(encoded.level_shapes, encoded.valid_ratios)  # [B, S, 2]
    sides = torch.cat([torch.full((h * w,), FINEST_PROPOSAL_SIDE * 2.0 ** level, device=centres.device)
                       for level, (h, w) in enumerate(encoded.level_shapes)])  # [S]
    proposals = torch.cat([centres, sides[None, :, None].expand(*centres.shape[:2], 2)], -1)
    low, high = VALID_PROPOSAL_RANGE
    valid = ~encoded.padding_mask & ((proposals > low) & (proposals < high)).all(-1)
    return proposals, valid


class ProposalSelection(nn.Module):
    """The encoder side of query selection: every token's proposal refined by the encoder heads,
    scored class-agnostically, the top num_queries kept.

    Args:
        d_model: the transformer width (divisible by 4, for the boxes' sine encoding).
        class_head, box_head: the encoder-side heads (same shapes as the decoder's).
        loss: the class loss, "focal" (sigmoid scores) or "ce" (softmax scores).
    """

    def __init__(self, d_model, class_head, box_head, loss):
        super().__init__()
        if d_model % 4:
            raise ValueError(f"query selection needs d_model divisible by 4, got {d_model}")
        self.memory_proj, self.memory_norm = nn.Linear(d_model, d_model), nn.LayerNorm(d_model)
        self.class_head, self.box_head = class_head, box_head
        self.loss = loss

    def select(self, encoded, num_queries):
        """encoded: EncodedImages -> (reference [B, N, 4] the top proposals' refined boxes, detached;
        top [B, N] their token indices; memory [B, S, C] the projected encoder output; the encoder
        outputs {"pred_logits" [B, S, K], "pred_boxes" [B, S, 4]} for the encoder's loss)."""
        num_tokens = encoded.memory.shape[1]
        if num_queries > num_tokens:
            raise ValueError(f"query selection needs num_queries <= the {num_tokens} encoder tokens, "
                             f"got num_queries = {num_queries}")
        proposals, valid = encoder_proposals(encoded)
        memory = self.memory_norm(self.memory_proj(encoded.memory.masked_fill(~valid[..., None], 0)))  # [B, S, C]
        logits = self.class_head(memory)  # [B, S, K]
        coords = self.box_head(memory) + inverse_sigmoid(proposals)  # [B, S, 4], logit space
        probs = logits.sigmoid() if self.loss == "focal" else logits.softmax(-1)
        scores = probs[..., 0].masked_fill(~valid, float("-inf"))  # [B, S] class-agnostic "object"
        top = scores.topk(num_queries, dim=1).indices  # [B, N]
        reference = coords.gather(1, top[..., None].expand(-1, -1, 4)).detach().sigmoid()  # [B, N, 4]
        return reference, top, memory, {"pred_logits": logits, "pred_boxes": coords.sigmoid()}


class TwoStageQueries(ProposalSelection):
    """Two-stage Deformable DETR's queries: position and content both from the selected boxes."""

    def __init__(self, d_model, class_head, box_head, loss):
        super().__init__(d_model, class_head, box_head, loss)
        self.query_proj, self.query_norm = nn.Linear(2 * d_model, 2 * d_model), nn.LayerNorm(2 * d_model)

    def forward(self, encoded, num_queries):
        """encoded: EncodedImages -> ObjectQueries with reference_points [B, N, 4] and the encoder
        outputs for the encoder's loss."""
        reference, _, memory, encoder_outputs = self.select(encoded, num_queries)
        embedding = self.query_norm(self.query_proj(sine_encoding(reference, memory.shape[-1] // 2)))  # [B, N, 2C]
        query_pos, tgt = embedding.chunk(2, dim=-1)
        return ObjectQueries(tgt, query_pos, reference, encoder_outputs)


def class_agnostic(targets):
    """The encoder's matching targets: every ground truth labelled 0 ("object")."""
    return [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]
