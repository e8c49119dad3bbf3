"""`aiaic serve`: a local web page where a person colourises a photo with its sound, or a video.

    aiaic serve --checkpoint runs/demo/full [--port 8000] [--host 127.0.0.1]

The page (GET /) has one form: a photo or a short video, and for a photo an optional sound
file. POST /colorize answers JSON: the grey input and the colourised result side by side (a
photo as PNG data, a video as a link under /results/), the r the model gave the sound, and a
note when the photo had no sound (the visual path alone, r = 0). Bad uploads (not an image or
video, unreadable sound, over `--max_upload_mb`) get an error message on the page with status
400 or 413; an unexpected failure is answered with status 500 and its message, and the server
goes on.

Built on the standard library's threaded HTTP server, with no web framework: one local user
at a time is what it serves, requests are colourised one at a time (a lock around the model),
and it binds to 127.0.0.1 unless told otherwise. Uploads are parsed with the standard
library's email parser (multipart/form-data).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import html
import io
import json
import os
import shutil
import tempfile
import threading
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image

from aiaic_jax import color
from aiaic_jax.data import folders, media
from aiaic_jax.inference import Colorizer

MAX_UPLOAD_MB = 50
MAX_VIDEO_SECONDS = 120


class UploadError(Exception):
    """A problem with what was uploaded; its message is shown on the page."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


def parse_form(content_type: str, body: bytes) -> dict[str, tuple[str, bytes]]:
    """multipart/form-data -> {field: (file name, bytes)}."""
    if not content_type.startswith("multipart/form-data"):
        raise UploadError("send the form as multipart/form-data")
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, tuple[str, bytes]] = {}
    if not message.is_multipart():
        return fields  # no parts: nothing was chosen
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = (part.get_filename() or "", part.get_payload(decode=True) or b"")
    return fields


