"""Single-token decoder steps of fixed shape, replayed as CUDA graphs on a card.

On a card a decoder step of a Whisper model is bound by launches, not by arithmetic: eager PyTorch
launches about 30 kernels per layer per step from Python (bench/RESULTS.md, the H100 runs), while
the card finishes each in microseconds. A CUDA graph replays every kernel of a step with one
launch, but only for fixed shapes and fixed memory. So a step's rows are padded to a bucket:

- rows R (a power of two): padding rows feed token 0 at position 0 of a scratch sequence slot no
  hypothesis owns, and their logits are dropped;
- time T (64, 128, 256 or the whole cache): self-attention reads T positions of each row's cache,
  masked to the row's own length, so one graph serves every length up to T;
- cross-attention groups G (a power of two) of W + 1 columns: rows that share a window are laid
  out as one group, so each window's keys and values are read once per step (not once per row),
  and the extra column takes every padding row's query.

The graph reads and writes the runtime's caches in place; when the runtime reallocates them (more
windows or rows than reserved), every graph is dropped and rebuilt on demand. Without a card the
same fixed-shape step runs eagerly, which is how the tests prove it computes what the eager step
computes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from engine.model.whisper_net import WhisperNet

Tensor = torch.Tensor
log = logging.getLogger("async_engine.step_graphs")
_TIME_BUCKETS = (64, 128, 256)


def _power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@dataclass(frozen=True)
class StepShape:
    rows: int
    groups: int
    width: int  # columns per group, the padding column included
    time: int


@dataclass(frozen=True)
class Caches:
    """The runtime's cache tensors a step reads and writes, and the slot padding rows may scribble on."""

    self_k: list[Tensor]
    self_v: list[Tensor]
    cross_k: list[Tensor]
    cross_v: list[Tensor]
    scratch: int

    def layout(self) -> tuple:
        """Identity of the memory a captured graph addresses."""
        tensors = [*self.self_k, *self.self_v, *self.cross_k, *self.cross_v]
        return (self.scratch, *((t.data_ptr(), *t.shape) for t in tensors))


class _Graph:
    """One bucket's static inputs, its output and (on a card) the captured graph that fills it."""

    def __init__(self, shape: StepShape, device: torch.device) -> None:
        r, g = shape.rows, shape.groups
        self.shape = shape
        self.inputs = torch.zeros(4 * r + g, dtype=torch.long, device=device)
        self.tokens, self.positions, self.slots, self.cells = self.inputs[: 4 * r].view(4, r)
        self.windows = self.inputs[4 * r :]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: Tensor | None = None


def _layout(shape: StepShape, tokens: np.ndarray, positions: np.ndarray, slots: np.ndarray, unique: np.ndarray,
            group: np.ndarray, counts: np.ndarray, scratch: int) -> np.ndarray:
    """The packed static inputs of the real rows: tokens, positions, slots, cells, group windows.

    `unique`, `group` and `counts` are np.unique(windows, return_inverse=True) and its bincount."""
    r, w, n = shape.rows, shape.width, len(tokens)
    order = np.argsort(group, kind="stable")
    within = np.empty(n, dtype=np.int64)
    within[order] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    packed = np.zeros(4 * r + shape.groups, dtype=np.int64)
    packed[:n] = tokens
    packed[r : r + n] = positions
    packed[2 * r : 2 * r + n] = slots
    packed[2 * r + n : 3 * r] = scratch
    packed[3 * r : 3 * r + n] = group * w + within
    packed[3 * r + n : 4 * r] = w - 1  # group 0's padding column
    packed[4 * r : 4 * r + len(unique)] = unique
    packed[4 * r + len(unique) :] = unique[0]
    return packed


