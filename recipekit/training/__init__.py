"""Train one adapter from a parsed recipe: TRL's SFTTrainer with the model, data and callbacks set up."""
