"""The CPU fast path of the encoder (``CodecConfig(engine="auto")``): MimiModel.encode's arithmetic, in cache.

Most of a CPU encode is spent streaming 24 kHz activations (64 channels x 1.44 M samples = 369 MB per tensor for a
60 s piece) through memory, not multiplying (bench/encode.py). We run the high-rate SEANet stages over 1 s chunks
carrying each causal convolution's left context (the same arithmetic, in cache), and the low-rate rest, the
transformer, downsampling and quantizer on the whole piece, calling the modules directly. The result is
bit-identical to ``MimiModel.encode`` provided oneDNN picks the same kernel for a 1 s chunk as for the whole signal;
``sodadata.encode.codec.MimiEncoder`` checks that on the first batch of each width class (latents compared bit for bit
with the reference's) and falls back to the reference path if they ever differ. (On the development machine, with
2 threads, the tiny test model's third stage did differ by 3e-6: the check matters.)
"""

from __future__ import annotations

from sodadata.encode.padding_repair import PaddingRepairer, is_conv_layer, is_resnet_block

# SEANet stages run chunked: up to and including this many strided convolutions (Mimi: strides 4, 5, 6 -> 200 Hz).
# Past that the sequence is short and oneDNN is as fast or faster on it whole (bench/encode.py, chunked stages:
# chunking the 512->1024 stride-8 stage too is slower).
CHUNKED_STRIDED_CONVS = 3


