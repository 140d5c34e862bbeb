"""Every slide of both decks fits the screen at 1280x720 and 1920x1080, measured in headless Chromium."""

from __future__ import annotations

import pytest

from course import slide_overflow, slides

pytestmark = pytest.mark.skipif(slide_overflow.find_chromium() is None,
                                reason="needs a headless chromium / google-chrome on PATH to lay the slides out")


@pytest.fixture(scope="module")
def decks(tmp_path_factory):
    out = tmp_path_factory.mktemp("decks")
    return slides.build_decks(out)


@pytest.mark.parametrize("language", slides.LANGUAGES)
def test_no_slide_runs_off_the_screen(decks, language):
    deck = next(d for d in decks if d.language == language)
    fits = slide_overflow.measure_deck(deck.path)
    source = (slides.Path(slides.__file__).resolve().parents[1] / "slides" / f"deck.{language}.md").read_text()
    sections = len([b for b in slides.SLIDE_SEPARATOR.split(source) if b.strip()])
    assert len(fits) == sections * len(slide_overflow.SIZES)        # every slide measured at every size
    over = [f.describe() for f in fits if not f.fits]
    assert not over, "\n".join(over)


def test_the_check_catches_an_overflowing_slide(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    tall = "\n".join(f"- line {i}" for i in range(40))
    for lang in slides.LANGUAGES:
        (src / f"deck.{lang}.md").write_text(f"# short\n\n---\n\n## too tall\n\n{tall}\n", encoding="utf-8")
    deck = slides.build_decks(tmp_path / "out", sources_dir=src, languages=("en",))[0]
    fits = slide_overflow.measure_deck(deck.path, sizes=((1280, 720),))
    assert [f.fits for f in fits] == [True, False]
    assert "too tall" in fits[1].describe()
