"""The recipe timing study: it times the stages the Makefile runs, and its projection is steps × s/step + checks."""

import re
from pathlib import Path

import pytest

from st4r_lite.studies import recipe_timing

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"


def _recipe_text() -> str:
    text = MAKEFILE.read_text()
    text = re.sub(r"\\\n\s*", " ", text)                                    # join continued lines
    variables = dict(re.findall(r"^(TINY_\w+) \??= (.*)$", text, flags=re.M))
    block = text[text.index("tiny-checkpoint: install"):text.index("tiny-records:")]
    return re.sub(r"\$\((TINY_\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), block)


def test_the_timed_stages_are_the_makefiles():
    recipe = _recipe_text()
    commands = [c for c in recipe.split("\n") if " pretrain " in c]
    assert len(commands) == len(recipe_timing.STAGES) == 3
    for command, (name, (total, args)) in zip(commands, recipe_timing.STAGES.items()):
        tokens = command.split()
        assert tokens[tokens.index("--steps") + 1] == str(total), name
        wanted = [a for a in args + recipe_timing.COMMON if a != "{prev}"]
        for flag, value in zip(wanted, wanted[1:]):
            if flag.startswith("--") and not value.startswith("--"):
                assert tokens[tokens.index(flag) + 1] == value, (name, flag)
        assert "OMP_NUM_THREADS=2" in command, name


def test_projection_adds_one_check_per_eval_interval():
    measured = {name: {"s_per_step": 0.5, "check_s": 6.0} for name in recipe_timing.STAGES}
    out = recipe_timing.project(measured)
    assert out["minutes"]["stage1"] == round((3600 * 0.5 + 9 * 6.0) / 60, 1)
    assert out["minutes"]["stage2"] == round((2400 * 0.5 + 6 * 6.0) / 60, 1)
    assert out["hours"] == round(sum(out["minutes"].values()) / 60, 2)


def test_too_few_steps_is_refused():
    with pytest.raises(SystemExit):
        recipe_timing.main(["--steps", "5"])


def test_projection_of_a_candidate_stage_uses_its_own_length():
    measured = {"stage3": {"s_per_step": 1.25, "check_s": 5.0}}
    out = recipe_timing.project(measured, totals={"stage3": 3000})
    assert out["minutes"] == {"stage3": round((3000 * 1.25 + 7 * 5.0) / 60, 1)}


def test_unknown_stage_is_refused():
    with pytest.raises(SystemExit):
        recipe_timing.main(["--stages", "stage4"])
