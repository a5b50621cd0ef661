"""Tiny GGUF models from random weights, and a real llama-cpp-python OpenAI-compatible server that serves them.

Not a test file: tests/test_real_server.py and bench/real_server.py import it. Nothing is downloaded.
`write_model(path, seed)` writes a llama-architecture model of 0.73 MiB (research/llamacpp-server.md):
n_embd 64, 2 layers, 4 heads (4 KV heads), n_ff 128, context 512, 186,048 F32 parameters, an SPM tokenizer of 811 tokens
(byte fallback, printable ASCII, a few English words reachable by SPM merges, chat-role tokens) with a chat
template llama-cpp-python formats with Jinja2. The same arguments give a byte-identical file.

Random weights alone would emit raw bytes and empty tokens. Residual dimension 0 is therefore held at a
constant: every token embedding has `RESIDUAL_BIAS` there and no layer writes to it (row 0 of each
attention output and FFN down projection is zero), so column 0 of the output projection works as an output
bias (the constant reaches it divided by the final RMS norm: nearly constant). It suppresses the byte tokens,
`<unk>` and `<s>`, and favours whole words; `</s>` stays possible.

`write_model(path, seed, perturb=EPS)` is the model of `seed` with `EPS * init_std * N(0, 1)` added to every
tensor (each tensor's own init std, from an RNG of its own, seeded by `perturb_seed`): a retrained or
re-quantised copy of the same model, as a silent swap on a self-hosted server would serve it.

`TinyServer(folder, model)` runs `python -m llama_cpp.server` on a free loopback port, serving the file
through a fixed symlink; `restart(other)` swaps the weights behind the same port and alias.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import gguf
import numpy as np

ALIAS = "tiny-llama"
N_VOCAB = 811
N_EMBD, N_LAYER, N_HEAD, N_HEAD_KV, N_FF, N_CTX = 64, 2, 4, 4, 128, 512
ROPE_BASE, RMS_EPS = 1e4, 1e-5
RESIDUAL_BIAS = 1.0  # the constant held in residual dimension 0
SUPPRESS = -30.0  # output bias of the byte tokens, <unk> and <s>: never emitted
WORD_BIAS = 2.0  # output bias of whole words: the answers read like (odd) English
UNK, BOS, EOS = 0, 1, 2

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

# Words the tokenizer knows whole (with "▁", SentencePiece's space), chosen for the canaries' prompts:
# numbers, colours, coin faces, and everyday words to fill the rest.
_WORDS = (
    "zero one two three four five six seven eight nine ten "
    "red blue green yellow purple orange black white pink brown gray "
    "heads tails coin "
    "the an of and or to in on at by for with from is are was be it this that not but if so as we "
    "you they he she me my your yes no "
    "time day year world water fire earth light sound word name answer number house river tree stone "
    "cloud rain snow wind sun moon star city road book door hand eye "
    "go come see make take give know think say tell reply run walk read write "
    "good bad new old big small long short hot cold true false"
)
WORDS = tuple(_WORDS.split())
ROLES = ("system", "user", "assistant")

SPACE = "▁"
PRINTABLE = [chr(c) for c in range(0x21, 0x7F)]  # the 94 printable ASCII characters (a space is "▁")
ALNUM = string.ascii_lowercase + string.ascii_uppercase + string.digits


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """The tokens, their SPM scores (longer pieces merge first) and their types, N_VOCAB of them."""
    T = gguf.TokenType
    tokens: list[str] = ["<unk>", "<s>", "</s>"]
    types: list[int] = [T.UNKNOWN, T.CONTROL, T.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [T.BYTE] * 256
    pieces: list[str] = [*PRINTABLE, SPACE, *(SPACE + c for c in ALNUM), "<|", "|>"]
    seen = set(tokens) | set(pieces)
    for word in WORDS:  # every "▁"-prefix, so that SPM's pairwise merges reach the whole word
        for end in range(3, len(word) + 2):
            piece = (SPACE + word)[:end]
            if piece not in seen:
                seen.add(piece)
                pieces.append(piece)
    # Fill the vocabulary with the most frequent letter pairs of the words (ties alphabetical).
    pairs: dict[str, int] = {}
    for word in WORDS:
        for a, b in itertools.pairwise(word):
            pairs[a + b] = pairs.get(a + b, 0) + 1
    roles = [f"<|{role}|>" for role in ROLES]
    room = N_VOCAB - len(tokens) - len(pieces) - len(roles)
    ranked = [p for p in sorted(pairs, key=lambda p: (-pairs[p], p)) if p not in seen]
    if len(ranked) < room:
        raise AssertionError(f"only {len(ranked)} letter pairs for {room} free tokens")
    pieces += ranked[:room]
    tokens += pieces
    types += [T.NORMAL] * len(pieces)
    tokens += roles
    types += [T.USER_DEFINED] * len(roles)  # matched whole in the chat template's text
    scores = [0.0] * 3 + [-1000.0] * 256
    scores += [float(len(p)) - i * 1e-4 for i, p in enumerate(pieces)]
    scores += [0.0] * len(roles)
    assert len(tokens) == len(set(tokens)) == len(scores) == len(types) == N_VOCAB
    return tokens, scores, [int(t) for t in types]


def _output_bias(tokens: list[str], types: list[int]) -> np.ndarray:
    words = {SPACE + w for w in WORDS}
    bias = np.zeros(len(tokens), dtype=np.float32)
    for i, (tok, kind) in enumerate(zip(tokens, types, strict=True)):
        if kind in (gguf.TokenType.BYTE, gguf.TokenType.UNKNOWN) or i == BOS:
            bias[i] = SUPPRESS
        elif tok in words:
            bias[i] = WORD_BIAS
    return bias


def tensors(seed: int) -> list[tuple[str, np.ndarray, float]]:
    """The model of `seed`: (GGUF name, F32 array in numpy's row-major shape, init std) in file order."""
    rng = np.random.default_rng(seed)
    tokens, _, types = vocabulary()

    def normal(std: float, *shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def norm() -> np.ndarray:
        return (1.0 + normal(0.1, N_EMBD)).astype(np.float32)

    head_dim = N_EMBD // N_HEAD
    kv = head_dim * N_HEAD_KV
    embd = normal(1.0, N_VOCAB, N_EMBD)
    embd[:, 0] = RESIDUAL_BIAS
    out: list[tuple[str, np.ndarray, float]] = [("token_embd.weight", embd, 1.0)]
    for i in range(N_LAYER):
        o = normal(N_EMBD**-0.5, N_EMBD, N_EMBD)
        o[0] = 0.0  # nothing writes to residual dimension 0
        down = normal(N_FF**-0.5, N_EMBD, N_FF)
        down[0] = 0.0
        out += [
            (f"blk.{i}.attn_norm.weight", norm(), 0.1),
            (f"blk.{i}.attn_q.weight", normal(N_EMBD**-0.5, N_EMBD, N_EMBD), N_EMBD**-0.5),
            (f"blk.{i}.attn_k.weight", normal(N_EMBD**-0.5, kv, N_EMBD), N_EMBD**-0.5),
            (f"blk.{i}.attn_v.weight", normal(N_EMBD**-0.5, kv, N_EMBD), N_EMBD**-0.5),
            (f"blk.{i}.attn_output.weight", o, N_EMBD**-0.5),
            (f"blk.{i}.ffn_norm.weight", norm(), 0.1),
            (f"blk.{i}.ffn_gate.weight", normal(N_EMBD**-0.5, N_FF, N_EMBD), N_EMBD**-0.5),
            (f"blk.{i}.ffn_up.weight", normal(N_EMBD**-0.5, N_FF, N_EMBD), N_EMBD**-0.5),
            (f"blk.{i}.ffn_down.weight", down, N_FF**-0.5),
        ]
    head_std = 0.4
    head = normal(head_std, N_VOCAB, N_EMBD)
    head[:, 0] = _output_bias(tokens, types)  # times the (normalised) constant of residual dimension 0
    out += [("output_norm.weight", norm(), 0.1), ("output.weight", head, head_std)]
    return out


def write_model(path: Path | str, seed: int, perturb: float = 0.0, perturb_seed: int = 0) -> Path:
    """Write the model of `seed` (plus `perturb` x init std of noise, drawn from `perturb_seed`) to `path`."""
    path = Path(path)
    arrays = tensors(seed)
    if perturb:
        noise = np.random.default_rng([perturb_seed, seed, 0x7E57])
        arrays = [
            (name, (a + perturb * std * noise.standard_normal(a.shape)).astype(np.float32), std)
            for name, a, std in arrays
        ]
    tokens, scores, types = vocabulary()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(ALIAS)  # the same header, metadata and size for every seed and perturbation
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(ROPE_BASE)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(UNK)
    writer.add_bos_token_id(BOS)
    writer.add_eos_token_id(EOS)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(True)
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, array, _ in arrays:
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --- the server -------------------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerError(RuntimeError):
    """The server did not come up: what happened, with the end of its log."""


class TinyServer:
    """`python -m llama_cpp.server` serving `model` as ALIAS on 127.0.0.1, through the symlink folder/served.gguf.

    A context manager: the process is always killed on exit. `restart(other)` points the symlink at
    another file and restarts on the same port (about a second of connection-refused in between).
    """

    def __init__(
        self,
        folder: Path,
        model: Path,
        *,
        port: int | None = None,
        startup_timeout: float = 60,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.folder = folder
        self.extra_args = list(extra_args)  # more server options, e.g. ["--type_k", "0", "--type_v", "0"]
        self.link = folder / "served.gguf"
        self.port = port or free_port()
        self.log = folder / f"llama-server-{self.port}.log"
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.serving: Path | None = None
        self.starts = 0
        self._point(model)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _point(self, model: Path) -> None:
        tmp = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(Path(model).resolve(), tmp)
        os.replace(tmp, self.link)  # atomic: the link always names one whole file
        self.serving = Path(model)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.link),
            "--model_alias",
            ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(N_CTX),
            "--n_threads",
            "1",
            "--n_threads_batch",
            "1",
            "--n_gpu_layers",
            "0",
            *self.extra_args,
        ]

    def start(self) -> TinyServer:
        if self.proc is not None and self.proc.poll() is None:
            raise ServerError("the server is already running")
        with self.log.open("ab") as log:
            log.write(f"\n=== start {self.starts + 1}: {self.serving} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder
            )
        self.starts += 1
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"llama_cpp.server exited with code {self.proc.returncode}:\n{self.tail()}")
            if self.ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"llama_cpp.server did not answer GET /v1/models in {self.startup_timeout}s:\n{self.tail()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                return bool(response.status == 200 and ALIAS.encode() in response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self, with_file: Path | None = None) -> TinyServer:
        """Stop, point the symlink at `with_file` (default: the same file), start again on the same port."""
        self.stop()
        if with_file is not None:
            self._point(with_file)
        return self.start()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> TinyServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