class ChunkedEncoder:
    """The CPU fast path: MimiModel.encode's arithmetic, with the high-rate SEANet stages run over time chunks.

    Each causal convolution keeps the last ``padding_total`` samples of its previous chunk's input as left
    context (zeros before the first chunk: the constant padding of a whole-signal call), and the last chunk gets
    the right padding a whole-signal call would add. Chunks start at multiples of ``chunk`` (a multiple of every
    chunked stride), so every layer sees the same samples at the same positions as in one call. Padded batches
    are masked at every convolution input exactly like :class:`PaddingRepairer` does.
    """

    def __init__(self, model, repair: PaddingRepairer, chunk: int) -> None:
        self.model, self.repair = model, repair
        enc = getattr(model, "encoder", None)
        self.supported = enc is not None and all(
            hasattr(enc, a) for a in ("encoder_seanet", "encoder_transformer", "downsample")
        )
        # The last chunk absorbs the remainder: a narrow tail chunk (a few hundred samples) gets a different oneDNN
        # kernel and different bits (bench/encode.py shows both). False only to measure that.
        self.absorb_tail = True
        if not self.supported:  # another transformers layout: the reference path only
            return
        self.enc = enc
        self.layers = list(enc.encoder_seanet.layers)
        strided = 0
        self.split = len(self.layers)
        stride = 1
        for i, layer in enumerate(self.layers):
            for conv in self._convs(layer):
                if not conv.causal or conv.pad_mode != "constant":
                    self.supported = False
            if is_conv_layer(layer) and layer.conv.stride[0] > 1:
                strided += 1
                stride *= layer.conv.stride[0]
                if strided == CHUNKED_STRIDED_CONVS:
                    self.split = i + 1
                    break
        self.chunk = max(stride, chunk // stride * stride)

    def _convs(self, layer):
        if is_conv_layer(layer):
            return [layer]
        if is_resnet_block(layer):
            convs = [m for m in layer.block if is_conv_layer(m)]
            return convs + ([layer.shortcut] if is_conv_layer(layer.shortcut) else [])
        return []

    def _conv(self, conv, x, state: dict, key, offset: int, last: bool, valid):
        import torch
        import torch.nn.functional as F

        if valid is not None:  # as PaddingRepairer._pre: zero everything past each item's valid input length
            t = torch.arange(offset, offset + x.shape[-1], device=x.device)
            x = x * (t[None, :] < valid[:, None])[:, None, :].to(x.dtype)
        pad = int(conv.padding_total)
        if pad:
            ctx = state.get(key)
            if ctx is None:
                ctx = x.new_zeros(x.shape[0], x.shape[1], pad)
            x = torch.cat([ctx, x], dim=2)
            state[key] = x[..., x.shape[-1] - pad :]
        if last:  # the right padding MimiConv1d adds: up to a whole number of strides
            stride = conv.conv.stride[0]
            n = x.shape[-1] - pad + offset
            extra = -(-n // stride) * stride - n
            if extra:
                x = F.pad(x, (0, extra))
        return conv.conv(x)

    def _run(self, h, layers, base: int, state: dict, offset: int, last: bool, valid: dict):
        """Layers ``base..`` over one chunk starting at ``offset`` (in the coordinates of the first layer's input)."""
        for i, layer in enumerate(layers, start=base):
            if is_conv_layer(layer):
                h = self._conv(layer, h, state, i, offset, last, valid.get(i))
                offset //= layer.conv.stride[0]  # chunk starts are multiples of every chunked stride: exact
            elif is_resnet_block(layer):  # stride 1 throughout
                residual = h
                for j, sub in enumerate(layer.block):
                    if is_conv_layer(sub):
                        h = self._conv(sub, h, state, (i, j), offset, last, valid.get((i, j)))
                    else:  # in place, except on the block input, which the residual still needs
                        h = _activation(sub, h, inplace=j > 0)
                if is_conv_layer(layer.shortcut):
                    residual = self._conv(layer.shortcut, residual, state, (i, "s"), offset, last, valid.get((i, "s")))
                else:
                    residual = layer.shortcut(residual)
                h = h.add_(residual)
            else:  # the activation between stages: its input is not needed afterwards
                h = _activation(layer, h, inplace=True)
        return h

    def _valid_lengths(self, lengths) -> dict:
        """Valid input length of every SEANet convolution, per batch item (what PaddingRepairer tracks)."""
        valid: dict = {}
        for i, layer in enumerate(self.layers):
            if is_conv_layer(layer):
                valid[i] = lengths
                lengths = layer._get_output_length(lengths).to(lengths.device)
            elif is_resnet_block(layer):
                inner = lengths
                for j, sub in enumerate(layer.block):
                    if is_conv_layer(sub):
                        valid[(i, j)] = inner
                        inner = sub._get_output_length(inner).to(lengths.device)
                if is_conv_layer(layer.shortcut):
                    valid[(i, "s")] = lengths
                lengths = inner
        valid["out"] = lengths
        return valid

    def seanet(self, x, lengths=None):
        """``encoder_seanet(x)``, chunked over time; ``lengths``: valid samples per item of a padded batch."""
        import torch

        valid = self._valid_lengths(lengths) if lengths is not None else {}
        total = x.shape[-1]
        starts = [a for a in range(0, total, self.chunk) if a == 0 or total - a >= self.chunk or not self.absorb_tail]
        state: dict = {}
        outs = []
        for n, a in enumerate(starts):
            end = starts[n + 1] if n + 1 < len(starts) else total
            outs.append(self._run(x[..., a:end], self.layers[: self.split], 0, state, a, end == total, valid))
        h = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        return self._run(h, self.layers[self.split :], self.split, {}, 0, True, valid), valid.get("out")

    def latents(self, x, lengths=None):
        """``MimiModel.encoder(x).latents``: what the quantizer reads."""
        h, seanet_lengths = self.seanet(x, lengths)
        h = self.enc.encoder_transformer(h.transpose(1, 2), use_cache=False).last_hidden_state.transpose(1, 2)
        # the downsampling conv pads by replication: its PaddingRepairer hook handles padded batches
        self.repair.lengths = seanet_lengths
        try:
            latents = self.enc.downsample(h)
        finally:
            self.repair.lengths = None
        return latents


def _activation(module, h, inplace: bool):
    import torch.nn.functional as F
    from torch import nn

    if isinstance(module, nn.ELU):
        return F.elu(h, alpha=module.alpha, inplace=inplace)
    return module(h)

