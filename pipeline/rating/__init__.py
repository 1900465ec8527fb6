"""DataMan-style quality ratings (Peng et al., ICLR 2025): fourteen 1-5 scores and a domain letter per
document from an LLM rater, parsed strictly, distilled into a cheap student, and selection recipes."""
