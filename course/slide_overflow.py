"""Does every slide of a built deck fit on the screen? Measured in a real browser (headless Chromium).

``python -m course.slide_overflow slides/build/st4r_lite.en.html [--size 1280x720 --size 1920x1080]`` prints one
line per slide that runs off the screen and exits 1 when there is one (0 when all fit, 2 without Chromium).

How: a copy of the deck (beside the original, so ``plotly.min.js`` resolves) gets a script that, once reveal.js
is ready, shows each slide in turn and records

- ``scroll``: the slide's content height in slide pixels (reveal.js lays a slide out at the deck's ``height``,
  then scales it to the window; content taller than ``height`` is cut off at the bottom), and
- ``bottom`` / ``right``: how far the lowest / rightmost element reaches in window pixels (after the scaling),

and writes them into the page as JSON; Chromium's ``--dump-dom`` prints that page. No DevTools protocol, no
Python browser driver: only the ``chromium`` binary.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SIZES", "SlideFit", "find_chromium", "measure_deck", "main"]

SIZES = ((1280, 720), (1920, 1080))
_MARK = "slide-fit-report"
_PROBE = """<script>
(function () {
  function measure() {
    Reveal.configure({transition: 'none', backgroundTransition: 'none'});
    var cfg = Reveal.getConfig(), out = [];
    Reveal.getHorizontalSlides().forEach(function (slide, i) {
      Reveal.slide(i, 0);
      Reveal.layout();
      var bottom = 0, right = 0;
      slide.querySelectorAll('*').forEach(function (el) {
        var r = el.getBoundingClientRect();
        if (r.width > 0 && r.height > 0) { bottom = Math.max(bottom, r.bottom); right = Math.max(right, r.right); }
      });
      var title = slide.querySelector('h1, h2, h3');
      out.push({index: i, title: title ? title.textContent.trim() : '', scroll: slide.scrollHeight,
                height: cfg.height, bottom: bottom, right: right,
                window_height: window.innerHeight, window_width: window.innerWidth});
    });
    var pre = document.createElement('pre');
    pre.id = '%(mark)s';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  if (Reveal.isReady()) { setTimeout(measure, 500); } else { Reveal.on('ready', function () { setTimeout(measure, 500); }); }
})();
</script>""" % {"mark": _MARK}


@dataclass
class SlideFit:
    """One slide at one window size: does its content fit (in slide pixels and on the screen)?"""

    index: int
    title: str
    window: tuple[int, int]
    scroll: float          # content height, slide pixels
    height: float          # the deck's slide height, slide pixels
    bottom: float          # lowest element's bottom edge, window pixels
    right: float           # rightmost element's right edge, window pixels

    @property
    def fits(self) -> bool:
        w, h = self.window
        return self.scroll <= self.height + 1 and self.bottom <= h + 1 and self.right <= w + 1

    def describe(self) -> str:
        w, h = self.window
        return (f"slide {self.index} ({self.title[:50]!r}) at {w}x{h}: content {self.scroll:.0f} px tall in a "
                f"{self.height:.0f} px slide; lowest element ends at {self.bottom:.0f} of {h} px, rightmost at "
                f"{self.right:.0f} of {w} px")


def find_chromium() -> str | None:
    """The path of a Chromium / Chrome binary on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def measure_deck(deck, sizes=SIZES, chromium: str | None = None, timeout: float = 120.0) -> list[SlideFit]:
    """Measure every slide of the built deck HTML ``deck`` at each window size (width, height).

    Returns one :class:`SlideFit` per (size, slide). Raises FileNotFoundError without Chromium (or the deck)
    and RuntimeError when the page reported nothing (reveal.js did not start)."""
    deck = Path(deck)
    if not deck.is_file():
        raise FileNotFoundError(f"no deck at {str(deck)!r}; build it with `make slides`")
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium / google-chrome on PATH: the slide check needs a headless browser")
    page = deck.read_text(encoding="utf-8")
    if "</body>" not in page:
        raise RuntimeError(f"{deck} has no </body>: not a built deck")
    probe = deck.with_name(f".{deck.stem}.fit-probe.html")
    probe.write_text(page.replace("</body>", _PROBE + "</body>", 1), encoding="utf-8")
    fits = []
    try:
        for w, h in sizes:
            cmd = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
                   "--enable-unsafe-swiftshader", "--hide-scrollbars", f"--window-size={w},{h}",
                   "--virtual-time-budget=20000", "--dump-dom", probe.resolve().as_uri()]
            dom = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout
            found = re.search(rf'<pre id="{_MARK}">(.*?)</pre>', dom, re.S)
            if not found:
                raise RuntimeError(f"the deck {deck.name} reported no measurements at {w}x{h} "
                                   "(reveal.js did not start?)")
            text = found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
            for m in json.loads(text.replace("&amp;", "&")):
                fits.append(SlideFit(m["index"], m["title"], (w, h), m["scroll"], m["height"], m["bottom"],
                                     m["right"]))
    finally:
        probe.unlink(missing_ok=True)
    return fits


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1280x720, got {text!r}") from None
    return w, h


def main(argv: list[str] | None = None) -> int:
    """Print the slides that run off the screen; exit 1 if any, 2 when Chromium is missing."""
    ap = argparse.ArgumentParser(prog="python -m course.slide_overflow", description=__doc__.splitlines()[0])
    ap.add_argument("decks", nargs="+", help="built deck HTML files (slides/build/st4r_lite.<lang>.html)")
    ap.add_argument("--size", type=_size, action="append", help="window WxH (default: 1280x720 and 1920x1080)")
    args = ap.parse_args(argv)
    bad = 0
    for deck in args.decks:
        try:
            fits = measure_deck(deck, tuple(args.size or SIZES))
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        over = [f for f in fits if not f.fits]
        bad += len(over)
        print(f"{deck}: {len(fits) - len(over)} of {len(fits)} slide views fit")
        for f in over:
            print("  " + f.describe())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
