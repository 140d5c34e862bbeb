# st4r_lite: the two commands a student needs are `make demo` and `make test`.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
NOTEBOOKS = $(sort $(wildcard notebooks/[0-9]*.py))
OUT ?= out

.PHONY: help install install-dev demo test test-full test-fast notebooks check-notebooks lint slides tiny-checkpoint tiny-records adapt-records gpu-small notebook-timings clean

help:
	@echo "make demo   - install what is needed, then run the main job on the embedded synthetic world"
	@echo "make test   - install the dev and video extras, then run the whole test suite (pytest + nbval, notebooks in quick mode)"
	@echo "make test-full - the same with the notebooks in full mode (ST4R_QUICK=0: 30+ minutes on a CPU)"
	@echo "make notebooks - regenerate notebooks/*.ipynb from their jupytext .py sources"
	@echo "make slides - build the reveal.js deck in slides/ from the recorded results"
	@echo "make tiny-checkpoint / tiny-records / adapt-records - retrain data/tiny.pt (~2.7 h) and re-record its numbers"
	@echo "make gpu-small - on a CUDA GPU: bench, train and score the small preset, records in data/gpu_small (~11 min on an H200)"

install:
	$(PIP) install -q -e .

# What the tests need: the dev tools and the video extra (PyAV + OpenCV; notebook 08 and the video tests read video).
install-dev:
	$(PIP) install -q -e '.[dev,video]'

demo: install
	$(PYTHON) -m st4r_lite.cli demo --out $(OUT)/demo

# Notebooks run in quick mode under `make test` (st4r_lite.runtime.quick_mode: ST4R_QUICK decides when set);
# `make test-full` (or `make test ST4R_QUICK=0`) runs them in full mode, as a student does on a GPU.
ST4R_QUICK ?= 1

test: install-dev
	ST4R_QUICK=$(ST4R_QUICK) $(PYTHON) -m pytest -q tests
	ST4R_QUICK=$(ST4R_QUICK) $(PYTHON) -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/

test-full:
	$(MAKE) test ST4R_QUICK=0

test-fast: install-dev
	$(PYTHON) -m pytest -q -m "not slow" tests

notebooks:
	$(PYTHON) -m course.notebook_sync write $(NOTEBOOKS)

# Run every notebook under nbval and record per-notebook time and outcome (quick mode unless ST4R_QUICK=0).
notebook-timings: install-dev
	ST4R_QUICK=$(ST4R_QUICK) $(PYTHON) -m course.notebook_sync timings --out notebooks/TIMINGS.md $(NOTEBOOKS)

check-notebooks:
	$(PYTHON) -m course.notebook_sync check $(NOTEBOOKS)

lint:
	$(PYTHON) -m ruff check st4r_lite course tools tests

slides: install
	$(PYTHON) -m course.slides --out slides/build

# The shipped data/tiny.pt and what records its numbers (world v2), trained in three stages, 16 pairs a step (2 clips
# x 8 frames), both cores of this 2-core CPU (TINY_THREADS torch threads; 0.84 s a step idle, 9600 steps ~ 2.3 hours):
#  1. $(TINY_RUN): the whole 3600-step schedule from scratch, frame gaps up to 2.5 (~50 min);
#  2. $(TINY_RUN2): 2400 more steps from stage 1's weights (`pretrain --init`, a fresh schedule at 2e-4), frame gaps
#     up to 4 (pairs far from the anchor: the world placement of far frames limited the reconstruction) and the
#     motion loss (--motion-weight 3: every pixel's motion from the anchor pair, static pixels included) (~35 min);
#  3. $(TINY_RUN3): the same recipe again for 3600 steps from stage 2's weights (another warm-up and decay: the
#     reconstruction of far frames kept improving with pairs seen) (~50 min).
# When a stage's run file exists it is resumed (`pretrain --resume`, bit for bit), so an interrupted
# `make tiny-checkpoint` continues where it stopped; TINY_STOP=N stops stage 1 after step N (run make again later).
TINY_RUN = runs/tiny_v2.pt
TINY_RUN2 = runs/tiny_v3.pt
TINY_RUN3 = runs/tiny_v4.pt
TINY_STEPS = 3600
TINY_STOP ?= $(TINY_STEPS)
TINY_THREADS ?= 2
TINY_STAGE23 = --batch 2 --frames 8 --lr 2e-4 --warmup 50 --max-frame-gap 4 --dynamic-factor 0 --motion-weight 3 \
	--eval-every 400 --save-every 100 --no-progress
