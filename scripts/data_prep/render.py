"""SVG -> PNG with librsvg: in this process through its GObject bindings where Debian's
gir1.2-rsvg-2.0 and python3-gi-cairo are installed, else with rsvg-convert (librsvg2-bin), a
few processes at a time.

Both paths give the same bytes: the in-process one sizes the picture as `rsvg-convert -w S -h S
--keep-aspect-ratio` does (the largest that fits S x S, each side rounded up), scales the drawing
(not the viewport: that moves a few pixel values by 1 or 2 on some Tux Paint stamps) and writes
the PNG with the same cairo call, so a cache rendered by either trains the same model; all
34,330 PNGs of the current sets were checked byte for byte. It is about 40 times faster: a
process start per picture was most of rsvg-convert's cost, and fetch_data.sh from an empty
cache went from 20.5 to about 2 minutes on two cores. An SVG whose size is not in pixels
(other percentages, no viewBox) goes to rsvg-convert, which has the rules for those.

Each output is written to a temp file and renamed, so a half-written PNG never counts; an
existing PNG is not rendered again. Transparent background (the loader composites alpha
over white).
"""

import concurrent.futures
import contextlib
import math
import os
import shutil
import subprocess

from . import common

try:
    import gi

    gi.require_version("Rsvg", "2.0")
    from gi.repository import GLib, Rsvg
    import cairo
except (ImportError, ValueError):  # the bindings are optional: rsvg-convert does it all
    Rsvg = None

RSVG_CONVERT_DPI = 96  # rsvg-convert's default, for SVGs sized in physical units

PARALLEL = 2  # the machines this runs on are small and shared


def rsvg_convert():
    path = shutil.which("rsvg-convert")
    if not path:
        raise FileNotFoundError("rsvg-convert not found: install librsvg2-bin (scripts/setup.sh "
                                "lists it; Debian: apt-get install librsvg2-bin)")
    return path


def svg_text(svg):
    """The document's bytes where svg is the document itself, None where it is a path."""
    if isinstance(svg, bytes):
        return svg
    return svg.encode("utf-8") if svg.lstrip().startswith("<") else None


@contextlib.contextmanager
def temp_beside(png):
    """A temp path beside png (its folder made) for the caller to fill and os.replace onto
    png; whatever is left at it when the block ends is removed. No fsync: a PNG is cheap to
    render again, and the rename alone keeps a half-written one from counting."""
    os.makedirs(os.path.dirname(png), exist_ok=True)
    tmp = "%s.tmp.%d.png" % (png, os.getpid())
    try:
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def render_one(exe, svg, png, size):
    """svg: a path, or the SVG document as bytes/str (fed on stdin). Returns None or an error."""
    data = svg_text(svg)
    with temp_beside(png) as tmp:
        cmd = [exe, "-w", str(size), "-h", str(size), "--keep-aspect-ratio", "-o", tmp]
        if data is None:
            cmd.append(svg)
        try:
            proc = subprocess.run(cmd, input=data, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, timeout=60)
        except subprocess.TimeoutExpired:
            return "rsvg-convert timed out"
        if proc.returncode != 0 or not os.path.isfile(tmp) or os.path.getsize(tmp) == 0:
            return "rsvg-convert failed (%d): %s" % (proc.returncode,
                                                     proc.stderr.decode("utf-8", "replace").strip()[:200])
        os.replace(tmp, png)
        return None


class NotInPixels(Exception):
    """The SVG's size is not in pixels: leave it to rsvg-convert."""


def natural_size(handle):
    """The SVG's size in pixels as rsvg-convert takes it: its width and height, or its viewBox
    where both are left at 100% (OpenMoji's files). Raises NotInPixels otherwise."""
    has_size, width, height = handle.get_intrinsic_size_in_pixels()
    if not has_size:
        _, w, _, h, has_viewbox, viewbox = handle.get_intrinsic_dimensions()
        full = all(x.unit == Rsvg.Unit.PERCENT and x.length == 1.0 for x in (w, h))
        if not (full and has_viewbox):
            raise NotInPixels()
        width, height = viewbox.width, viewbox.height
    if width <= 0 or height <= 0:
        raise NotInPixels()
    return width, height


def render_in_process(svg, png, size):
    """Like render_one, in this process (needs Rsvg). Raises NotInPixels where rsvg-convert's
    own sizing rules are needed."""
    data = svg_text(svg)
    try:
        handle = Rsvg.Handle.new_from_file(svg) if data is None else Rsvg.Handle.new_from_data(data)
    except GLib.Error as e:
        return "librsvg cannot load it: %s" % e.message[:200]
    handle.set_dpi(RSVG_CONVERT_DPI)
    width, height = natural_size(handle)
    scale = min(size / width, size / height)
    out_w, out_h = math.ceil(width * scale), math.ceil(height * scale)
    surface = cairo.ImageSurface(cairo.FORMAT_ARGB32, out_w, out_h)
    context = cairo.Context(surface)
    context.scale(scale, scale)  # the drawing scaled, not the viewport: rsvg-convert's pixels
    viewport = Rsvg.Rectangle()
    viewport.x, viewport.y, viewport.width, viewport.height = 0, 0, width, height
    try:
        if not handle.render_document(context, viewport):
            return "librsvg could not render it"
    except GLib.Error as e:
        return "librsvg could not render it: %s" % e.message[:200]
    with temp_beside(png) as tmp:
        surface.write_to_png(tmp)
        os.replace(tmp, png)
    return None


def render_all(jobs, size, parallel=PARALLEL, log=print, what="images"):
    """jobs: [(svg path or SVG text, png path)]. Renders those whose PNG is missing.
    Returns {png path: error} for the failures (their PNGs do not exist afterwards)."""
    todo = [(svg, png) for svg, png in jobs if not os.path.isfile(png)]
    if not todo:
        return {}
    errors = {}
    if Rsvg is not None:
        log("rendering %d %s to %d px PNGs with librsvg in this process" % (len(todo), what, size))
        rest = []
        for done, (svg, png) in enumerate(todo, 1):
            try:
                err = render_in_process(svg, png, size)
                if err:
                    errors[png] = err
            except NotInPixels:
                rest.append((svg, png))
            if done % 10000 == 0:
                log("  %d / %d rendered" % (done, len(todo)))
        todo = rest
        if not todo:
            return errors
    exe = rsvg_convert()
    log("rendering %d %s to %d px PNGs with rsvg-convert (%d at a time)"
        % (len(todo), what, size, parallel))
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = {pool.submit(render_one, exe, svg, png, size): png for svg, png in todo}
        for done, fut in enumerate(concurrent.futures.as_completed(futures), 1):
            err = fut.result()
            if err:
                errors[futures[fut]] = err
            if done % 2000 == 0:
                log("  %d / %d rendered" % (done, len(todo)))
    return errors


def render_records(records, size, marker, log=print, what="images", prefix="render"):
    """Renders each record's "svg" (where it has one) to its "image" PNG. Returns the records
    whose image exists, without their "svg" key, and {png: error} for the failures (the first
    20 logged). Writes the `marker` file when nothing failed."""
    errors = render_all([(r["svg"], r["image"]) for r in records if "svg" in r], size, log=log,
                        what=what)
    for png, err in sorted(errors.items())[:20]:
        log("%s: %s: %s (left out)" % (prefix, png, err))
    kept = [r for r in records if r["image"] not in errors]
    for r in kept:
        r.pop("svg", None)
    if not errors:
        common.write_atomic(marker, b"rendered\n")
    return kept, errors
