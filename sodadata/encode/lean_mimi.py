"""Mimi's encoder half in plain torch, loaded from a ``save_pretrained`` folder without importing transformers.

Why it exists: a worker's start-up was mostly imports. ``from transformers import MimiModel`` costs ~2.4 s of CPU per
process on the 2-core machines (it pulls in ``torch._dynamo``, sympy, scipy and ``torch.distributed.tensor``), more
than torch itself (~1 s), and every worker pays it before its first shard: 40 % of the start-up of a 10-minute run
(BENCHMARKS.md, issue 17). These modules are transformers' Mimi encoder modules restated: the same parameter names
(the checkpoint's state dict loads strictly, or this path is not taken) and the same torch calls in the same order
and layouts, so the same kernels compute the same bits.

They are never trusted on their own. The chunked engine's check (``sodadata.encode.engine_check``) compares the
latents they give with transformers' ``MimiModel`` bit for bit, once per machine, model and software (this file's
source is part of the key); a process that finds no cached verdict loads transformers for it, and one whose
verdict says "differs" encodes with transformers' ``MimiModel.encode``. What this file copies is transformers 5.x's
``modeling_mimi`` (MimiConv1d, MimiResnetBlock, MimiEncoder, MimiTransformerModel with sdpa attention and its
sliding-window mask, MimiEncoderModel, the split residual vector quantizer's ``encode``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# What the encoder needs of a full Mimi checkpoint (the decoder's weights are not read).
ENCODER_PREFIXES = ("encoder.", "encoder_transformer.", "downsample.", "quantizer.")


def _int64(value: int) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.int64, device="cpu")


def _rope_inv_freq(base: float, dim: int) -> torch.Tensor:
    """transformers' compute_default_rope_parameters (on the CPU, as transformers builds it before ``.to``)."""
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float, device="cpu") / dim))