def _png_data(rgb: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _grey(rgb: np.ndarray) -> np.ndarray:
    """What the model sees of a picture: its L as a grey image."""
    return np.asarray(color.rgb_float_to_uint8(color.gray_rgb_from_l(color.l_from_rgb_uint8(rgb))))


class Service:
    """What the handler calls: the model, a folder for uploads and video results, limits."""

    def __init__(self, colorizer: Colorizer, max_upload_mb: float = MAX_UPLOAD_MB):
        self.colorizer = colorizer
        self.max_bytes = int(max_upload_mb * 1e6)
        self.folder = tempfile.mkdtemp(prefix="aiaic_serve_")
        self.lock = threading.Lock()

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _save(self, name: str, data: bytes) -> str:
        extension = os.path.splitext(name)[1].lower()
        path = os.path.join(self.folder, f"{uuid.uuid4().hex}{extension}")
        with open(path, "wb") as f:
            f.write(data)
        return path

    def colorize(self, fields: dict[str, tuple[str, bytes]]) -> dict[str, Any]:
        name, data = fields.get("picture", ("", b""))
        if not data:
            raise UploadError("choose a photo or a video to colourise")
        kind = folders.kind(name)
        if kind not in ("image", "video"):
            raise UploadError(
                f"{name or 'the file'}: not a photo ({', '.join(media.IMAGE_EXTENSIONS)}) or a "
                f"video ({', '.join(media.VIDEO_EXTENSIONS)})"
            )
        path = self._save(name, data)
        sound_name, sound = fields.get("sound", ("", b""))
        with self.lock:
            if kind == "video":
                return self._video(name, path)
            return self._photo(name, path, sound_name, sound)

    def _photo(self, name: str, path: str, sound_name: str, sound: bytes) -> dict[str, Any]:
        try:
            rgb = media.load_image(path).rgb
        except media.MediaError:
            raise UploadError(f"{name}: not a readable image") from None
        audio = None
        if sound:
            try:
                audio = media.load_audio(
                    self._save(sound_name, sound), max_seconds=self.colorizer.audio_seconds
                )
            except media.MediaError:
                raise UploadError(f"{sound_name or 'the sound'}: not a readable sound") from None
        (result,) = self.colorizer.colorize_prepared([rgb], [audio])
        answer = {
            "kind": "image",
            "input": _png_data(_grey(rgb)),
            "result": _png_data(result.rgb),
            "r": round(result.relevance, 4),
            "has_audio": result.has_audio,
        }
        if not result.has_audio:
            answer["note"] = "no sound: coloured by the visual path alone (r = 0)"
        return answer

    def _video(self, name: str, path: str) -> dict[str, Any]:
        from aiaic_jax import film

        try:
            header = film.read_header(path)
        except media.MediaError:
            raise UploadError(f"{name}: not a readable video") from None
        if header.frames and header.frames / header.fps > MAX_VIDEO_SECONDS:
            raise UploadError(f"{name}: longer than {MAX_VIDEO_SECONDS} s", HTTPStatus.BAD_REQUEST)
        output = os.path.join(self.folder, f"{uuid.uuid4().hex}.mp4")
        try:
            summary = film.colorize_film(self.colorizer, path, output, progress=False)
        except media.MediaError as error:
            raise UploadError(f"{name}: {error.problem}") from None
        with open(output + ".shots.json") as f:
            shots = json.load(f)["shots"]
        heard = [s["mean_r_used"] for s in shots if s["mean_r_used"] is not None]
        answer = {
            "kind": "video",
            "result_url": f"/results/{os.path.basename(output)}",
            "r": round(float(np.mean(heard)), 4) if heard else 0.0,
            "has_audio": header.audio is not None,
            "summary": summary.split(": ", 1)[-1],
        }
        if header.audio is None:
            answer["note"] = "no sound: coloured by the visual path alone (r = 0)"
        return answer

    def result_file(self, name: str) -> str | None:
        path = os.path.join(self.folder, os.path.basename(name))
        return path if name.endswith(".mp4") and os.path.isfile(path) else None


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>aiaic: colourise with sound</title>
<style>
body {{ font-family: sans-serif; max-width: 980px; margin: 2em auto; color: #222; }}
.pair {{ display: flex; gap: 1em; }} .pair figure {{ margin: 0; flex: 1; }}
.pair img, .pair video {{ width: 100%; }} #error {{ color: #a00; }} #note {{ color: #555; }}
[hidden] {{ display: none !important; }}
</style></head><body>
<h1>Colourise a grey photo with its sound</h1>
<p>Model: {model}. A photo (jpg, png, webp) with an optional sound (wav, flac, ogg, mp3), or a
short video with its soundtrack.</p>
<form id="form">
<label>Photo or video <input type="file" name="picture" id="picture"></label><br>
<label>Sound (for a photo) <input type="file" name="sound" id="sound"></label><br>
<button type="submit" id="go">Colourise</button>
</form>
<p id="status"></p><p id="error"></p><p id="note"></p>
<div class="pair" id="pair" hidden>
<figure><figcaption>grey input</figcaption><img id="input" alt="grey input"></figure>
<figure><figcaption>colourised (r = <span id="r"></span>)</figcaption>
<img id="result" alt="colourised"><video id="video" controls hidden></video></figure>
</div>
<p><a id="download" hidden download>download the result</a></p>
<script>
document.getElementById("form").addEventListener("submit", async (event) => {{
  event.preventDefault();
  const show = (id, text) => {{ document.getElementById(id).textContent = text || ""; }};
  show("error"); show("note"); show("status", "colourising...");
  document.getElementById("pair").hidden = true;
  try {{
    const response = await fetch("/colorize", {{method: "POST", body: new FormData(event.target)}});
    const answer = await response.json();
    show("status");
    if (!response.ok) {{ show("error", answer.error); return; }}
    show("r", answer.r.toFixed(2)); show("note", answer.note);
    const image = document.getElementById("result"), video = document.getElementById("video");
    const link = document.getElementById("download"), input = document.getElementById("input");
    if (answer.kind === "image") {{
      input.src = answer.input; input.hidden = false; image.src = answer.result;
      image.hidden = false; video.hidden = true; link.href = answer.result;
      link.download = "colourised.png";
    }} else {{
      input.hidden = true; image.hidden = true; video.src = answer.result_url;
      video.hidden = false; link.href = answer.result_url; link.download = "colourised.mp4";
    }}
    link.hidden = false; document.getElementById("pair").hidden = false;
  }} catch (error) {{ show("status"); show("error", "the server did not answer: " + error); }}
}});
</script></body></html>
"""


def make_handler(service: Service, model: str) -> type[BaseHTTPRequestHandler]:
    page = PAGE.format(model=html.escape(model)).encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "aiaic"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet; errors are answered, not logged

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, answer: dict[str, Any]) -> None:
            self._send(status, json.dumps(answer).encode(), "application/json")

        def do_GET(self) -> None:
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
                return
            if self.path.startswith("/results/"):
                path = service.result_file(self.path[len("/results/") :])
                if path is not None:
                    with open(path, "rb") as f:
                        self._send(HTTPStatus.OK, f.read(), "video/mp4")
                    return
            self._json(HTTPStatus.NOT_FOUND, {"error": f"{self.path}: not found"})

        def do_POST(self) -> None:
            if self.path != "/colorize":
                self._json(HTTPStatus.NOT_FOUND, {"error": f"{self.path}: not found"})
                return
            try:
                length = size = int(self.headers.get("Content-Length") or 0)
                if length > service.max_bytes:
                    self.close_connection = True
                    # Read a moderately large upload, so that the client hears why; a huge one
                    # is cut off.
                    while 0 < length <= 20 * service.max_bytes:
                        chunk = self.rfile.read(min(1 << 20, length))
                        length = length - len(chunk) if chunk else 0
                    raise UploadError(
                        f"the upload is {size / 1e6:.1f} MB; the limit is "
                        f"{service.max_bytes / 1e6:g} MB",
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    )
                fields = parse_form(self.headers.get("Content-Type", ""), self.rfile.read(length))
                self._json(HTTPStatus.OK, service.colorize(fields))
            except UploadError as error:
                self._json(error.status, {"error": str(error)})
            except Exception as error:  # the page says what broke; the server goes on
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"failed: {error}"})

    return Handler


def serve(
    colorizer: Colorizer,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: float = MAX_UPLOAD_MB,
    model: str = "",
) -> tuple[ThreadingHTTPServer, Service]:
    """A started server (not yet serving: call `serve_forever`) and its service."""
    service = Service(colorizer, max_upload_mb)
    server = ThreadingHTTPServer((host, port), make_handler(service, model))
    server.daemon_threads = True
    return server, service
