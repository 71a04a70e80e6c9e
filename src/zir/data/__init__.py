"""zir.data: sources, built-in datasets, transforms and masking, tokenizer, the view plan and collation."""
