"""Inference-side runtime: the network plus every key/value cache, and no search logic.

This is the half of Whisper that belongs in the inference process (one per device). Decoder-side
searches ask it, through small descriptors, to encode windows and to advance rows of sequences one
token at a time (a prompt all at once); it answers with logits. Because one step takes rows from any
number of windows and jobs at once, a device is kept busy by many concurrent requests (continuous
batching).

Caches live in slot tensors that grow on demand:
- per window: encoder output and each decoder layer's cross-attention keys/values;
- per sequence (one hypothesis row): self-attention keys/values up to its current length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from engine.model.encoder_width import encoder_width, shortens_windows
from engine.model.store import StoredModel
from engine.model.step_graphs import Caches, StepGraphs
from engine.model.whisper_net import WhisperNet

_TIME_CHUNK = 64


@dataclass(frozen=True)
class _CrossPlan:
    """One cross-attention call: the step's rows whose windows were encoded at one width."""

    rows: torch.Tensor | None  # the step's rows in this call (None: all of them, in order)
    source: slice | torch.Tensor  # the window slots read, as a slice when they are dense
    group: torch.Tensor  # each row's window among them
    within: torch.Tensor  # each row's place among its window's rows
    n_groups: int
    width: int  # rows of the busiest window
    limit: int  # encoder frames of these windows


class SequenceTooLongError(RuntimeError):
    """A sequence reached the decoder's context length; the search must stop it earlier."""


class _SlotPool:
    """Hands out the lowest free slot so that live slots stay dense (slices instead of gathers)."""

    def __init__(self) -> None:
        self.capacity = 0
        self._free: list[int] = []

    def take(self, count: int) -> tuple[list[int], int]:
        """Return `count` slots and the capacity needed to hold them."""
        self._free.sort(reverse=True)
        slots = [self._free.pop() for _ in range(min(count, len(self._free)))]
        while len(slots) < count:
            slots.append(self.capacity)
            self.capacity += 1
        return slots, self.capacity

    def give_back(self, slots: Sequence[int]) -> None:
        self._free.extend(slots)

    @property
    def used(self) -> int:
        return self.capacity - len(self._free)