class MimiConv1d(nn.Module):
    """transformers' MimiConv1d, causal (the only kind Mimi has): left padding, then right padding up to a whole
    number of strides."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 pad_mode: str = "constant", bias: bool = True) -> None:
        super().__init__()
        self.causal = True
        self.pad_mode = pad_mode
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation, bias=bias)
        effective = (kernel_size - 1) * dilation + 1
        # on the CPU even while the model is built on the meta device (load_lean_mimi): the state dict lacks them
        self.stride = nn.Buffer(_int64(stride), persistent=False)
        self.kernel_size = nn.Buffer(_int64(effective), persistent=False)
        self.padding_total = nn.Buffer(_int64(effective - stride), persistent=False)

    def _ideal_length(self, length) -> torch.Tensor:
        """The input length up to a whole number of strides (transformers' arithmetic, float division included)."""
        n_frames = (length - self.kernel_size + self.padding_total) / self.stride + 1
        n_frames = torch.ceil(n_frames).to(torch.int64) - 1
        return n_frames * self.stride + self.kernel_size - self.padding_total

    def _get_extra_padding_for_conv1d(self, hidden_states: torch.Tensor) -> torch.Tensor:
        length = hidden_states.shape[-1]
        return self._ideal_length(length) - length

    def _get_output_length(self, input_length: torch.Tensor) -> torch.Tensor:
        input_length = torch.as_tensor(input_length, device=self.stride.device)
        input_length = self.padding_total + self._ideal_length(input_length)  # left padding, then up to the ideal
        return (input_length - self.conv.dilation[0] * (self.conv.kernel_size[0] - 1) - 1) // self.conv.stride[0] + 1

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        extra_padding = self._get_extra_padding_for_conv1d(hidden_states)
        hidden_states = F.pad(hidden_states, (self.padding_total, extra_padding), self.pad_mode, 0.0)
        return self.conv(hidden_states)


class MimiResnetBlock(nn.Module):
    def __init__(self, dim: int, kernel_size: int, dilations: list[int], compress: int, shortcut: bool) -> None:
        super().__init__()
        kernel_sizes = (kernel_size, 1)
        hidden = dim // compress
        block: list[nn.Module] = []
        for i, (k, dilation) in enumerate(zip(kernel_sizes, dilations, strict=True)):
            in_chs = dim if i == 0 else hidden
            out_chs = dim if i == len(kernel_sizes) - 1 else hidden
            block += [nn.ELU(), MimiConv1d(in_chs, out_chs, k, dilation=dilation)]
        self.block = nn.ModuleList(block)
        self.shortcut = MimiConv1d(dim, dim, 1) if shortcut else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states
        for layer in self.block:
            hidden_states = layer(hidden_states)
        return self.shortcut(residual) + hidden_states


class MimiSeanet(nn.Module):
    """transformers' MimiEncoder (the SEANet): a conv, then per stage residual blocks, ELU and a strided conv."""

    def __init__(self, c: SimpleNamespace) -> None:
        super().__init__()
        layers: list[nn.Module] = [MimiConv1d(c.audio_channels, c.num_filters, c.kernel_size)]
        scaling = 1
        for ratio in reversed(c.upsampling_ratios):
            scale = scaling * c.num_filters
            for j in range(c.num_residual_layers):
                layers.append(MimiResnetBlock(scale, c.residual_kernel_size, [c.dilation_growth_rate**j, 1],
                                              c.compress, c.use_conv_shortcut))
            layers += [nn.ELU(), MimiConv1d(scale, scale * 2, kernel_size=ratio * 2, stride=ratio)]
            scaling *= 2
        layers += [nn.ELU(), MimiConv1d(scaling * c.num_filters, c.hidden_size, c.last_kernel_size)]
        self.layers = nn.ModuleList(layers)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states


class MimiLayerScale(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.empty(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


class MimiAttention(nn.Module):
    """transformers' MimiAttention with its sdpa attention interface (the implementation ``from_pretrained`` picks)."""

    def __init__(self, c: SimpleNamespace) -> None:
        super().__init__()
        if c.num_key_value_heads != c.num_attention_heads:
            raise ValueError("grouped-query attention is not restated here")
        self.head_dim = c.head_dim
        self.scaling = 1 / math.sqrt(c.head_dim)
        self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * c.head_dim, bias=c.attention_bias)
        self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=c.attention_bias)
        self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=c.attention_bias)
        self.o_proj = nn.Linear(c.num_attention_heads * c.head_dim, c.hidden_size, bias=c.attention_bias)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor | None, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        query = (query * cos) + (_rotate_half(query) * sin)
        key = (key * cos) + (_rotate_half(key) * sin)
        q_length = query.shape[2]
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, scale=self.scaling,
                                             is_causal=q_length > 1 and mask is None)
        out = out.reshape(out.shape[0], -1, q_length, value.shape[-1]).transpose(1, 2).contiguous()
        return self.o_proj(out.reshape(*input_shape, -1).contiguous())


class MimiMLP(nn.Module):
    def __init__(self, c: SimpleNamespace) -> None:
        super().__init__()
        if c.hidden_act != "gelu":
            raise ValueError(f"activation {c.hidden_act!r} is not restated here")
        self.fc1 = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.fc2 = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(hidden_states)))


class MimiTransformerLayer(nn.Module):
    def __init__(self, c: SimpleNamespace) -> None:
        super().__init__()
        self.self_attn = MimiAttention(c)
        self.mlp = MimiMLP(c)
        self.input_layernorm = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.self_attn_layer_scale = MimiLayerScale(c.hidden_size)
        self.mlp_layer_scale = MimiLayerScale(c.hidden_size)

    def forward(self, hidden_states, mask, cos, sin):
        residual = hidden_states
        hidden_states = self.self_attn(self.input_layernorm(hidden_states), mask, cos, sin)
        hidden_states = residual + self.self_attn_layer_scale(hidden_states)
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + self.mlp_layer_scale(hidden_states)


