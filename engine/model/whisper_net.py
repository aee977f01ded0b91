"""The Whisper network as plain tensor functions over the converted weights.

Weights keep CTranslate2's names (see ct2_reader); the fused projections it stores (q/k/v for
self-attention, k/v for cross-attention) stay fused because one large matmul beats three small
ones on every device. Nothing here keeps state between calls: caches belong to the runtime.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


@dataclass(frozen=True)
class ModelDims:
    n_mels: int
    n_vocab: int
    d_model: int
    n_heads: int
    n_encoder_layers: int
    n_decoder_layers: int
    n_audio_ctx: int
    n_text_ctx: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_weights(cls, weights: dict[str, Tensor], n_heads: int) -> "ModelDims":
        def count(prefix: str) -> int:
            return len({k.split("/")[1] for k in weights if re.match(prefix + r"/layer_\d+/", k)})

        vocab, d_model = weights["decoder/embeddings/weight"].shape
        return cls(
            n_mels=int(weights["encoder/conv1/weight"].shape[1]),
            n_vocab=int(vocab),
            d_model=int(d_model),
            n_heads=n_heads,
            n_encoder_layers=count("encoder"),
            n_decoder_layers=count("decoder"),
            n_audio_ctx=int(weights["encoder/position_encodings/encodings"].shape[0]),
            n_text_ctx=int(weights["decoder/position_encodings/encodings"].shape[0]),
        )


def _prepack_int8(weight: Tensor, engine: str = "x86") -> object:
    """Per-output-channel symmetric int8 weights, packed for a dynamic-quantized GEMM: fbgemm's by
    default, oneDNN's with engine="onednn" (the packing decides which library every call runs)."""
    scales = (weight.abs().amax(dim=1).double() / 127.0).clamp(min=1e-12)
    zero = torch.zeros(weight.shape[0], dtype=torch.long)
    before = torch.backends.quantized.engine
    with warnings.catch_warnings():  # deprecated upstream in favour of torchao; torch is pinned
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch.quantize_per_channel(weight.float(), scales, zero, 0, torch.qint8)
        try:
            torch.backends.quantized.engine = engine
            return torch.ops.quantized.linear_prepack(quantized, None)
        finally:
            torch.backends.quantized.engine = before


def _int8_linear(x: Tensor, packed: object, bias: Tensor | None) -> Tensor:
    """int8 GEMM with one activation scale per row, so a row's result never depends on its batch.

    fbgemm quantizes activations with one range for the whole matrix, which would let one loud
    row (another job's window) cost every other row precision. Each row is scaled to [-1, 1] and
    a constant [-1, 1] row pins the range, which makes quantization identical in any batch. The
    scaled rows and the pin are written into one buffer and the result is rescaled in place: half
    the time of building them with cat and fresh tensors, for bit-identical results.
    """
    shape = x.shape
    rows = x.reshape(-1, shape[-1])
    # max(|x|) as max(max x, -min x): the same values without abs's temporary, which on the encoder's
    # [6000, 1536] blocks cost 12 ms against 1 ms. Not aminmax: 400x slower on small rows.
    scale = torch.maximum(rows.amax(dim=-1, keepdim=True), rows.amin(dim=-1, keepdim=True).neg_()).clamp_(min=1e-12)
    scaled = torch.empty(rows.shape[0] + 1, shape[-1], dtype=rows.dtype, device=rows.device)
    torch.div(rows, scale, out=scaled[:-1])
    scaled[-1] = _pin_row(shape[-1], rows.dtype)
    out = torch.ops.quantized.linear_dynamic(scaled, packed, True)[:-1]
    out.mul_(scale)
    if bias is not None:
        out.add_(bias)
    return out.reshape(*shape[:-1], out.shape[-1])


def _is_linear_weight(name: str, tensor: Tensor) -> bool:
    """A linear layer's [out, in] weight (CTranslate2 names them .../linear_N/weight): what int8 packs and
    bfloat16 slices; embeddings, convolutions and norms stay as they are."""
    return name.endswith("/weight") and tensor.ndim == 2 and "/linear_" in name


# oneDNN's bfloat16 GEMM rounds a row the same whatever the batch's row count only up to 384 inputs
# (checked for 1-200 and 600-2400 rows); from 512 on, some rows round differently with the row count.
_SLICE = 384