def _grow(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    if t.shape[dim] >= size:
        return t
    shape = list(t.shape)
    shape[dim] = size - t.shape[dim]
    return torch.cat([t, t.new_zeros(shape)], dim=dim)


def _rows(t: torch.Tensor, source: slice | torch.Tensor) -> torch.Tensor:
    """Rows of `t` by a slice (a view) or by an index tensor (one copy of just those rows)."""
    return t[source] if isinstance(source, slice) else torch.index_select(t, 0, source)


def _attended_length(longest: int) -> int:
    """Cache positions a step's self-attention reads: the longest row's length rounded up to 16.

    A row attends only to its own prefix (a mask), but torch's CPU attention kernel rounds a row
    differently while the positions it reads end inside the 16-position block holding the row's last
    one; from the end of that block on, the row's result is the same for any length. Rounded up, every
    row of every step is past its own block, so a row's result no longer depends on how long the other
    rows of its step are (other jobs' windows): in float32 it moved by an ulp, in bfloat16 by one of
    bfloat16's, enough to change words between a file served alone and one served beside others.
    """
    return -(-longest // 16) * 16


def _grow_array(a: np.ndarray, size: int) -> np.ndarray:
    return a if len(a) >= size else np.concatenate([a, np.zeros(size - len(a), a.dtype)])


class InferenceRuntime:
    def __init__(self, model: StoredModel, device: str = "cpu", int8: bool = False, encode_batch: int = 8,
                 step_graphs: bool = False, bf16: bool = False) -> None:
        """`step_graphs`: single-token steps of fixed shape (engine/model/step_graphs.py), captured as CUDA graphs
        on a card (ASYNC_ENGINE_CUDA_GRAPHS); on the CPU they run uncaptured, for the tests that compare them.
        `bf16`: the network and its caches in bfloat16 (WhisperNet), from float32 weights."""
        self.dims = model.dims
        self.device = torch.device(device)
        self.dtype = torch.bfloat16 if bf16 else next(iter(model.weights.values())).dtype
        self.net = WhisperNet(model.weights, model.dims, int8=int8, bf16=bf16)
        self.alignment_heads = [tuple(h) for h in model.config["alignment_heads"]]
        self.encode_batch = encode_batch
        d, h, dh = self.dims, self.dims.n_heads, self.dims.head_dim
        empty = lambda *shape: torch.zeros(*shape, device=self.device, dtype=self.dtype)  # noqa: E731
        self._windows = _SlotPool()
        self._audio_frames = np.zeros(0, dtype=np.int64)  # encoder frames computed for each window slot
        self._cross_k = [empty(0, h, d.n_audio_ctx, dh) for _ in range(d.n_decoder_layers)]
        self._cross_v = [empty(0, h, d.n_audio_ctx, dh) for _ in range(d.n_decoder_layers)]
        self._sequences = _SlotPool()
        self._self_k = [empty(0, h, 0, dh) for _ in range(d.n_decoder_layers)]
        self._self_v = [empty(0, h, 0, dh) for _ in range(d.n_decoder_layers)]
        self._length = np.zeros(0, dtype=np.int64)
        self._window_of = np.zeros(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray, int]] = []  # reorders not yet applied to the caches
        self._step_graphs = StepGraphs(self.net, self.device, self.device.type == "cuda") if step_graphs else None

    @property
    def live_windows(self) -> int:
        return self._windows.used

    @property
    def live_sequences(self) -> int:
        return self._sequences.used

    @property
    def step_graph_buckets(self) -> tuple[int, int]:
        """Fixed-shape step buckets built since the caches last moved, and how many of them replay as CUDA
        graphs ((0, 0) without step graphs)."""
        return (self._step_graphs.buckets, self._step_graphs.captured) if self._step_graphs else (0, 0)

    @torch.inference_mode()
    def encode(self, mels: torch.Tensor, samples: Sequence[int | None] | None = None) -> list[int]:
        """Encode [N, n_mels, 3000] log-mel windows holding samples[i] of audio each; one handle per row.

        Without `samples`, or on a card, every window is encoded whole, as openai/whisper and
        CTranslate2 do (the tests that compare against them do so); on the CPU, serving passes them
        and gets encoder_width's saving, except for the windows whose entry is None (a window the
        decode loop asked to decode again whole, engine/decoding/window.py).
        """
        handles = [0] * mels.shape[0]
        full = mels.shape[2]
        if samples is None or not shortens_windows(str(self.device)):
            samples = [None] * mels.shape[0]
        widths = [full if n is None else encoder_width(n, full) for n in samples]
        order = sorted(range(len(widths)), key=lambda i: widths[i])
        groups = [[i for i in order if widths[i] == w] for w in sorted(set(widths))]
        batches = [g[first : first + self.encode_batch] for g in groups for first in range(0, len(g), self.encode_batch)]
        for rows in batches:
            width = widths[rows[0]]
            chunk = mels[rows, :, :width].to(self.device, self.dtype)
            audio = self.net.encode(chunk)
            frames = audio.shape[1]
            slots, capacity = self._windows.take(len(rows))
            index = torch.tensor(slots, device=self.device)
            self._audio_frames = _grow_array(self._audio_frames, capacity)
            self._audio_frames[slots] = frames
            for layer in range(self.dims.n_decoder_layers):
                k, v = self.net.cross_kv(audio, layer)
                self._cross_k[layer] = _grow(self._cross_k[layer], 0, capacity)
                self._cross_v[layer] = _grow(self._cross_v[layer], 0, capacity)
                self._cross_k[layer][index, :, :frames] = k
                self._cross_v[layer][index, :, :frames] = v
            for row, slot in zip(rows, slots):
                handles[row] = slot
        return handles

    def reserve(self, windows: int, rows_per_window: int) -> None:
        """Allocate every cache now at the size the busiest moment will need.

        Grown on demand, the caches reach their high-water mark whenever that moment first comes
        (in the soak benchmark, after 800 requests) and each growth copies them. Reserved at start,
        a serving process's memory is flat from its first request, and a device too small for the
        configuration fails at start instead of in the middle of a request.
        """
        d = self.dims
        self._audio_frames = _grow_array(self._audio_frames, windows)
        for layer in range(d.n_decoder_layers):
            self._cross_k[layer] = _grow(self._cross_k[layer], 0, windows)
            self._cross_v[layer] = _grow(self._cross_v[layer], 0, windows)
        rows = windows * rows_per_window + 1  # and the scratch row of step graphs' padding
        self._length = np.concatenate([self._length, np.zeros(max(0, rows - len(self._length)), np.int64)])
        self._window_of = np.concatenate([self._window_of, np.zeros(max(0, rows - len(self._window_of)), np.int64)])
        for layer in range(d.n_decoder_layers):
            self._self_k[layer] = _grow(self._self_k[layer], 0, rows)
            self._self_v[layer] = _grow(self._self_v[layer], 0, rows)
        # A prompt of MAX_PROMPT_TOKENS, its <|startofprev|>, the SOT sequence and the text fill the
        # whole text context (the search stops before it overflows: WindowSearch's token limit).
        self._ensure_time(d.n_text_ctx)

    def release_window(self, window: int) -> None:
        self._windows.give_back([window])

    def open_sequences(self, window: int, count: int) -> list[int]:
        """Start `count` empty hypothesis rows that attend to `window`."""
        slots, capacity = self._sequences.take(count)
        if capacity > len(self._length):
            grow_to = max(capacity, 2 * len(self._length))
            self._length = np.concatenate([self._length, np.zeros(grow_to - len(self._length), np.int64)])
            self._window_of = np.concatenate([self._window_of, np.zeros(grow_to - len(self._window_of), np.int64)])
            for layer in range(self.dims.n_decoder_layers):
                self._self_k[layer] = _grow(self._self_k[layer], 0, grow_to)
                self._self_v[layer] = _grow(self._self_v[layer], 0, grow_to)
        self._length[slots] = 0
        self._window_of[slots] = window
        return slots

    def close_sequences(self, sequences: Sequence[int]) -> None:
        self._sequences.give_back(sequences)

    def _ensure_time(self, length: int) -> None:
        if length > self._self_k[0].shape[2]:
            size = min(self.dims.n_text_ctx, -(-length // _TIME_CHUNK) * _TIME_CHUNK)
            for layer in range(self.dims.n_decoder_layers):
                self._self_k[layer] = _grow(self._self_k[layer], 2, size)
                self._self_v[layer] = _grow(self._self_v[layer], 2, size)

    def _cross_plans(self, windows: np.ndarray) -> list[_CrossPlan]:
        """Lay rows out as [windows, rows per window] so cross-attention is one batched call per width.

        Windows encoded at one width share a call: padded to the widest window in flight, every
        12 s clip's rows would read 1500 frames of keys and values while one 30 s window is decoding
        (in-process on the dev clips, such mixed calls were 15 % of all CPU time). Dense window
        slots are read through a slice (no copy); sparse ones are gathered.
        """
        frames = self._audio_frames[windows]
        widths = np.unique(frames)
        plans = []
        for limit in widths.tolist():
            rows = None if len(widths) == 1 else np.flatnonzero(frames == limit)
            plans.append(self._cross_plan(windows if rows is None else windows[rows], rows, int(limit)))
        return plans

    def _cross_plan(self, windows: np.ndarray, rows: np.ndarray | None, limit: int) -> _CrossPlan:
        unique = np.unique(windows)
        span = int(unique[-1] - unique[0] + 1)
        if span <= 2 * len(unique):
            source: slice | torch.Tensor = slice(int(unique[0]), int(unique[-1]) + 1)
            group = windows - unique[0]
            n_groups = span
        else:
            source = torch.as_tensor(unique, device=self.device)
            group = np.searchsorted(unique, windows)
            n_groups = len(unique)
        within = np.zeros(len(windows), dtype=np.int64)
        seen: dict[int, int] = {}
        for row, g in enumerate(group.tolist()):
            within[row] = seen.get(g, 0)
            seen[g] = within[row] + 1
        return _CrossPlan(None if rows is None else torch.as_tensor(rows, device=self.device), source,
                          torch.as_tensor(group, device=self.device), torch.as_tensor(within, device=self.device),
                          n_groups, int(within.max()) + 1, max(limit, 1))

    def _cross_attention(self, cq: torch.Tensor, layer: int, plans: list[_CrossPlan]) -> torch.Tensor:
        """cq [rows, h, count, dh] -> attention over each row's window's encoder output, same shape."""
        if len(plans) == 1:
            return self._cross_call(cq, layer, plans[0])
        out = torch.empty_like(cq)
        for plan in plans:
            out[plan.rows] = self._cross_call(torch.index_select(cq, 0, plan.rows), layer, plan)
        return out

    def _cross_call(self, q: torch.Tensor, layer: int, plan: _CrossPlan) -> torch.Tensor:
        _, h, count, dh = q.shape
        grid = q.new_zeros(plan.n_groups, plan.width, count, h, dh)
        grid[plan.group, plan.within] = q.transpose(1, 2)
        attn = F.scaled_dot_product_attention(
            grid.view(plan.n_groups, plan.width * count, h, dh).transpose(1, 2),
            _rows(self._cross_k[layer][:, :, : plan.limit], plan.source),
            _rows(self._cross_v[layer][:, :, : plan.limit], plan.source),
        )
        attn = attn.transpose(1, 2).reshape(plan.n_groups, plan.width, count, h, dh)[plan.group, plan.within]
        return attn.transpose(1, 2)

    def step(self, sequences: Sequence[int], tokens: Sequence[int | Sequence[int]]) -> np.ndarray:
        """step_logits copied to the host: the tests compare whole rows this way."""
        return self.step_logits(sequences, tokens).cpu().numpy()

    def step_logits(self, sequences: Sequence[int], tokens: Sequence[int | Sequence[int]]) -> torch.Tensor:
        """Feed each row its next token, or several at once; returns float32 logits [rows, n_vocab], on the device.

        A row given several tokens (a search's prompt) is prefilled: all of them go through the
        network in this one step, and its logits are those after the last. Rows are batched by
        how many tokens they take, so every row of an ordinary step shares one pass. The logits stay
        where they were made: serving reduces them there (engine/decoding/reduce.py).
        """
        seqs = np.asarray(sequences, dtype=np.int64)
        feeds = [tuple(t) if isinstance(t, (tuple, list)) else (t,) for t in tokens]
        counts = np.array([len(f) for f in feeds])
        if (counts == counts[0]).all():
            return self._forward(seqs, feeds)
        logits = torch.empty((len(feeds), self.dims.n_vocab), dtype=torch.float32, device=self.device)
        for count in np.unique(counts):
            rows = np.nonzero(counts == count)[0]
            logits[torch.as_tensor(rows, device=self.device)] = self._forward(seqs[rows], [feeds[row] for row in rows])
        return logits

    @torch.inference_mode()
    def _forward(self, seqs: np.ndarray, feeds: list[tuple[int, ...]]) -> torch.Tensor:
        """Feed rows the same number of tokens each; logits after each row's last token."""
        count = len(feeds[0])
        start = self._length[seqs]
        if start.max() + count > self.dims.n_text_ctx:
            raise SequenceTooLongError(f"a sequence reached {self.dims.n_text_ctx} tokens")
        t_max = _attended_length(int(start.max()) + count)
        self._ensure_time(t_max)
        self._flush_reorders()
        windows = self._window_of[seqs]
        if count == 1 and self._step_graphs is not None and (self._audio_frames[windows] == self.dims.n_audio_ctx).all():
            logits = self._step_graphs.step(self._graph_caches(), np.asarray(feeds)[:, 0], start, seqs, windows)
            self._length[seqs] += 1
            return logits
        dev = self.device
        slot = torch.as_tensor(seqs, device=dev)
        pos = torch.as_tensor(start, device=dev)[:, None] + torch.arange(count, device=dev)  # [rows, count]
        mask = (torch.arange(t_max, device=dev)[None, None, :] <= pos[:, :, None])[:, None]
        plans = self._cross_plans(windows)
        x = self.net.embed(torch.as_tensor(np.asarray(feeds), device=dev), pos)
        for layer in range(self.dims.n_decoder_layers):
            q, k, v = self.net.self_qkv(x, layer)
            cache_k, cache_v = self._self_k[layer], self._self_v[layer]
            cache_k[slot[:, None], :, pos] = k.transpose(1, 2)
            cache_v[slot[:, None], :, pos] = v.transpose(1, 2)
            # index_select copies whole [h, t, dh] blocks: half the time of cache[slot]'s per-element gather
            keys = torch.index_select(cache_k[:, :, :t_max], 0, slot)
            values = torch.index_select(cache_v[:, :, :t_max], 0, slot)
            x = self.net.self_out(x, F.scaled_dot_product_attention(q, keys, values, attn_mask=mask), layer)
            attn = self._cross_attention(self.net.cross_q(x, layer), layer, plans)
            x = self.net.cross_out(x, attn, layer)
            x = self.net.ffn(x, layer)
        self._length[seqs] += count
        return self.net.logits(x[:, -1]).float()

    def reorder(self, sequences: Sequence[int], sources: Sequence[int]) -> None:
        """Make row sequences[i] a copy of row sources[i] (beam search keeping its best parents).

        The copy waits for the next step, which applies every window's reorders in one gather and
        one scatter per cache instead of one of each per window (on a card, launches are the cost).
        Reorders that read or write rows an earlier pending one writes are applied first, so the
        result is that of applying each in turn.
        """
        dst = np.asarray(sequences, dtype=np.int64)
        src = np.asarray(sources, dtype=np.int64)
        if self._pending:
            written = np.concatenate([d for d, _, _ in self._pending])
            if np.isin(dst, written).any() or np.isin(src, written).any():
                self._flush_reorders()
        self._pending.append((dst, src, int(self._length[src].max(initial=0))))
        self._length[dst] = self._length[src]

    @torch.inference_mode()
    def _flush_reorders(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        t_max = max(t for _, _, t in pending)
        if not t_max:
            return
        d = torch.as_tensor(np.concatenate([d for d, _, _ in pending]), device=self.device)
        s = torch.as_tensor(np.concatenate([s for _, s, _ in pending]), device=self.device)
        for layer in range(self.dims.n_decoder_layers):
            self._self_k[layer][d, :, :t_max] = self._self_k[layer][s, :, :t_max]
            self._self_v[layer][d, :, :t_max] = self._self_v[layer][s, :, :t_max]

    def _graph_caches(self) -> Caches:
        """The caches as step graphs see them, with a scratch row no sequence slot can own."""
        if self._self_k[0].shape[0] <= self._sequences.capacity:
            for layer in range(self.dims.n_decoder_layers):
                self._self_k[layer] = _grow(self._self_k[layer], 0, self._sequences.capacity + 1)
                self._self_v[layer] = _grow(self._self_v[layer], 0, self._sequences.capacity + 1)
        return Caches(self._self_k, self._self_v, self._cross_k, self._cross_v, self._self_k[0].shape[0] - 1)

    @torch.inference_mode()
    def alignment_scores(self, requests: Sequence[tuple[int, Sequence[int]]]) -> list[np.ndarray]:
        """Cross-attention scores of the alignment heads for finished token sequences.

        Each request is (window, tokens); each answer is float32 [n_alignment_heads, len(tokens), 1500].
        """
        if not requests:
            return []
        longest = max(len(tokens) for _, tokens in requests)
        batch = torch.zeros(len(requests), longest, dtype=torch.long)
        for row, (_, tokens) in enumerate(requests):
            batch[row, : len(tokens)] = torch.as_tensor(list(tokens))
        slots = np.asarray([w for w, _ in requests], dtype=np.int64)
        frames = self._audio_frames[slots]
        limit = int(frames.max())
        valid = torch.as_tensor(np.arange(limit)[None, :] < frames[:, None], device=self.device)
        windows = torch.as_tensor(slots, device=self.device)
        layers = range(max(layer for layer, _ in self.alignment_heads) + 1)
        cross = [(self._cross_k[i][windows, :, :limit], self._cross_v[i][windows, :, :limit]) for i in layers]
        scores = self.net.alignment_scores(batch.to(self.device), cross, self.alignment_heads, valid)
        scores = scores.float().cpu().numpy()
        return [scores[row, :, : len(tokens)] for row, (_, tokens) in enumerate(requests)]
