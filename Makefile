# The two commands of the README, each doing the whole set-up first (idempotent, seconds when done).
.PHONY: setup train test lint bench

setup:
	@bash scripts/setup.sh

# The main job: GRPO in simulation from the embedded starting policy. ARGS: launch arguments, name:=value.
train: setup
	@test -f models/start_policy/vla_policy.json || echo "$(ARGS)" | grep -q "checkpoint:=" || { \
	  echo "make train: the embedded starting policy (models/start_policy) is missing."; \
	  echo "Make it as the README's 'The starting policy' says, or run: make train ARGS='checkpoint:=/path/to/policy'"; \
	  exit 1; }
	.venv/bin/vla-rl launch train_sim $(ARGS)

# The test suite (what CI runs). PYTEST_ARGS: extra pytest arguments.
test: setup
	.venv/bin/ruff check .
	.venv/bin/python -m pytest $(PYTEST_ARGS)

bench: setup
	.venv/bin/python benchmarks/run_all.py