def _input_slices(weight: Tensor) -> Tensor:
    """[out, in] -> [slices, in / slices, out]: the weight cut into the fewest equal input slices of at
    most _SLICE, laid out for one batched GEMM."""
    out_features, in_features = weight.shape
    count = next(n for n in range(-(-in_features // _SLICE), in_features + 1) if in_features % n == 0)
    return weight.t().reshape(count, in_features // count, out_features).contiguous()


def _sliced_linear(x: Tensor, slices: Tensor, bias: Tensor | None) -> Tensor:
    """A bfloat16 linear with more inputs than _SLICE, computed so a row's result never depends on its batch.

    Over all inputs at once, a window's row would round differently with the number of other
    requests' rows beside it, enough to change words between a file served alone and beside others.
    Each slice's product is one row-independent GEMM (one batched call for all slices); the slices are
    summed in float32. Measured: a relative error of 0.24 % against float32, 0.17 % in one GEMM.
    """
    count, width, out_features = slices.shape
    rows = x.reshape(-1, count, width).transpose(0, 1)
    total = torch.bmm(rows, slices).float().sum(0)
    if bias is not None:
        total += bias.float()
    return total.to(x.dtype).reshape(*x.shape[:-1], out_features)


@functools.lru_cache(maxsize=8)
def _pin_row(width: int, dtype: torch.dtype) -> Tensor:
    pin = torch.zeros(width, dtype=dtype)
    pin[0], pin[-1] = 1.0, -1.0
    return pin


class WhisperNet:
    """Encoder, incremental decoder layers and the teacher-forced alignment pass.

    With int8=True every linear layer (and the vocabulary projection) runs as a dynamically
    quantized int8 GEMM: on CPU that halves encoder time and cuts the memory-bound vocabulary
    projection of a decoder step by about five times (bench/RESULTS.md), the same trade
    CTranslate2's int8 makes for faster-whisper.

    With bf16=True (float32 weights given) every layer runs in bfloat16, for CPUs whose matrix
    units (Intel AMX) multiply bfloat16 several times faster than fbgemm multiplies int8: on
    such a CPU the encoder takes 0.4x the int8 time and a 4-window decoder step 0.77x, and the
    encoder output is closer to float32's (relative error 1.5 % against int8's 6.5 %). The
    vocabulary projection alone stays int8: it reads 51,864 rows for a handful of hypotheses,
    so it is bound by memory, where int8's quarter of the bytes beats bfloat16's half.
    """

    def __init__(self, weights: dict[str, Tensor], dims: ModelDims, int8: bool = False, bf16: bool = False) -> None:
        if int8 and bf16:
            raise ValueError("int8 and bf16 are two different compute types")
        self.w = {name: tensor.bfloat16() for name, tensor in weights.items()} if bf16 else dict(weights)
        self.dims = dims
        self.bf16 = bf16
        self._packed: dict[str, object] = {}
        if int8:
            for name, tensor in weights.items():
                if _is_linear_weight(name, tensor):
                    self._packed[name[: -len("/weight")]] = _prepack_int8(tensor)
                    del self.w[name]  # the packed int8 copy replaces it: a quarter of the memory
        if int8 or bf16:
            self._packed["decoder/projection"] = _prepack_int8(weights["decoder/embeddings/weight"],
                                                               "onednn" if bf16 else "x86")
        self._slices: dict[str, Tensor] = {}
        if bf16:
            for name in list(self.w):
                tensor = self.w[name]
                if _is_linear_weight(name, tensor) and tensor.shape[1] > _SLICE:
                    self._slices[name[: -len("/weight")]] = _input_slices(tensor)
                    del self.w[name]

    def _ln(self, x: Tensor, prefix: str) -> Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.w[prefix + "/gamma"], self.w[prefix + "/beta"], 1e-5)

    def _linear(self, x: Tensor, prefix: str) -> Tensor:
        packed = self._packed.get(prefix)
        if packed is not None:
            return _int8_linear(x, packed, self.w.get(prefix + "/bias"))
        slices = self._slices.get(prefix)
        if slices is not None:
            return _sliced_linear(x, slices, self.w.get(prefix + "/bias"))
        return F.linear(x, self.w[prefix + "/weight"], self.w.get(prefix + "/bias"))

    def _heads(self, x: Tensor) -> Tensor:
        """[B, T, D] -> [B, H, T, Dh]"""
        b, t, _ = x.shape
        return x.view(b, t, self.dims.n_heads, self.dims.head_dim).transpose(1, 2)

    def _merge(self, x: Tensor) -> Tensor:
        b, _, t, _ = x.shape
        return x.transpose(1, 2).reshape(b, t, self.dims.d_model)

    def _ffn(self, x: Tensor, prefix: str) -> Tensor:
        h = self._ln(x, prefix + "/ffn/layer_norm")
        h = F.gelu(self._linear(h, prefix + "/ffn/linear_0"))
        return x + self._linear(h, prefix + "/ffn/linear_1")

    def encode(self, mels: Tensor) -> Tensor:
        """[N, n_mels, 3000] log-mel windows -> [N, 1500, d_model] audio features."""
        x = F.gelu(F.conv1d(mels, self.w["encoder/conv1/weight"], self.w["encoder/conv1/bias"], padding=1))
        x = F.gelu(F.conv1d(x, self.w["encoder/conv2/weight"], self.w["encoder/conv2/bias"], stride=2, padding=1))
        x = x.transpose(1, 2) + self.w["encoder/position_encodings/encodings"][: x.shape[2]]
        for i in range(self.dims.n_encoder_layers):
            p = f"encoder/layer_{i}"
            h = self._ln(x, p + "/self_attention/layer_norm")
            q, k, v = self._linear(h, p + "/self_attention/linear_0").chunk(3, dim=-1)
            a = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))
            x = x + self._linear(self._merge(a), p + "/self_attention/linear_1")
            x = self._ffn(x, p)
        return self._ln(x, "encoder/layer_norm")

    def cross_kv(self, audio: Tensor, layer: int) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of one decoder layer: each [N, H, 1500, Dh]."""
        k, v = self._linear(audio, f"decoder/layer_{layer}/attention/linear_1").chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def embed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        return self.w["decoder/embeddings/weight"][tokens] + self.w["decoder/position_encodings/encodings"][positions]

    def self_qkv(self, x: Tensor, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        """Projections of the self-attention block, each [B, H, T, Dh]."""
        h = self._ln(x, f"decoder/layer_{layer}/self_attention/layer_norm")
        q, k, v = self._linear(h, f"decoder/layer_{layer}/self_attention/linear_0").chunk(3, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)

    def self_out(self, x: Tensor, attn: Tensor, layer: int) -> Tensor:
        return x + self._linear(self._merge(attn), f"decoder/layer_{layer}/self_attention/linear_1")

    def cross_q(self, x: Tensor, layer: int) -> Tensor:
        h = self._ln(x, f"decoder/layer_{layer}/attention/layer_norm")
        return self._heads(self._linear(h, f"decoder/layer_{layer}/attention/linear_0"))

    def cross_out(self, x: Tensor, attn: Tensor, layer: int) -> Tensor:
        return x + self._linear(self._merge(attn), f"decoder/layer_{layer}/attention/linear_2")

    def ffn(self, x: Tensor, layer: int) -> Tensor:
        return self._ffn(x, f"decoder/layer_{layer}")

    def logits(self, x: Tensor) -> Tensor:
        x = self._ln(x, "decoder/layer_norm")
        if "decoder/projection" in self._packed:
            return _int8_linear(x.float(), self._packed["decoder/projection"], None)
        return F.linear(x, self.w["decoder/embeddings/weight"])

    def alignment_scores(self, tokens: Tensor, cross: list[tuple[Tensor, Tensor]], heads: list[tuple[int, int]],
                         valid: Tensor | None = None) -> Tensor:
        """Teacher-forced pass returning raw cross-attention scores of the alignment heads.

        tokens [B, T] (right-padded; causal attention keeps padding out of real positions); cross[layer]
        is that layer's cross-attention (keys, values), each [B, H, frames, Dh], as cross_kv made them
        when the windows were encoded (the runtime keeps them; projecting the encoder output again
        would cost one GEMM over every frame per layer) -> [B, len(heads), T, frames], scaled by
        1/sqrt(Dh) as in the model.
        """
        t = tokens.shape[1]
        x = self.embed(tokens, torch.arange(t, device=tokens.device))
        mask = None if valid is None else valid[:, None, None, :]
        wanted_layers = {layer for layer, _ in heads}
        scores: dict[int, Tensor] = {}
        for i in range(max(wanted_layers) + 1):
            q, k, v = self.self_qkv(x, i)
            x = self.self_out(x, F.scaled_dot_product_attention(q, k, v, is_causal=True), i)
            cq = self.cross_q(x, i)
            ck, cv = cross[i]
            if i in wanted_layers:
                qk = (cq @ ck.transpose(-1, -2)) * self.dims.head_dim ** -0.5
                if mask is not None:
                    qk = qk.masked_fill(~mask, float("-inf"))
                scores[i] = qk
                attn = qk.softmax(dim=-1) @ cv
            else:
                attn = F.scaled_dot_product_attention(cq, ck, cv, attn_mask=mask)
            x = self.cross_out(x, attn, i)
            x = self.ffn(x, i)
        return torch.stack([scores[layer][:, head] for layer, head in heads], dim=1)