tiny-checkpoint: install
	OMP_NUM_THREADS=$(TINY_THREADS) $(PYTHON) -m st4r_lite.cli pretrain --preset tiny --steps $(TINY_STEPS) \
		--stop-at $(TINY_STOP) --batch 2 --frames 8 --lr 5e-4 --warmup 100 --max-frame-gap 2.5 --dynamic-factor 0 \
		--eval-every 400 --save-every 100 --no-progress --out $(TINY_RUN) $(if $(wildcard $(TINY_RUN)),--resume)
	@$(PYTHON) -c "import sys; from st4r_lite.train.checkpoint import load_train_checkpoint as load; \
		s = load('$(TINY_RUN)')['state']['step']; \
		sys.exit(0 if s >= $(TINY_STEPS) else f'stage 1 stopped at step {s} of $(TINY_STEPS): run make tiny-checkpoint again')"
	OMP_NUM_THREADS=$(TINY_THREADS) $(PYTHON) -m st4r_lite.cli pretrain --init $(TINY_RUN) --steps 2400 $(TINY_STAGE23) \
		--out $(TINY_RUN2) $(if $(wildcard $(TINY_RUN2)),--resume)
	OMP_NUM_THREADS=$(TINY_THREADS) $(PYTHON) -m st4r_lite.cli pretrain --init $(TINY_RUN2) --steps 3600 $(TINY_STAGE23) \
		--out $(TINY_RUN3) $(if $(wildcard $(TINY_RUN3)),--resume)
	$(PYTHON) -m st4r_lite.cli export $(TINY_RUN3) data/tiny.pt --eval data/tiny_eval.json
	cp $(TINY_RUN:.pt=.jsonl) data/tiny_train_log.jsonl
	cp $(TINY_RUN2:.pt=.jsonl) data/tiny_train_log_stage2.jsonl
	cp $(TINY_RUN3:.pt=.jsonl) data/tiny_train_log_stage3.jsonl
	$(MAKE) tiny-records

# The GPU check of the small preset (needs a CUDA GPU; ~11 minutes on an H200): bench, two training stages on
# clips rendered on the GPU, export and scorecard of each (tools/gpu_small.sh); STEPS=580 pins stage 1's length
# as recorded (otherwise the script derives it from the bench and TRAIN_SECONDS = 210).
gpu-small: install
	mkdir -p data/gpu_small
	STEPS=580 PYTHON=$(PYTHON) bash -o pipefail -c 'bash tools/gpu_small.sh data/gpu_small 210 2>&1 | tee data/gpu_small/gpu_log.txt'

# Everything that records the shipped checkpoint's numbers (run after replacing data/tiny.pt).
tiny-records:
	$(PYTHON) -m st4r_lite.studies.learning_curve data/tiny_train_log.jsonl data/tiny_train_log_stage2.jsonl \
		data/tiny_train_log_stage3.jsonl --pairs-per-step 16 --png data/tiny_learning_curve.png
	$(PYTHON) -m st4r_lite.studies.scorecard data/tiny.pt --train-ckpt $(TINY_RUN3) --json data/tiny_scorecard.json
	$(PYTHON) -m st4r_lite.studies.ceiling --model data/tiny.pt --frames 8 16 --json data/quality_ceiling.json
	$(PYTHON) -m st4r_lite.studies.motion_probe data/tiny.pt $(TINY_RUN) $(TINY_RUN2) --json data/motion_probe.json
	$(PYTHON) -m st4r_lite.studies.match_resolution --checkpoint data/tiny.pt --json data/match_resolution.json
	$(PYTHON) -m st4r_lite.studies.object_placement data/tiny.pt --num-clips 16 --overfit-steps 150 \
		--json data/object_placement/placement_tiny.json
	$(PYTHON) -m st4r_lite.studies.object_placement data/tiny.pt --num-clips 48 --json data/object_placement/shrink_tiny_48.json