class MimiTransformerModel(nn.Module):
    """transformers' MimiTransformerModel without a cache: RoPE (the default kind), a causal mask limited to a
    sliding window, built as transformers' ``create_sliding_window_causal_mask`` builds it for sdpa (none, so sdpa
    runs causal, while the sequence is shorter than the window; else a boolean mask, expanded over the batch)."""

    def __init__(self, c: SimpleNamespace) -> None:
        super().__init__()
        rope = c.rope_parameters or {}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"RoPE type {rope.get('rope_type')!r} is not restated here")
        self.layers = nn.ModuleList([MimiTransformerLayer(c) for _ in range(c.num_hidden_layers)])
        self.inv_freq = nn.Buffer(_rope_inv_freq(rope.get("rope_theta", 10000.0), c.head_dim), persistent=False)
        self.sliding_window = c.sliding_window

    def _mask(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        batch, n = hidden_states.shape[:2]
        if self.sliding_window is None or n < self.sliding_window:
            return None
        q = torch.arange(n, device=hidden_states.device)[:, None]
        kv = torch.arange(n, device=hidden_states.device)[None, :]
        mask = (kv <= q) & (q - kv < self.sliding_window)
        return mask[None, None].expand(batch, 1, n, n)

    def forward(self, hidden_states: torch.Tensor, use_cache: bool = False) -> SimpleNamespace:
        position_ids = torch.arange(hidden_states.shape[1], device=hidden_states.device).unsqueeze(0)
        mask = self._mask(hidden_states)
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=hidden_states.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * 1.0).to(dtype=hidden_states.dtype)  # * attention_scaling (1.0 for default RoPE)
        sin = (emb.sin() * 1.0).to(dtype=hidden_states.dtype)
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask, cos, sin)
        return SimpleNamespace(last_hidden_state=hidden_states)


class MimiEncoderModel(nn.Module):
    """transformers' MimiEncoderModel: SEANet, transformer, downsampling conv (which pads by replication)."""

    def __init__(self, c: SimpleNamespace) -> None:
        super().__init__()
        self.encoder_seanet = MimiSeanet(c)
        self.encoder_transformer = MimiTransformerModel(c)
        self.downsample = None
        if c.frame_rate != c.encodec_frame_rate:
            self.downsample = MimiConv1d(c.hidden_size, c.hidden_size, kernel_size=2 * c.latent_stride,
                                         stride=c.latent_stride, pad_mode="replicate", bias=False)

    def forward(self, input_values: torch.Tensor) -> SimpleNamespace:
        hidden_states = self.encoder_seanet(input_values)
        out = self.encoder_transformer(hidden_states.transpose(1, 2))
        latents = out.last_hidden_state.transpose(1, 2)
        if self.downsample is not None:
            latents = self.downsample(latents)
        return SimpleNamespace(latents=latents)


