"""Running an exported GGUF, with or without a control vector, in llama.cpp itself.

mechref does not ship llama.cpp: give the path of a ``llama-server`` binary (``--llama-server``
or ``MECHREF_LLAMA_SERVER``; one on ``PATH`` is found too) and the export verification also runs
the GGUF and the control vector there, through llama.cpp's own loaders (``-m``,
``--control-vector``), on the loopback interface only. Prompts are sent as token ids from the
model's own tokenizer, so llama.cpp and ``transformers`` read the same tokens; replies are greedy
(temperature 0) and end at the model's end-of-generation tokens.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from mechref.errors import MechrefError


def find_llama_server(explicit: str | Path | None = None) -> Path | None:
    """The ``llama-server`` binary to use: ``explicit``, else ``$MECHREF_LLAMA_SERVER``, else one on ``PATH``."""
    for candidate in (explicit, os.environ.get("MECHREF_LLAMA_SERVER"), shutil.which("llama-server")):
        if candidate:
            path = Path(candidate).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise MechrefError(f"{path} is not an executable llama-server binary")
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """One ``llama-server`` process serving one GGUF on 127.0.0.1, for a ``with`` block."""

    def __init__(
        self, binary: Path, model: Path, control_vector: Path | None = None, n_ctx: int = 2048, threads: int | None = None
    ):
        self.port = _free_port()
        command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port), "-c", str(n_ctx), "-np", "1"]
        if threads:
            command += ["-t", str(threads)]
        if control_vector is not None:
            command += ["--control-vector", str(control_vector)]
        self.command = command
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> LlamaServer:
        import tempfile

        # The server logs a lot: to a file, so that a full pipe never blocks it; its tail explains a failure.
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                tail = self.log.read().decode(errors="replace").strip().splitlines()[-3:]
                self.log.close()
                raise MechrefError(f"llama-server exited with code {self.process.returncode}: {' | '.join(tail)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise MechrefError("llama-server did not become ready within 10 minutes")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def greedy(self, token_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        """The greedy continuation of ``token_ids`` (stopping at end-of-generation), as token ids."""
        body = {
            "prompt": list(map(int, token_ids)),
            "n_predict": int(max_new_tokens),
            "temperature": 0.0,
            "top_k": 1,
            "cache_prompt": False,
            "return_tokens": True,
        }
        url = f"http://127.0.0.1:{self.port}/completion"
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as response:
            reply = json.loads(response.read())
        return [int(t) for t in reply.get("tokens", [])]
