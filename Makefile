# The two set-up commands of the README.
#   make demo   install, then render the example script with the offline defaults to out/coffee.mp4
#   make test   install (with test tools), then run the whole test suite
.PHONY: demo test setup setup-dev

demo: setup
	mkdir -p out
	.venv/bin/python -m studio render examples/coffee.md --preset draft --output out/coffee.mp4

test: setup-dev
	.venv/bin/python -m pytest -n 2 -q

setup:
	scripts/setup.sh

setup-dev:
	scripts/setup.sh --dev