def _fixed_step(net: WhisperNet, caches: Caches, graph: _Graph) -> Tensor:
    """float32 logits [R, n_vocab] of one token per row, reading only the graph's static inputs."""
    shape = graph.shape
    h, dh = net.dims.n_heads, net.dims.head_dim
    positions = graph.positions
    x = net.embed(graph.tokens[:, None], positions[:, None])
    time = torch.arange(shape.time, device=positions.device)
    mask = (time[None, :] <= positions[:, None])[:, None, None, :]
    for layer in range(net.dims.n_decoder_layers):
        q, k, v = net.self_qkv(x, layer)
        caches.self_k[layer][graph.slots, :, positions] = k[:, :, 0]
        caches.self_v[layer][graph.slots, :, positions] = v[:, :, 0]
        keys = torch.index_select(caches.self_k[layer][:, :, : shape.time], 0, graph.slots)
        values = torch.index_select(caches.self_v[layer][:, :, : shape.time], 0, graph.slots)
        x = net.self_out(x, F.scaled_dot_product_attention(q, keys, values, attn_mask=mask), layer)
        cq = net.cross_q(x, layer)[:, :, 0]  # [R, h, dh]
        grid = cq.new_zeros(shape.groups * shape.width, h, dh).index_copy_(0, graph.cells, cq)
        attn = F.scaled_dot_product_attention(
            grid.view(shape.groups, shape.width, h, dh).transpose(1, 2),
            torch.index_select(caches.cross_k[layer], 0, graph.windows),
            torch.index_select(caches.cross_v[layer], 0, graph.windows),
        )
        attn = attn.transpose(1, 2).reshape(shape.groups * shape.width, h, dh).index_select(0, graph.cells)
        x = net.cross_out(x, attn[:, :, None], layer)
        x = net.ffn(x, layer)
    return net.logits(x[:, -1]).float()


class StepGraphs:
    """Fixed-shape single-token steps, captured once per bucket as CUDA graphs when `capture`."""

    def __init__(self, net: WhisperNet, device: torch.device, capture: bool) -> None:
        self.net = net
        self.device = device
        self.capture = capture
        self._graphs: dict[StepShape, _Graph] = {}
        self._layout: tuple = ()
        self._pool = torch.cuda.graph_pool_handle() if capture else None

    @property
    def buckets(self) -> int:
        return len(self._graphs)

    @property
    def captured(self) -> int:
        """Buckets replayed as CUDA graphs (none on the CPU, or after a capture failed)."""
        return sum(graph.graph is not None for graph in self._graphs.values())

    def step(self, caches: Caches, tokens: np.ndarray, positions: np.ndarray, slots: np.ndarray,
             windows: np.ndarray) -> Tensor:
        """Logits [rows, n_vocab] (float32, on the device) after feeding each row one token at its position."""
        n = len(tokens)
        layout = caches.layout()
        if layout != self._layout:
            self._graphs.clear()
            self._layout = layout
            # The dropped graphs leave their pool with no users, and PyTorch refuses to capture into
            # such a pool again (an internal assert in its caching allocator, seen on an H200).
            self._pool = torch.cuda.graph_pool_handle() if self.capture else None
        unique, group = np.unique(windows, return_inverse=True)
        counts = np.bincount(group)
        cache_time = caches.self_k[0].shape[2]
        needed = int(positions.max()) + 1
        time = next((t for t in _TIME_BUCKETS if needed <= t <= cache_time), cache_time)
        shape = StepShape(_power_of_two(n), _power_of_two(len(unique)), _power_of_two(int(counts.max())) + 1, time)
        graph = self._graphs.get(shape)
        packed = _layout(shape, tokens, positions, slots, unique, group, counts, caches.scratch)
        if graph is None:
            graph = self._graphs[shape] = self._build(shape, caches, packed)
        graph.inputs.copy_(torch.from_numpy(packed))
        if graph.graph is None:
            return _fixed_step(self.net, caches, graph)[:n]
        graph.graph.replay()
        return graph.output[:n]

    def _build(self, shape: StepShape, caches: Caches, packed: np.ndarray) -> _Graph:
        graph = _Graph(shape, self.device)
        if not self.capture:
            return graph
        try:
            self._capture(graph, caches, packed)
        except Exception:  # noqa: BLE001 - a card or driver that cannot capture still decodes, eagerly
            log.exception("CUDA graph capture failed; decoder steps stay uncaptured on %s", self.device)
            self.capture = False
            graph.graph = None
        return graph

    def _capture(self, graph: _Graph, caches: Caches, packed: np.ndarray) -> None:
        shape = graph.shape
        # Warm up and capture on padding alone: only the scratch slot is written meanwhile.
        r = shape.rows
        padding = packed.copy()
        padding[:r], padding[r : 2 * r], padding[2 * r : 3 * r] = 0, 0, caches.scratch
        padding[3 * r : 4 * r] = shape.width - 1
        graph.inputs.copy_(torch.from_numpy(padding))
        run: Callable[[], Tensor] = lambda: _fixed_step(self.net, caches, graph)  # noqa: E731
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            run()  # cuBLAS handles and attention kernels are chosen outside the capture
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph.graph, pool=self._pool):
            graph.output = run()
