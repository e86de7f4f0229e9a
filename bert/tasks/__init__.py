"""Fine-tuning task families: data, features, metrics."""
