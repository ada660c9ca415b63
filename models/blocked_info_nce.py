"""The original project's InfoNCE (row i matches text i) for big batches, without the [N, N] logits.

CE(logits, arange) + CE(logits.T, arange) is mean_i rowLSE_i + mean_j colLSE_j - 2 mean_i logits_ii. Forward
streams blocks of image rows, keeping only each row's and each column's logsumexp; backward recomputes each
block's logits and gives its gradient, (softmax over the row + softmax over the column - 2 I) / N. Memory is
O(N x block) instead of about four [N, N] matrices: the gradient cache's whole-batch loss is what remains of
its memory at large batches (bench/grad_cache.py). Each logit is computed twice (forward and backward).
"""
import torch

BLOCK_ELEMENTS = 2 ** 20  # logits of one block: 4 MiB in float32


class _BlockedInfoNCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, image_features, text_features, logit_scale):
        rows = _block_rows(image_features.shape[0], text_features.shape[0])
        row_lse, column_parts = [], []
        for start in range(0, image_features.shape[0], rows):
            logits = logit_scale * image_features[start:start + rows] @ text_features.t()      # [b, N]
            row_lse.append(torch.logsumexp(logits, dim=1))
            column_parts.append(torch.logsumexp(logits, dim=0))
        row_lse = torch.cat(row_lse)                                                           # [N]
        column_lse = torch.logsumexp(torch.stack(column_parts), dim=0)                         # [N]
        diagonal = logit_scale * (image_features * text_features).sum(dim=1)                   # [N]
        ctx.save_for_backward(image_features, text_features, logit_scale, row_lse, column_lse)
        return row_lse.mean() + column_lse.mean() - 2 * diagonal.mean()

    @staticmethod
    def backward(ctx, grad_output):
        image_features, text_features, logit_scale, row_lse, column_lse = ctx.saved_tensors
        count = image_features.shape[0]
        rows = _block_rows(count, text_features.shape[0])
        grad_image = torch.empty_like(image_features)
        grad_text = torch.zeros_like(text_features)
        grad_scale = torch.zeros_like(logit_scale)
        weight = grad_output / count
        for start in range(0, count, rows):
            images = image_features[start:start + rows]
            similarity = images @ text_features.t()                                            # [b, N]
            logits = logit_scale * similarity
            grad = (torch.exp(logits - row_lse[start:start + rows, None])
                    + torch.exp(logits - column_lse[None, :]))
            diagonal = torch.arange(grad.shape[0], device=grad.device)
            grad[diagonal, diagonal + start] -= 2
            grad *= weight                                                                     # dloss/dlogits
            grad_image[start:start + rows] = logit_scale * (grad @ text_features)
            grad_text += logit_scale * (grad.t() @ images)
            grad_scale += (grad * similarity).sum()
        return (grad_image if ctx.needs_input_grad[0] else None, grad_text if ctx.needs_input_grad[1] else None,
                grad_scale if ctx.needs_input_grad[2] else None)


def _block_rows(images, texts):
    return max(1, BLOCK_ELEMENTS // max(1, texts))


def blocked_info_nce(image_features, text_features, logit_scale):
    """CE(logits, arange) + CE(logits.T, arange) for image_features, text_features [N, D] (row i matches text
    i) and a scalar logit_scale tensor, in O(N x block) memory. Returns a scalar."""
    return _BlockedInfoNCE.apply(image_features, text_features, logit_scale.to(image_features.dtype))
