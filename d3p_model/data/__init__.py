"""Data: Human3.6M loading, the predictions file format, temporal windows, generated data."""
