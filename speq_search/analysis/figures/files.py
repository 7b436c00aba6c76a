"""Writing a figure: self-contained HTML (offline), and PNG/SVG/PDF through kaleido when it is installed
(``pip install 'speq-search[png]'``) and Chrome or Chromium is there; otherwise one line says which is missing."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import warnings
from pathlib import Path

NO_BROWSER = ("no Chrome or Chromium found for image export: run `plotly_get_chrome` (or apt-get install chromium), "
              "or set BROWSER_PATH to a Chrome executable")
NO_KALEIDO = ("kaleido is not installed (plotly draws PNG, SVG and PDF through it): pip install 'speq-search[png]' "
              "(or pip install kaleido)")


class ImageExportError(RuntimeError):
    """An image was asked for and none could be made (the HTML was written instead)."""


def browser_path() -> str | None:
    """The Chrome/Chromium kaleido will use, found as kaleido finds it: ``BROWSER_PATH``, a
    browser fetched by ``plotly_get_chrome``/``kaleido_get_chrome``, then the usual names on
    ``PATH`` and install locations."""
    try:
        from choreographer.browsers.chromium import Chromium

        path = Chromium.find_browser(skip_local=False)
    except ImportError:  # kaleido (and choreographer) not installed: export fails anyway
        path = os.environ.get("BROWSER_PATH") or next(
            (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome") if shutil.which(b)),
            None)
    except Exception:  # noqa: BLE001 - a broken browser lookup means no browser, not a crash
        path = None
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None


def browser_available() -> bool:
    """Whether kaleido can find a Chrome/Chromium to export images with."""
    return browser_path() is not None


IMAGE_FORMATS = (".png", ".svg", ".pdf")


@contextlib.contextmanager
def image_session():
    """Keep one browser open for several image exports (each export otherwise starts one)."""
    started = False
    if kaleido_installed() and browser_available():
        try:
            import kaleido

            kaleido.start_sync_server(silence_warnings=True)
            started = True
        except Exception:  # exports then start their own browser, or report why they cannot
            pass
    try:
        yield
    finally:
        if started:
            import kaleido

            kaleido.stop_sync_server(silence_warnings=True)


def kaleido_installed() -> bool:
    """Whether kaleido, which plotly draws images with, can be imported."""
    try:
        return importlib.util.find_spec("kaleido") is not None
    except (ImportError, ValueError):
        return False


def error_reason(err: BaseException) -> str:
    """``Type: the first line that says something`` (plotly's errors may begin with a blank line)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:160]}" if lines else type(err).__name__


def export_image(fig, path: Path, width: int = 900, height: int = 560) -> str | None:
    """Write ``fig`` as PNG/SVG/PDF; returns ``None``, or one line saying why it was skipped: what is
    missing (kaleido, then a browser) and how to install it, or the error the export raised."""
    if not kaleido_installed():
        return NO_KALEIDO
    if not browser_available():
        return NO_BROWSER
    try:
        with warnings.catch_warnings():  # plotly warns that a running image server ignores its options
            warnings.simplefilter("ignore", UserWarning)
            fig.write_image(str(path), width=width, height=height)
    except Exception as err:  # the browser failed to start, or kaleido failed
        return error_reason(err)
    return None


# Figures load plotly.js from one plotly.min.js beside them (written once per folder, 4.8 MB),
# not a copy inlined in every HTML file; still offline. Copy the .js with the .html files.
PLOTLYJS = "directory"


def ensure_plotlyjs(folder: Path) -> Path:
    """``folder/plotly.min.js`` (plotly's own bundle), written if missing, for pages that load it."""
    path = Path(folder) / "plotly.min.js"
    if not path.exists():
        from plotly.offline import get_plotlyjs

        path.write_text(get_plotlyjs(), encoding="utf-8")
    return path


def write_figure(fig, path: Path, png: bool = True, strict: bool = False) -> str:
    """Write ``fig`` to ``path``: HTML (self-contained, works offline), or an image format.

    HTML files load ``plotly.min.js`` from their folder (written there once). For ``.html``, a
    PNG is written beside it when ``png`` and a browser is present. For
    ``.png``/``.svg``/``.pdf`` without a browser, the HTML is written instead, and then
    ``strict`` raises :class:`ImageExportError` (the image was what the user asked for).
    Returns one line saying what was written or why an image was skipped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in IMAGE_FORMATS:
        why = export_image(fig, path)
        if why is None:
            return f"wrote {path}"
        html = path.with_suffix(".html")
        fig.write_html(str(html), include_plotlyjs=PLOTLYJS)
        note = f"wrote {html}; {path.suffix[1:].upper()} not made: {why}"
        if strict:
            raise ImageExportError(note)
        return note
    fig.write_html(str(path), include_plotlyjs=PLOTLYJS)
    if not png:
        return f"wrote {path}"
    why = export_image(fig, path.with_suffix(".png"))
    return f"wrote {path} and {path.with_suffix('.png').name}" if why is None else f"wrote {path}; PNG skipped: {why}"


__all__ = ["IMAGE_FORMATS", "NO_BROWSER", "NO_KALEIDO", "PLOTLYJS", "ImageExportError", "browser_available", "browser_path",
           "ensure_plotlyjs", "error_reason", "export_image", "image_session", "kaleido_installed", "write_figure"]
