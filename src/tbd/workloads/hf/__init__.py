"""`hf:MODEL`: a Hugging Face transformers language model as a workload."""
