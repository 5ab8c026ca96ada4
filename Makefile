# The two set-up commands of the README.
#   make demo   install, then render the example script with the offline defaults to out/coffee.mp4
#   make test   install (with test tools), then run the whole test suite (the notebooks run too)
.PHONY: demo test notebooks setup setup-dev

demo: setup
	mkdir -p out
	.venv/bin/python -m studio render examples/coffee.md --preset draft --output out/coffee.mp4

test: setup-dev
	.venv/bin/python -m pytest -n 2 -q tests --nbmake notebooks

notebooks: setup
	.venv/bin/python -m pip install -q -r requirements-notebooks.txt
	.venv/bin/jupyter lab notebooks

setup:
	scripts/setup.sh

setup-dev:
	scripts/setup.sh --dev
