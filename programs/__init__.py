"""Ready-made DSPy programs built on lbt_dspy, to import and compose."""