# The adaptation and ablation records of the shipped checkpoint (about 1 hour on this CPU; each file keeps its command).
S12 = 600000,600001,600002,600003,600004,600005,600006,600007,600008,600009,600010,600011
ABLATION = ablation --benchmark worldtrack-lite --domain wild --seeds 0,1,2 \
	--variants none,baseline,mask,sigma,robust,oracle_mask,conf_sigma --peers static,combinational \
	--tracker sim-latch --depth sim --query-stride 4 --max-seqs 3
adapt-records:
	$(PYTHON) -m st4r_lite.cli study static_vs_moving --checkpoint data/tiny.pt --seeds 0-29 --json data/static_vs_moving.json
	$(PYTHON) -m st4r_lite.studies.adapt_ceiling --checkpoint data/tiny.pt --first-seed 600000 --num-clips 12 \
		--taus 0,0.05,0.1,0.15,0.2 --json data/adapt_ceiling.json
	$(PYTHON) -m st4r_lite.studies.adapt_ceiling --checkpoint data/tiny.pt --first-seed 610000 --num-clips 12 \
		--taus 0,0.05,0.1,0.15,0.2 --json data/adapt_ceiling_tau_selection.json
	$(PYTHON) -m st4r_lite.studies.adapt_curve --checkpoint data/tiny.pt --steps 0,15 --seeds $(S12) --json data/adapt_curve_default.json
	$(PYTHON) -m st4r_lite.studies.adapt_curve --checkpoint data/tiny.pt --steps 0,15 --seeds $(S12) --set reanchor=false \
		--json data/adapt_curve_steps_only.json
	$(PYTHON) -m st4r_lite.studies.adapt_curve --checkpoint data/tiny.pt --set lr=1e-4 --json data/adapt_curve_quick.json
	$(PYTHON) -m st4r_lite.studies.adapt_curve --checkpoint data/tiny.pt --steps 0,15 --set align_where=recon_confident \
		--json data/adapt_curve_recon_confident.json
	$(PYTHON) -m st4r_lite.studies.adapt_curve --checkpoint data/tiny.pt --steps 0,15,30 --shift size_scale=1.6 \
		--json data/adapt_curve_shift_size.json
	$(PYTHON) -m st4r_lite.studies.adapt_curve --checkpoint data/tiny.pt --steps 0,15,30 --shift size_scale=1.6 --set lr=1e-4 \
		--json data/adapt_curve_shift_size_lr1e-4.json
	$(PYTHON) -m st4r_lite.studies.adapt_curve --checkpoint data/tiny.pt --seeds 600000,600001,600002 --steps 0,10,30 \
		--set cameras=gt --set w_traj=1 --set w_align=0 --set w_depth=0 --set lr=1e-5 --set reanchor=false \
		--json data/adapt_curve_truecam.json
	$(PYTHON) -m st4r_lite.studies.adapt_compare --trackers sim-latch --seeds 600000,600001,600002 --out data/adapt_variants_quick.json
	$(PYTHON) -m st4r_lite.studies.adapt_compare --sensitivity --seeds 600000,600001,600002 --out data/adapt_sensitivity_quick.json
	$(PYTHON) -m st4r_lite.studies.adapt_compare --sensitivity --seeds $(S12) --out data/adapt_sensitivity_12.json
	$(PYTHON) -m st4r_lite.cli $(ABLATION) --steps 30 --lr 0.0001 --no-reanchor --out data/ablation_quick
	$(PYTHON) -m st4r_lite.cli $(ABLATION) --out data/ablation_quick_default

clean:
	rm -rf $(OUT) .pytest_cache build dist *.egg-info
