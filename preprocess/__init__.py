"""Turn raw FiQA rows into the instruction JSONL that the recipes train on."""
