"""The recipes users copy (``*.yaml``) and the commands that run them:

- ``accelerate launch -m recipes.run RECIPE.yaml [--key value ...]``: train one adapter
- ``python -m recipes.launch ...``: the same under a scheduler (exit statuses, signals)
- ``python -m recipes.evaluate RUN_DIR``: base model against the tuned adapter
- ``python -m recipes.generate RUN_DIR "question"``: answers from the tuned adapter
- ``python -m recipes.merge RUN_DIR --out DIR``: a plain model with the adapter folded in

The machinery behind them lives in ``recipekit``.
"""
