"""``st4r-lite study NAME ...``: run one of the studies (the same as ``python -m st4r_lite.studies.NAME ...``)."""

from __future__ import annotations

import argparse

from st4r_lite.studies import (
    adapt_ceiling,
    adapt_compare,
    adapt_curve,
    ceiling,
    label_stats,
    learning_curve,
    match_resolution,
    matching_stage,
    motion_probe,
    recipe_timing,
    scorecard,
    static_vs_moving,
    video_memory,
    world_stats,
)

# name -> the study's own command line (its main(argv)); each module also runs as python -m st4r_lite.studies.NAME
STUDIES = {
    "adapt_ceiling": adapt_ceiling.main,
    "adapt_compare": adapt_compare.main,
    "adapt_curve": adapt_curve.main,
    "ceiling": ceiling.main,
    "label_stats": label_stats.main,
    "learning_curve": learning_curve.main,
    "match_resolution": match_resolution.main,
    "matching_stage": matching_stage.main,
    "motion_probe": motion_probe.main,
    "recipe_timing": recipe_timing.main,
    "scorecard": scorecard.main,
    "static_vs_moving": static_vs_moving.main,
    "video_memory": video_memory.main,
    "world_stats": world_stats.main,
}


def _add_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study", help="run a study behind the course's recorded numbers: " + ", ".join(STUDIES),
        description="Run one study with its own arguments (`st4r-lite study NAME --help`); the same as "
        "`python -m st4r_lite.studies.NAME ...`. The ablation, bench and report have their own commands.",
    )
    p.add_argument("name", choices=sorted(STUDIES), help="which study")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the study's own arguments")
    p.set_defaults(func=_run_study)


def _run_study(args: argparse.Namespace) -> None:
    STUDIES[args.name](args.args)
