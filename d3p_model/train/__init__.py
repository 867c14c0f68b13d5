"""Training D3PRefiner from a YAML config: `d3p train CONFIG` or `train_from_config`."""
