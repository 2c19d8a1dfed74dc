"""SVG -> PNG with rsvg-convert (librsvg2-bin), a few processes at a time.

Each output is written to a temp file and renamed, so a half-written PNG never counts; an
existing PNG is not rendered again. Transparent background (the loader composites alpha
over white).
"""

import concurrent.futures
import os
import shutil
import subprocess

from . import common

PARALLEL = 2  # the machines this runs on are small and shared


def rsvg_convert():
    path = shutil.which("rsvg-convert")
    if not path:
        raise FileNotFoundError("rsvg-convert not found: install librsvg2-bin (scripts/setup.sh "
                                "lists it; Debian: apt-get install librsvg2-bin)")
    return path


def render_one(exe, svg, png, size):
    """svg: a path, or the SVG document as bytes/str (fed on stdin). Returns None or an error."""
    os.makedirs(os.path.dirname(png), exist_ok=True)
    tmp = "%s.tmp.%d.png" % (png, os.getpid())
    cmd = [exe, "-w", str(size), "-h", str(size), "--keep-aspect-ratio", "-o", tmp]
    data = None
    if isinstance(svg, (bytes, str)) and (isinstance(svg, bytes) or svg.lstrip().startswith("<")):
        data = svg.encode("utf-8") if isinstance(svg, str) else svg
    else:
        cmd.append(svg)
    try:
        proc = subprocess.run(cmd, input=data, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=60)
        if proc.returncode != 0 or not os.path.isfile(tmp) or os.path.getsize(tmp) == 0:
            return "rsvg-convert failed (%d): %s" % (proc.returncode,
                                                     proc.stderr.decode("utf-8", "replace").strip()[:200])
        os.replace(tmp, png)
        return None
    except subprocess.TimeoutExpired:
        return "rsvg-convert timed out"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def render_all(jobs, size, parallel=PARALLEL, log=print, what="images"):
    """jobs: [(svg path or SVG text, png path)]. Renders those whose PNG is missing.
    Returns {png path: error} for the failures (their PNGs do not exist afterwards)."""
    todo = [(svg, png) for svg, png in jobs if not os.path.isfile(png)]
    if not todo:
        return {}
    exe = rsvg_convert()
    log("rendering %d %s to %d px PNGs with rsvg-convert (%d at a time)"
        % (len(todo), what, size, parallel))
    errors = {}
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
