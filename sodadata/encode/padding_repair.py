"""Batching without changing codes: forward hooks that make a right-padded batch compute what each item alone would.

transformers' Mimi encoder ignores ``padding_mask``, and its convolutions pad the end of the signal (zeros in the
SEANet, a repeat of the last value in the downsampling conv). Right-padding a batch would therefore change the
last frame of every shorter item. :class:`PaddingRepairer` hooks every encoder convolution and re-pads its input
past each item's valid length exactly as a one-item call would, so batched codes equal one-at-a-time
``MimiModel.encode`` codes (the encoder is causal: earlier frames never see the padding).
"""

from __future__ import annotations


def is_conv_layer(module) -> bool:
    """A Mimi convolution layer: transformers' MimiConv1d or ``sodadata.encode.lean_mimi``'s (pads, then ``.conv``).
    Told by what it has, so that this module and the chunked engine work on both without importing transformers."""
    return hasattr(module, "padding_total") and hasattr(module, "_get_output_length") and hasattr(module, "conv")


def is_resnet_block(module) -> bool:
    """A SEANet residual block (transformers' MimiResnetBlock or lean_mimi's): ``.block`` and ``.shortcut``."""
    return hasattr(module, "block") and hasattr(module, "shortcut")


class PaddingRepairer:
    """Forward hooks that make a right-padded batch compute what each item alone would (see the module docstring)."""

    def __init__(self, encoder) -> None:
        self.lengths = None  # valid input length of the next conv, per batch item (torch.LongTensor)
        self.handles = []
        self.supported = True
        for module in encoder.modules():
            if is_conv_layer(module):
                if module.pad_mode not in ("constant", "replicate") or not module.causal:
                    self.supported = False
                self.handles.append(module.register_forward_pre_hook(self._pre))
                self.handles.append(module.register_forward_hook(self._post))

    def _pre(self, module, args):
        if self.lengths is None:
            return None
        import torch

        x = args[0]
        t = torch.arange(x.shape[-1], device=x.device)
        if module.pad_mode == "replicate":
            idx = torch.minimum(t[None, :], (self.lengths - 1).clamp(min=0)[:, None])
            x = torch.gather(x, 2, idx[:, None, :].expand(x.shape[0], x.shape[1], -1))
        else:
            x = x * (t[None, :] < self.lengths[:, None])[:, None, :].to(x.dtype)
        return (x, *args[1:])

    def _post(self, module, args, output):
        if self.lengths is not None:
            self.lengths = module._get_output_length(self.lengths).to(self.lengths.device)

