"""`python -m pipeline.cli`: the same as the `curate` command."""
from pipeline.cli import main

main()
