"""A recipe from YAML and ``--key value`` overrides to typed configs, checked before anything loads."""
