"""Course tooling outside the runtime package: the slide decks and the notebooks' .ipynb twins."""
