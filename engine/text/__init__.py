"""Text out: the tokenizer, formatting of words, the response body and its exports."""
