"""Self-contained HTML: inline CSS, figures as base64 PNG data URIs, no external resources."""
from __future__ import annotations

import base64
import io
import math
from html import escape

_CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd;
 padding-bottom:.2em}p.subtitle{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}th{background:#f4f4f4}
td.text,th.text{text-align:left}tr.muted td{color:#999}
.scroll{overflow-x:auto;max-width:100%}
figure{margin:1em 0}figure img{max-width:100%;height:auto}figcaption{color:#555;font-size:.9em}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
.verdict{padding:.6em .9em;border-left:4px solid #888;background:#fafafa}
.verdict.reject{border-color:#c0392b}.verdict.keep{border-color:#27ae60}
details{margin:.6em 0}
.warn{padding:.6em .9em;border-left:4px solid #e67e22;background:#fdf6ec}
""".strip()


def fig_to_png(fig, *, dpi=110) -> bytes:
    """The PNG bytes of a matplotlib figure.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    dpi : int

    Returns
    -------
    bytes
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def png_to_data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI of PNG bytes.

    Parameters
    ----------
    png : bytes

    Returns
    -------
    str
    """
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def fig_to_data_uri(fig, *, dpi=110) -> str:
    """A ``data:image/png;base64,...`` URI of a matplotlib figure (embeddable in ``<img src>``).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    dpi : int

    Returns
    -------
    str
    """
    return png_to_data_uri(fig_to_png(fig, dpi=dpi))


def figure_html(src: str, *, caption=None, alt="figure") -> str:
    """A ``<figure>`` with an image and an optional caption.

    Parameters
    ----------
    src : str
        The image, a data URI (the page stays self-contained).
    caption : str, optional
    alt : str

    Returns
    -------
    str
        HTML.
    """
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{escape(src, quote=True)}" alt="{escape(alt, quote=True)}">{cap}</figure>'


def paragraph(text: str, *, cls=None) -> str:
    """A ``<p>`` of escaped text.

    Parameters
    ----------
    text : str
    cls : str, optional
        CSS class (``"warn"``, ``"verdict reject"`` ...).

    Returns
    -------
    str
        HTML.
    """
    c = f' class="{escape(cls, quote=True)}"' if cls else ""
    return f"<p{c}>{escape(text)}</p>"


def pre(text: str) -> str:
    """A ``<pre>`` block of escaped text.

    Parameters
    ----------
    text : str

    Returns
    -------
    str
        HTML.
    """
    return f"<pre>{escape(text)}</pre>"


def format_number(v, floatfmt=".4g") -> str:
    """A number as a reader wants it: thousands separated and no exponent from 1,000 up
    (``9,500`` and ``10,040``, never ``1.004e+04``), ``floatfmt`` below.

    Parameters
    ----------
    v : int or float
    floatfmt : str
        Format of numbers below 1,000 in magnitude.

    Returns
    -------
    str
    """
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if not math.isfinite(v):
        return ""
    if 1000 <= abs(v) < 1e15:
        return f"{v:,.0f}"
    return format(v, floatfmt)


def link_html(path, base=None, *, text=None) -> str:
    """A link to a file, relative to ``base`` (the folder of the page) when it lies below it.

    Parameters
    ----------
    path : str or Path
    base : str or Path, optional
        The folder holding the page; the link is relative to it when possible.
    text : str, optional
        The link text (default: the relative path).

    Returns
    -------
    str
        HTML.
    """
    import os
    from pathlib import Path

    p = Path(path)
    href = str(p)
    if base is not None:
        try:
            href = os.path.relpath(p.resolve(), Path(base).resolve())
        except ValueError:  # another drive on Windows
            href = p.resolve().as_uri()
    href = href.replace(os.sep, "/")
    return f'<a href="{escape(href, quote=True)}">{escape(text or href)}</a>'


def _cell(v, floatfmt):
    if v is None:
        return "", False
    if isinstance(v, bool):
        return ("yes" if v else "no"), True
    if isinstance(v, float):
        if not math.isfinite(v):
            return "", False
        return format_number(v, floatfmt), False
    if isinstance(v, int):
        return format_number(v, floatfmt), False
    try:  # numpy scalars
        import numpy as np

        if isinstance(v, np.integer):
            return format_number(int(v), floatfmt), False
        if isinstance(v, np.floating):
            return _cell(float(v), floatfmt)
    except ImportError:  # pragma: no cover
        pass
    return escape(str(v)), True


def table_html(rows, *, columns=None, floatfmt=".4g", muted=None, max_rows=None) -> str:
    """An HTML table from a list of dicts (or a DataFrame).

    Parameters
    ----------
    rows : list of dict or pandas.DataFrame
    columns : list of str, optional
        Columns to show, in order (default: keys of the first row).
    floatfmt : str
        Format of floats; NaN and None show as empty cells.
    muted : callable, optional
        Row predicate: rows for which it is true are greyed out.
    max_rows : int, optional
        Show at most this many rows, with a note on the rest.

    Returns
    -------
    str
        HTML.
    """
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")
    rows = list(rows)
    if not rows:
        return "<p><em>(no rows)</em></p>"
    columns = list(columns or rows[0].keys())
    shown = rows if max_rows is None else rows[:max_rows]
    body = []
    for r in shown:
        cells = []
        for c in columns:
            text, is_text = _cell(r.get(c), floatfmt)
            cells.append(f'<td class="text">{text}</td>' if is_text else f"<td>{text}</td>")
        cls = ' class="muted"' if muted is not None and muted(r) else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    head = "".join(f'<th class="text">{escape(str(c))}</th>' for c in columns)
    note = (f"<p><em>{len(rows) - len(shown)} more rows not shown.</em></p>"
            if len(shown) < len(rows) else "")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}"


def section(title: str, body_html: str, *, anchor=None) -> str:
    """A titled ``<section>`` around already-built HTML.

    Parameters
    ----------
    title : str
    body_html : str
    anchor : str, optional
        ``id`` of the section.

    Returns
    -------
    str
        HTML.
    """
    a = f' id="{escape(anchor, quote=True)}"' if anchor else ""
    return f"<section{a}><h2>{escape(title)}</h2>{body_html}</section>"


def html_page(title: str, sections, *, subtitle=None) -> str:
    """A complete, self-contained HTML page (inline CSS; pass figures as data URIs).

    Parameters
    ----------
    title : str
    sections : iterable of str
        HTML of each section (see :func:`section`).
    subtitle : str, optional

    Returns
    -------
    str
    """
    sub = f'<p class="subtitle">{escape(subtitle)}</p>' if subtitle else ""
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><h1>{escape(title)}</h1>{sub}\n{body}\n</body></html>\n"
    )