class MimiEuclideanCodebook(nn.Module):
    def __init__(self, codebook_size: int, codebook_dim: int, epsilon: float = 1e-5) -> None:
        super().__init__()
        self.initialized = nn.Buffer(torch.empty(1))
        self.cluster_usage = nn.Buffer(torch.empty(codebook_size))
        self.embed_sum = nn.Buffer(torch.empty(codebook_size, codebook_dim))
        self.epsilon = epsilon
        self._embed: torch.Tensor | None = None

    @property
    def embed(self) -> torch.Tensor:
        if self._embed is None:
            self._embed = self.embed_sum / self.cluster_usage.clamp(min=self.epsilon)[:, None]
        return self._embed

    def encode(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shape = hidden_states.shape
        flat = hidden_states.reshape((-1, shape[-1]))
        dists = torch.cdist(flat[None].float(), self.embed[None].float(), p=2)[0]
        return dists.argmin(dim=-1).view(*shape[:-1])


class MimiVectorQuantization(nn.Module):
    def __init__(self, codebook_size: int, codebook_dim: int) -> None:
        super().__init__()
        self.codebook = MimiEuclideanCodebook(codebook_size, codebook_dim)

    def encode(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.codebook.encode(hidden_states.permute(0, 2, 1))

    def decode(self, embed_ind: torch.Tensor) -> torch.Tensor:
        return F.embedding(embed_ind, self.codebook.embed).permute(0, 2, 1)


class MimiResidualVectorQuantizer(nn.Module):
    def __init__(self, c: SimpleNamespace, num_quantizers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([MimiVectorQuantization(c.codebook_size, c.codebook_dim)
                                     for _ in range(num_quantizers)])
        self.input_proj = self.output_proj = None
        if c.vector_quantization_hidden_dimension != c.hidden_size:
            dim = c.vector_quantization_hidden_dimension
            self.input_proj = nn.Conv1d(c.hidden_size, dim, 1, bias=False)
            self.output_proj = nn.Conv1d(dim, c.hidden_size, 1, bias=False)  # not used to encode; in the state dict

    def encode(self, embeddings: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        if self.input_proj is not None:
            embeddings = self.input_proj(embeddings)
        residual = embeddings
        all_indices = []
        for layer in self.layers[:num_quantizers]:
            indices = layer.encode(residual)
            residual = residual - layer.decode(indices)
            all_indices.append(indices)
        return torch.stack(all_indices)


class MimiSplitResidualVectorQuantizer(nn.Module):
    def __init__(self, c: SimpleNamespace) -> None:
        super().__init__()
        self.max_num_quantizers = c.num_quantizers
        self.num_semantic_quantizers = c.num_semantic_quantizers
        self.semantic_residual_vector_quantizer = MimiResidualVectorQuantizer(c, c.num_semantic_quantizers)
        self.acoustic_residual_vector_quantizer = MimiResidualVectorQuantizer(
            c, c.num_quantizers - c.num_semantic_quantizers)

    def encode(self, embeddings: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        num_quantizers = self.max_num_quantizers if num_quantizers is None else num_quantizers
        if not self.num_semantic_quantizers <= num_quantizers <= self.max_num_quantizers:
            raise ValueError(f"{num_quantizers} codebooks asked of a Mimi with {self.num_semantic_quantizers} "
                             f"semantic and {self.max_num_quantizers} in all")
        codes = self.semantic_residual_vector_quantizer.encode(embeddings)
        if num_quantizers > self.num_semantic_quantizers:
            acoustic = self.acoustic_residual_vector_quantizer.encode(
                embeddings, num_quantizers=num_quantizers - self.num_semantic_quantizers)
            codes = torch.cat([codes, acoustic], dim=0)
        return codes


# transformers MimiConfig's defaults for what a config.json may leave out
_CONFIG_DEFAULTS = {
    "sampling_rate": 24_000, "audio_channels": 1, "hidden_size": 512, "num_filters": 64, "num_residual_layers": 1,
    "upsampling_ratios": [8, 6, 5, 4], "kernel_size": 7, "last_kernel_size": 3, "residual_kernel_size": 3,
    "dilation_growth_rate": 2, "use_causal_conv": True, "pad_mode": "constant", "compress": 2,
    "codebook_size": 2048, "codebook_dim": 256, "num_quantizers": 32, "use_conv_shortcut": False,
    "vector_quantization_hidden_dimension": 256, "num_semantic_quantizers": 1, "num_hidden_layers": 8,
    "intermediate_size": 2048, "num_attention_heads": 8, "num_key_value_heads": 8, "head_dim": None,
    "hidden_act": "gelu", "norm_eps": 1e-5, "rope_parameters": None, "sliding_window": 250,
    "attention_bias": False,
}


class LeanMimiConfig(SimpleNamespace):
    """The fields of a Mimi ``config.json`` the encoder uses, with transformers' defaults and derived values."""


    def __init__(self, raw: dict) -> None:
        if raw.get("model_type") != "mimi":
            raise ValueError(f"model_type {raw.get('model_type')!r} is not mimi")
        values = {k: raw.get(k, v) if raw.get(k) is not None else v for k, v in _CONFIG_DEFAULTS.items()}
        super().__init__(**values)
        self.raw = raw
        if not self.use_causal_conv or self.pad_mode != "constant" or isinstance(self.residual_kernel_size, list):
            raise ValueError("only causal, zero-padded SEANet convolutions with one residual kernel are restated here")
        if raw.get("rope_scaling"):
            raise ValueError("RoPE scaling is not restated here")
        if self.rope_parameters is None:
            self.rope_parameters = {"rope_type": "default", "rope_theta": raw.get("rope_theta", 10000.0)}
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
        self.codebook_dim = self.codebook_dim if self.codebook_dim is not None else self.hidden_size
        self.encodec_frame_rate = math.ceil(self.sampling_rate / math.prod(self.upsampling_ratios))
        frame_rate = raw.get("frame_rate", raw.get("_frame_rate"))
        if frame_rate is None:  # transformers' frame_size: every SEANet stride, then the downsampling's 2
            frame_rate = self.sampling_rate / (math.prod(self.upsampling_ratios) * 2)
        self.frame_rate = frame_rate
        self.latent_stride = int(self.encodec_frame_rate / self.frame_rate)

    def to_dict(self) -> dict:
        """The config as saved (what ``engine_check.architecture_digest`` hashes)."""
        return dict(self.raw)


class LeanMimiModel(nn.Module):
    """The encoder half of a MimiModel and its quantizer, as ``sodadata.encode`` calls them: ``.encoder(x).latents``,
    ``.encoder.encoder_seanet / encoder_transformer / downsample``, ``.quantizer.encode(latents, n)``."""

    decoder = None
    lean = True  # what sodadata.encode.codec and engine_check tell it from transformers' MimiModel by

    def __init__(self, config: LeanMimiConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = MimiEncoderModel(config)
        self.quantizer = MimiSplitResidualVectorQuantizer(config)

    def checkpoint_state_dict_names(self) -> dict[str, str]:
        """Checkpoint name -> this module's name (a Mimi checkpoint keeps the SEANet under ``encoder.``, the
        transformer and the downsampling at the top level, as transformers' MimiModel saves them)."""
        names = {}
        for name in self.state_dict():
            if name.startswith("encoder.encoder_seanet."):
                names["encoder." + name[len("encoder.encoder_seanet."):]] = name
            elif name.startswith(("encoder.encoder_transformer.", "encoder.downsample.")):
                names[name[len("encoder."):]] = name
            else:
                names[name] = name
        return names


def _weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [directory / s for s in shards]
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    raise ValueError("no model.safetensors (a .bin checkpoint is loaded by transformers)")


def load_lean_mimi(directory: str | Path) -> LeanMimiModel:
    """The encoder of the Mimi saved in ``directory``, in float32 on the CPU; ValueError (saying why) when the
    checkpoint is not one these modules restate exactly: every encoder weight must be there, with its shape, and
    nothing else under the encoder's names (a weight-normed or otherwise different checkpoint is refused)."""
    from safetensors import safe_open

    directory = Path(directory)
    try:
        raw = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"config.json: {exc}") from None
    config = LeanMimiConfig(raw)
    with torch.device("meta"):
        model = LeanMimiModel(config)
    names = model.checkpoint_state_dict_names()
    state = {}
    for path in _weight_files(directory):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if key.startswith(ENCODER_PREFIXES):
                    if key not in names:
                        raise ValueError(f"unexpected weight {key}")
                    state[names[key]] = f.get_tensor(key).to(torch.float32)
    missing = sorted(set(names.values()) - set(state))
    if missing:
        raise ValueError(f"{len(missing)} encoder weights missing (first: {missing[0]})")
    model.load_state_dict(state, strict=True, assign=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
